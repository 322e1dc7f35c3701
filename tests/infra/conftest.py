"""Shared CDK fixtures: the app from the real cdk.json context, synthesized once per session.

The first synth in a process pays ~5 s for CDK's built-in CloudFormation validation engine;
the serving bundle must have been built (``make bundle``), as for ``cdk synth``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import cx_api
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.settings import ENVIRONMENTS_CONTEXT_KEY, EnvSettings, parse_environments
from infra.stage import RtmlStage

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


@pytest.fixture(scope="session")
def context() -> dict[str, Any]:
    """The context of the repository's cdk.json, exactly as `cdk synth` passes it."""
    loaded: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return loaded


@pytest.fixture(scope="session")
def environments(context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The raw per-environment settings from cdk.json."""
    raw: dict[str, dict[str, Any]] = context[ENVIRONMENTS_CONTEXT_KEY]
    return raw


@pytest.fixture(scope="session")
def app(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> cdk.App:
    """The full app (every environment), synthesized once.

    Synth would raise on any cdk-nag finding; here it only writes the report, so a finding fails
    the one nag test with its rule ids and paths while the property tests still run.
    """
    built = build_app(
        {**context, "@aws-cdk/core:failSynthOnValidationErrors": False},
        outdir=str(tmp_path_factory.mktemp("cdk.out")),
    )
    built.synth()
    return built


@pytest.fixture(scope="session")
def assembly(app: cdk.App) -> cx_api.CloudAssembly:
    """The cloud assembly of the module's app (cached by CDK, so no second synth)."""
    return app.synth()


@pytest.fixture(scope="session")
def templates(app: cdk.App) -> dict[str, Template]:
    """Template of each environment's stack, keyed by environment name."""
    return {
        stage.settings.name: Template.from_stack(stage.stack)
        for stage in app.node.children
        if isinstance(stage, RtmlStage)
    }


@pytest.fixture(scope="session")
def settings(context: dict[str, Any]) -> dict[str, EnvSettings]:
    """The parsed settings of every environment (defaults filled in), keyed by name."""
    return parse_environments(context[ENVIRONMENTS_CONTEXT_KEY])
