"""The batch job's Step Functions task handlers on moto, called as the state machine would:
plan, then each map's items, then finalize; the run's model version is fixed at plan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import contracts as c
from models.registry import open_registry
from tests.functional.test_batch_job import BUCKET, DAY, SCORES, _predictions, clients, simulated
from tests.functional.test_stream_handler import Context
from tests.unit.test_scorer import save

pytestmark = pytest.mark.functional
__all__ = ["clients", "simulated"]  # fixtures shared with test_batch_job


@pytest.fixture
def handlers(
    clients: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, list[str]]]:
    s3, _ = clients
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=s3)
    versions = []
    for seed in (4, 5):
        path = tmp_path / f"m{seed}"
        save(path, "logistic_regression", seed=seed, name="fraud")
        versions.append(registry.push(path).version)
    registry.promote("fraud", versions[0], "champion")
    env = {
        c.ENV_DATA_BUCKET: BUCKET, c.ENV_REGISTRY: f"s3://{BUCKET}/registry",
        c.ENV_MODEL_NAME: "fraud", c.ENV_SCORES_TABLE: SCORES,
        c.ENV_MAX_BYTES_PER_CHUNK: "40000", "POWERTOOLS_METRICS_NAMESPACE": "rtml-test",
        "TMPDIR": str(tmp_path),
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from batch import handlers as h

    h._settings.cache_clear()
    h._clients.cache_clear()
    h._model.cache_clear()
    yield h, versions
    h._settings.cache_clear()
    h._clients.cache_clear()
    h._model.cache_clear()


def test_handlers_run_a_day_with_the_version_resolved_at_plan(
    handlers: tuple[Any, list[str]], clients: tuple[Any, Any]
) -> None:
    h, versions = handlers
    s3, dynamodb = clients
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=s3)

    # when the state machine's steps run, with a promote between plan and the chunks
    planned = h.plan({"date": DAY.isoformat()}, Context())
    registry.promote("fraud", versions[1], "champion")
    for item in planned["partition_items"]:
        assert h.partition(item, Context())["rows"] > 0
    for item in planned["terminal_items"]:
        h.terminal_chunk(item, Context())
    scored = sum(h.customer_chunk(item, Context())["rows"] for item in planned["customer_items"])
    final = h.finalize({"run_id": planned["run_id"]}, Context())

    # then every prediction is the planned version's, and the totals agree
    assert planned["run_id"] == f"{DAY.isoformat()}-{versions[0]}"
    predictions = _predictions(s3, f"batch/predictions/date={DAY.isoformat()}/")
    assert set(predictions.column("MODEL_VERSION").to_pylist()) == {versions[0]}
    assert final["rows"] == scored == predictions.num_rows > 0
    assert dynamodb.scan(TableName=SCORES)["Count"] > 0


def test_plan_refuses_a_bad_date_naming_it(handlers: tuple[Any, list[str]]) -> None:
    h, _ = handlers
    with pytest.raises(ValueError, match="date: expected YYYY-MM-DD"):
        h.plan({"date": "10/08/2018"}, Context())


def test_a_backfill_writes_no_latest_scores(
    handlers: tuple[Any, list[str]], clients: tuple[Any, Any]
) -> None:
    h, _ = handlers
    _, dynamodb = clients
    planned = h.plan({"date": DAY.isoformat(), "backfill": True}, Context())
    for item in planned["partition_items"]:
        h.partition(item, Context())
    for item in planned["terminal_items"]:
        h.terminal_chunk(item, Context())
    for item in planned["customer_items"]:
        h.customer_chunk({**item, "backfill": True}, Context())
    assert dynamodb.scan(TableName=SCORES)["Count"] == 0
