"""The CDK app entry point (``python -m infra.app``, run by ``cdk synth`` through cdk.json).

One ``RtmlStage`` per selected environment (``-c env=dev`` picks one, nothing picks all), and
cdk-nag's AwsSolutions rules run over every stack as a policy-validation plugin at synth.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.settings import load_environments
from infra.stage import RtmlStage

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"
"""The app's cdk.json: the CLI reads it, and so does a bare ``python -m infra.app``."""

VALIDATION_REPORT = "validation-report.json"
"""Where CDK writes every validation plugin's findings, in the cloud assembly directory."""


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> cdk.App:
    """Build the app, not yet synthesized; ``context`` is its default (the CLI's context wins)."""
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    for settings in load_environments(app).values():
        RtmlStage(app, settings=settings)
    # cdk-nag 3.x is a validation plugin, not an Aspect: registered on the app, it checks the
    # stacks of every nested stage, and any finding fails the synth.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` block of cdk.json."""
    context: dict[str, Any] = json.loads(path.read_text())["context"]
    return context


def failed_validations(assembly_dir: str | Path) -> list[str]:
    """One line per finding of each failed validation plugin (cdk-nag included) in a synth report.

    The CDK CLI shows and enforces this report only for the stacks it selected, and a bare
    ``cdk synth`` selects no stack nested in a stage, so the app checks the report itself.
    """
    path = Path(assembly_dir) / VALIDATION_REPORT
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    return [
        f"{plugin['pluginName']}: {violation['severity'].upper()} {violation['ruleName']} "
        f"at {construct['constructPath']}: {violation['description']}"
        for plugin in report["pluginReports"]
        if plugin["conclusion"] == "failure"
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"] or [{"constructPath": "?"}]
    ]


def main() -> None:
    """Synthesize into the directory the CDK CLI asks for (a temporary one when run bare).

    cdk.json's context is passed as the app's defaults so a bare run sees the same settings;
    under the CLI the context it passes (cdk.json plus ``-c``) takes precedence. Any failed
    validation exits non-zero, whichever stacks the CLI was asked to show.
    """
    assembly = build_app(cdk_json_context()).synth()
    failures = failed_validations(assembly.directory)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        report = Path(assembly.directory) / VALIDATION_REPORT
        raise SystemExit(f"synth failed validation: {len(failures)} finding(s), see {report}")


if __name__ == "__main__":
    main()
