"""The batch job's Step Functions task handlers on moto, called as the state machine would:
plan, then each map's items, then finalize; the run's model version is fixed at plan."""

from __future__ import annotations

import json
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


def _run_maps(h: Any, s3: Any, planned: dict[str, Any]) -> int:
    """Each Distributed Map as Step Functions runs it: items read from the plan's S3 keys,
    one ``chunk`` invocation per item, in stage order; the rows the customer stage scored."""
    scored = 0
    for stage in ("partition", "terminal", "customer"):
        body = s3.get_object(Bucket=BUCKET, Key=planned["items"][stage])["Body"].read()
        items = json.loads(body)
        assert len(items) == planned["counts"][stage]
        for item in items:
            result = h.chunk({"stage": stage, "item": item}, Context())
            scored += result["rows"] if stage == "customer" else 0
    return scored


def test_handlers_run_a_day_with_the_version_resolved_at_plan(
    handlers: tuple[Any, list[str]], clients: tuple[Any, Any]
) -> None:
    h, versions = handlers
    s3, dynamodb = clients
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=s3)

    # when the state machine's steps run, with a promote between plan and the chunks
    planned = h.plan({"date": DAY.isoformat()}, Context())
    registry.promote("fraud", versions[1], "champion")
    scored = _run_maps(h, s3, planned)
    final = h.finalize({"run_id": planned["run_id"]}, Context())

    # then every prediction is the planned version's, and the totals agree
    assert planned["run_id"] == f"{DAY.isoformat()}-{versions[0]}"
    predictions = _predictions(s3, f"batch/predictions/date={DAY.isoformat()}/")
    assert set(predictions.column("MODEL_VERSION").to_pylist()) == {versions[0]}
    assert final["rows"] == scored == predictions.num_rows > 0
    assert dynamodb.scan(TableName=SCORES)["Count"] > 0
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"batch/runs/{planned['run_id']}/manifest.json")[
            "Body"
        ].read()
    )
    timings = manifest["timings_seconds"]
    assert timings["customer"]["rows"] == scored
    assert timings["partition"]["tasks"] == planned["counts"]["partition"]


def test_plan_refuses_a_bad_date_naming_it(handlers: tuple[Any, list[str]]) -> None:
    h, _ = handlers
    with pytest.raises(ValueError, match="date: expected YYYY-MM-DD"):
        h.plan({"date": "10/08/2018"}, Context())
    with pytest.raises(ValueError, match="date: missing"):
        h.plan({}, Context())


def test_a_scheduled_run_scores_the_last_complete_utc_day(
    handlers: tuple[Any, list[str]],
) -> None:
    h, _ = handlers
    # 02:30 in Tokyo on the 17th is 17:30 UTC on the 16th: the 16th has not ended, the 15th has
    event = {"scheduled_time": "2018-05-16T17:30:00Z", "timezone": "Asia/Tokyo"}
    assert h.plan(event, Context())["day"] == DAY.isoformat()
    event = {"scheduled_time": "2018-05-16T02:30:00Z", "timezone": "UTC"}
    assert h.plan(event, Context())["day"] == DAY.isoformat()
    # and the state machine's shape of the event (input and execution) is understood
    wrapped = {"input": {"date": DAY.isoformat()}, "execution_arn": None}
    assert h.plan(wrapped, Context())["day"] == DAY.isoformat()


def test_a_backfill_writes_no_latest_scores(
    handlers: tuple[Any, list[str]], clients: tuple[Any, Any]
) -> None:
    h, _ = handlers
    s3, dynamodb = clients
    planned = h.plan({"date": DAY.isoformat(), "backfill": True}, Context())
    assert _run_maps(h, s3, planned) > 0
    assert dynamodb.scan(TableName=SCORES)["Count"] == 0
