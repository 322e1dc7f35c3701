"""The Lambda bundles: reproducible, within their budgets, self-sufficient, and (serving)
light.

A bundle for this machine's architecture is built here (pip, from the wheel cache or the
index): the arm64 one cannot be imported on x86_64, and the contents are the same.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.bundle import (
    BATCH_FORBIDDEN,
    FORBIDDEN,
    LAMBDA_UNZIPPED_LIMIT,
    Architecture,
    Bundle,
    BundleError,
    _check_contents,
    build,
    bundle_path,
    describe,
)
from infra.settings import EnvSettings
from models import contracts as c

pytestmark = pytest.mark.infra

HOST: Architecture = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build(HOST, build_dir=tmp_path_factory.mktemp("bundle-a"))


def test_bundle_is_reproducible(host_bundle: Bundle, tmp_path: Path) -> None:
    # when the same inputs are built again elsewhere
    again = build(HOST, build_dir=tmp_path)

    # then the bytes are the same, so CDK's asset hash (and the deployed code) does not change
    assert again.sha256 == host_bundle.sha256
    assert again.files == host_bundle.files


def test_bundle_entries_have_fixed_times_and_modes(host_bundle: Bundle) -> None:
    with zipfile.ZipFile(host_bundle.path) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o644}
    # compiled for the runtime, so cold starts never compile (the code dir is read-only)
    assert "lambdas/__pycache__/stream.cpython-312.pyc" in names
    assert "models/__pycache__/contracts.cpython-312.pyc" in names
    assert not any(name.startswith("bin/") for name in names)


def test_bundle_builder_refuses_heavy_libraries(tmp_path: Path) -> None:
    # given a site directory into which numpy slipped (e.g. a new dependency pulled it)
    (tmp_path / "numpy").mkdir()

    # when / then
    with pytest.raises(BundleError, match="numpy"):
        _check_contents(tmp_path, "serving")


def test_built_bundles_are_within_their_budget(settings: dict[str, EnvSettings]) -> None:
    for name, env in settings.items():
        # given the bundle `make bundle` built for the environment's architecture
        path = bundle_path(env.functions.architecture)
        assert path.is_file(), f"{path} missing: run `make bundle`"
        bundle = describe(path, env.functions.architecture)
        # then it fits the budget in settings (and Lambda's 250 MB limit, which settings cap)
        budget = env.functions.bundle_budget_mb * 1_000_000
        assert bundle.unzipped_bytes <= budget, (
            f"{name}: serving bundle {bundle.unzipped_bytes / 1e6:.1f} MB unzipped"
            f" > budget {env.functions.bundle_budget_mb} MB"
        )
        with zipfile.ZipFile(path) as archive:
            top = {n.split("/")[0] for n in archive.namelist()}
        assert not top & set(FORBIDDEN)
        # and the batch bundle (numpy, pyarrow) fits its budget and Lambda's 250 MB
        batch_path = bundle_path(env.functions.architecture, kind="batch")
        assert batch_path.is_file(), f"{batch_path} missing: run `make bundle`"
        batch = describe(batch_path, env.functions.architecture, "batch")
        assert batch.unzipped_bytes <= min(
            env.batch.bundle_budget_mb * 1_000_000, LAMBDA_UNZIPPED_LIMIT
        ), f"{name}: batch bundle {batch.unzipped_bytes / 1e6:.1f} MB unzipped"
        with zipfile.ZipFile(batch_path) as archive:
            top = {n.split("/")[0] for n in archive.namelist()}
        assert {"numpy", "pyarrow"} <= top
        assert not top & set(BATCH_FORBIDDEN)


def test_serving_handlers_start_from_the_bundle_alone(host_bundle: Bundle, tmp_path: Path) -> None:
    """Unzipped as Lambda does, with no site-packages: the stream and API handlers import,
    build their clients and engines, and load nothing heavy and nothing from outside."""
    # given the bundle extracted into a directory of its own
    task = tmp_path / "task"
    with zipfile.ZipFile(host_bundle.path) as archive:
        archive.extractall(task)
    env = {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        c.ENV_FEATURE_STATE_TABLE: "state",
        c.ENV_PREDICTIONS_TABLE: "predictions",
        c.ENV_REGISTRY: "s3://registry-bucket/registry",
        c.ENV_ALERT_BUS: "alerts",
        c.ENV_ARCHIVE_BUCKET: "data-bucket",
        c.ENV_DEAD_LETTER_QUEUE_URL: "https://sqs.eu-west-1.amazonaws.com/1/dlq",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    code = f"""
import json, sys
sys.path.insert(0, {str(task)!r})
import lambdas.stream as handler
import lambdas.api as api
handler.scoring()
api.service()
heavy = [m for m in {FORBIDDEN!r} if m in sys.modules]
outside = sorted(
    name for name, module in sys.modules.items()
    if getattr(module, "__file__", None)
    and name.split(".")[0] in ("models", "lambdas", "pydantic", "boto3", "botocore",
                               "aws_lambda_powertools")
    and not module.__file__.startswith({str(task)!r})
)
print(json.dumps({{"heavy": heavy, "outside": outside, "cached": handler.__cached__}}))
"""
    # when it starts in an interpreter without site-packages (-S) or user paths (-s, -E)
    result = subprocess.run(
        [sys.executable, "-S", "-s", "-E", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )

    # then
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["outside"] == []
    assert Path(report["cached"]).is_file()


def test_batch_handlers_start_from_the_batch_bundle_alone(tmp_path: Path) -> None:
    """The pruned batch bundle (no Flight, no pyarrow filesystems, no tests) still reads and
    writes Parquet, parses the archive's JSON, knows time zones without the system's zone
    files (tzdata), and imports every batch task and the monitor, with no site-packages."""
    bundle = build(HOST, build_dir=tmp_path / "build", kind="batch")
    task = tmp_path / "task"
    with zipfile.ZipFile(bundle.path) as archive:
        archive.extractall(task)
    code = f"""
import io, json, sys
sys.path.insert(0, {str(task)!r})
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
import batch.handlers, batch.job, batch.chunks, batch.executions, models.monitoring
import batch.monitor_handler, zoneinfo
from models.monitor import parse_archive
from batch.schedule import run_day
zoneinfo.reset_tzpath(to=[])  # no system zone files: the bundle's tzdata must answer
tokyo = str(run_day({{"scheduled_time": "2018-05-16T17:30:00Z"}}, zone="Asia/Tokyo"))
line = {{"transaction_id": 1, "tx_datetime": "2018-05-16T10:00:00", "customer_id": 2,
        "score": 0.5, "model_version": "v", "features": {{"A": 1.0}}}}
parsed = len(parse_archive([json.dumps(line)], ["A"]))
buffer = io.BytesIO()
pq.write_table(pa.table({{"a": np.arange(10)}}), buffer, compression="zstd")
rows = pq.read_table(io.BytesIO(buffer.getvalue())).num_rows
outside = sorted(
    name for name, module in sys.modules.items()
    if getattr(module, "__file__", None) and name.split(".")[0] in ("numpy", "pyarrow", "batch")
    and not module.__file__.startswith({str(task)!r})
)
heavy = [m for m in {BATCH_FORBIDDEN!r} if m in sys.modules]
print(json.dumps({{"rows": rows, "outside": outside, "heavy": heavy, "tokyo": tokyo,
                  "parsed": parsed}}), flush=True)
# pyarrow 26's threaded Parquet reader aborts the interpreter at exit about 1 run in 7
# ("terminate called without an active exception"; the venv's own pyarrow too, never with
# use_threads=False): a shutdown bug, not the bundle's; a Lambda never exits this way
import os; os._exit(0)
"""
    env = {"AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_TRACE_DISABLED": "true"}
    result = subprocess.run([sys.executable, "-S", "-s", "-E", "-c", code], capture_output=True,
                            text=True, env=env, check=False, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"rows": 10, "outside": [], "heavy": [], "tokyo": "2018-05-16", "parsed": 1}
    assert bundle.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT
