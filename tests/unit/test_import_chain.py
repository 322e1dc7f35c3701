"""The serving functions import nothing heavy: a Lambda zip has no room for it (250 MB),
and every import is cold-start time."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "sklearn", "xgboost", "pyarrow", "pandas", "matplotlib")


@pytest.mark.parametrize("module", ["lambdas.stream", "lambdas.api"])
def test_serving_handler_import_chain_is_light(module: str) -> None:
    # given a fresh interpreter (nothing imported by other tests)
    code = (
        f"import sys\nimport {module}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {"AWS_DEFAULT_REGION": "eu-west-1", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    # then none of the heavy libraries was imported
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"
