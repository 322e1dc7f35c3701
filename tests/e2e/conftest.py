"""The local stack, deployed once for every e2e test module (deploying takes ~20 s)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from infra.local.stack import LocalStack
from models.contracts import DEFAULT_MODEL_NAME
from models.registry import open_registry
from tests.unit.test_scorer import save


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("rtml-local")
    local = LocalStack(
        root=root, port=_free_port(), api_port=_free_port(), progress=lambda message: None
    )
    try:
        local.up()
        artifact = tmp_path_factory.mktemp("model")
        save(artifact, "logistic_regression", seed=1, name=DEFAULT_MODEL_NAME)
        registry = open_registry(local.info["registry"], s3_client=local.client("s3"))
        registry.promote(DEFAULT_MODEL_NAME, registry.push(artifact).version, "champion")
        yield local
    finally:
        local.down()
