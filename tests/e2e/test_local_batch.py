"""The batch job end to end on the local stack: the synthesized state machine, executed by
moto with the deployed task functions, scheduled by `rtml local tick`, failing and rerunning
as a user would see it (notifications on the alarm topic, quarantine, idempotent reruns)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.executions import RunFailedError, follow, start_run
from batch.job import JobConfig
from infra.local.runtime import Invocation
from infra.local.stack import LocalStack
from models import datasets
from models.artifact import load_artifact
from models.contracts import DEFAULT_MODEL_NAME, TRANSACTIONS_COLUMNS, TRANSACTIONS_PREFIX
from models.features.offline import compute_features
from models.registry import open_registry
from models.s3_datasets import part_key, write_part

pytestmark = pytest.mark.e2e
DAY = date(2018, 5, 15)


@pytest.fixture(scope="module")
def simulated(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """A small simulated history in the data bucket's transactions/ (one part per day)."""
    from rtml import cli

    out: Path = tmp_path_factory.mktemp("sim")
    args = ["simulate", "--customers", "60", "--terminals", "120", "--days", "50",
            "--radius", "20", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    table = datasets.read_dataset(out, TRANSACTIONS_COLUMNS)
    s3 = stack.client("s3")
    days = table.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    for day in np.unique(days):
        part = table.filter(pa.array(days == day))
        key = part_key(TRANSACTIONS_PREFIX, day.astype(object), 0)
        write_part(s3, stack.info["data_bucket"], key, part)
    return table


@pytest.fixture(scope="module")
def alarm_queue(stack: LocalStack) -> str:
    """An SQS queue subscribed to the alarm topic: what an operator's inbox would get."""
    sqs = stack.client("sqs")
    url: str = sqs.create_queue(QueueName="batch-notifications")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    stack.client("sns").subscribe(
        TopicArn=stack.info["alarm_topic"], Protocol="sqs", Endpoint=arn["QueueArn"]
    )
    return url


def _config(stack: LocalStack) -> JobConfig:
    return JobConfig(bucket=stack.info["data_bucket"], prefix=stack.info["batch_prefix"])


def _run(stack: LocalStack, day: date, **kwargs: Any) -> dict[str, Any]:
    states, s3 = stack.client("stepfunctions"), stack.client("s3")
    arn = start_run(states, stack.info["batch_state_machine"], day, **kwargs)
    return follow(states, s3, _config(stack), arn, interval=0.2, timeout=600)


def _notifications(stack: LocalStack, queue: str) -> list[str]:
    sqs = stack.client("sqs")
    found = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            found.append(json.loads(message["Body"])["Message"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return found


@contextmanager
def _failing(
    stack: LocalStack, matches: Callable[[dict[str, Any]], bool], times: int
) -> Iterator[list[dict[str, Any]]]:
    """The chunk function's invocations whose event ``matches`` fail (their execution
    environment errors, as a crash or out-of-memory would) the first ``times`` times."""
    assert stack.lambdas is not None
    original = stack.lambdas.invoke
    failed: list[dict[str, Any]] = []

    def invoke(name: str, event: Any) -> Invocation:
        if "BatchChunk" in name and matches(event) and len(failed) < times:
            failed.append(event)
            return Invocation(error={"errorType": "Runtime.ExitError",
                                     "errorMessage": "injected: the environment died"})  # fmt: skip
        return original(name, event)

    stack.lambdas.invoke = invoke  # type: ignore[method-assign]
    try:
        yield failed
    finally:
        stack.lambdas.invoke = original  # type: ignore[method-assign]


def _is_customer_chunk(event: dict[str, Any]) -> bool:
    return event.get("stage") == "customer"


def _parts(stack: LocalStack, prefix: str) -> list[str]:
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.info["data_bucket"], Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _read(stack: LocalStack, keys: list[str]) -> pa.Table:
    s3 = stack.client("s3")
    bucket = stack.info["data_bucket"]
    return pa.concat_tables(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys
    )


def _s3_body(stack: LocalStack, key: str) -> bytes:
    body: bytes = (
        stack.client("s3").get_object(Bucket=stack.info["data_bucket"], Key=key)["Body"].read()
    )
    return body


def _champion(stack: LocalStack, tmp_path: Path) -> Any:
    registry = open_registry(stack.info["registry"], s3_client=stack.client("s3"))
    version = registry.resolve(DEFAULT_MODEL_NAME, "champion")
    return load_artifact(registry.fetch(DEFAULT_MODEL_NAME, version, tmp_path))


def test_a_day_through_the_deployed_state_machine_equals_the_offline_table(
    stack: LocalStack, simulated: pa.Table, tmp_path: Path
) -> None:
    # when the deployed state machine runs the day
    manifest = _run(stack, DAY)

    # then every transaction of the day has the champion's score of its offline features
    model = _champion(stack, tmp_path)
    assert manifest["model"]["version"] == model.version
    prefix = f"batch/predictions/date={DAY.isoformat()}/run={manifest['run_id']}/"
    predictions = _read(stack, _parts(stack, prefix))
    offline = compute_features(simulated)
    days = simulated.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    rows = np.flatnonzero(days == np.datetime64(DAY.isoformat()))
    names = model.manifest.feature_names
    ids = simulated.column("TRANSACTION_ID").to_numpy()[rows].tolist()
    expected = dict(zip(ids, model.score_batch([[float(offline[n][r]) for n in names]
                                                for r in rows]), strict=True))  # fmt: skip
    got = dict(zip(predictions.column("TRANSACTION_ID").to_pylist(),
                   predictions.column("SCORE").to_pylist(), strict=True))  # fmt: skip
    assert sorted(got) == sorted(expected) and len(got) > 50
    assert max(abs(got[t] - expected[t]) for t in got) <= 1e-6
    # and the manifest has counts, timings per stage, and the drift report beside it
    assert manifest["outputs"]["rows"] == len(got)
    assert set(manifest["timings_seconds"]) >= {"partition", "terminal", "customer"}
    drift_key = f"batch/runs/{manifest['run_id']}/drift.json"
    drift = json.loads(_s3_body(stack, drift_key))
    assert set(drift["features"]) == set(names)
    # and the latest score of each customer that day is in DynamoDB
    latest = stack.client("dynamodb").scan(TableName=stack.info["latest_scores_table"])["Items"]
    assert set(predictions.column("CUSTOMER_ID").to_pylist()) <= {
        int(i["customer_id"]["N"]) for i in latest
    }

    # and `rtml batch status RUN` prints that manifest
    from rtml import cli

    assert cli.main(["batch", "status", manifest["run_id"], "--root", str(stack.root)]) == 0
    assert cli.main(["batch", "status", "2000-01-01-nope", "--root", str(stack.root)]) == 1

    # when it runs again, then the same keys hold the same rows (a rerun overwrites)
    keys = _parts(stack, prefix)
    again = _run(stack, DAY)
    assert again["run_id"] == manifest["run_id"]
    assert _parts(stack, prefix) == keys
    assert _read(stack, keys).num_rows == len(got)


def test_a_chunk_failing_once_is_retried_and_the_run_succeeds(
    stack: LocalStack, simulated: pa.Table, alarm_queue: str
) -> None:
    _notifications(stack, alarm_queue)
    with _failing(stack, _is_customer_chunk, times=1) as failed:
        manifest = _run(stack, DAY)
    assert len(failed) == 1
    assert manifest["outputs"]["rows"] > 0
    assert _notifications(stack, alarm_queue) == []


def test_a_chunk_always_failing_fails_the_run_naming_it_and_a_rerun_completes_it(
    stack: LocalStack, simulated: pa.Table, alarm_queue: str
) -> None:
    day = date(2018, 5, 16)
    _notifications(stack, alarm_queue)
    with (
        _failing(stack, _is_customer_chunk, times=1_000) as failed,
        pytest.raises(RunFailedError, match="ExceedToleratedFailureThreshold"),
    ):
        _run(stack, day)
    assert len(failed) >= 2  # first try and retries
    notes = _notifications(stack, alarm_queue)
    chunk_notes = [n for n in notes if "customer chunk" in n]
    assert len(chunk_notes) == 1 and '"bucket":0' in chunk_notes[0]
    assert "Runtime.ExitError" in chunk_notes[0] and "injected" in chunk_notes[0]
    assert any("rtml batch run failed" in n for n in notes)

    manifest = _run(stack, day)
    prefix = f"batch/predictions/date={day.isoformat()}/run={manifest['run_id']}/"
    keys = _parts(stack, prefix)
    assert len(keys) == manifest["buckets"]["customer"]
    assert _read(stack, keys).num_rows == manifest["outputs"]["rows"] > 0


def test_a_malformed_source_file_fails_the_run_naming_it_and_is_quarantined(
    stack: LocalStack, simulated: pa.Table, alarm_queue: str
) -> None:
    day = date(2018, 5, 17)
    s3, bucket = stack.client("s3"), stack.info["data_bucket"]
    bad = f"{TRANSACTIONS_PREFIX}/date={day.isoformat()}/part-00001.parquet"
    s3.put_object(Bucket=bucket, Key=bad, Body=b"this is not parquet")
    _notifications(stack, alarm_queue)

    with pytest.raises(RunFailedError):
        _run(stack, day)
    notes = [n for n in _notifications(stack, alarm_queue) if "partition chunk" in n]
    assert notes and all(bad in n and "MalformedPartError" in n for n in notes)
    assert _parts(stack, bad) == []
    assert _parts(stack, f"batch/quarantine/{bad}") == [
        f"batch/quarantine/{bad}",
        f"batch/quarantine/{bad}.reason.json",
    ]

    manifest = _run(stack, day)
    assert bad in manifest["inputs"]["quarantined"]
    assert manifest["outputs"]["rows"] > 0


def test_a_day_without_data_is_an_empty_valid_run(stack: LocalStack, simulated: pa.Table) -> None:
    manifest = _run(stack, date(2019, 3, 1))
    assert manifest["outputs"]["rows"] == 0
    assert manifest["inputs"]["source_days"] == 0


def test_the_schedule_fired_by_tick_scores_the_day_before(
    stack: LocalStack, simulated: pa.Table
) -> None:
    from infra.local.schedules import tick

    states = stack.client("stepfunctions")
    fired = tick(
        stack.client("scheduler"),
        datetime(2018, 5, 19, 2, 30, tzinfo=UTC),
        invoke=lambda name, payload: None,
        start_execution=lambda arn, name, payload: states.start_execution(
            stateMachineArn=arn, name=name, input=payload
        )["executionArn"],
    )
    started = [f for f in fired if f["target"] == stack.info["batch_state_machine"]]
    assert len(started) == 1
    manifest = follow(states, stack.client("s3"), _config(stack), started[0]["result"],
                      interval=0.2, timeout=600)  # fmt: skip
    assert manifest["day"] == "2018-05-18"


def test_a_backfill_writes_a_feature_table_that_training_reads(
    stack: LocalStack, simulated: pa.Table, tmp_path: Path
) -> None:
    from rtml import cli

    root = stack.root
    out = tmp_path / "features"
    code = cli.main(["batch", "backfill", "--from", "2018-05-10", "--to", "2018-05-11",
                     "--out", str(out), "--root", str(root), "--json"])  # fmt: skip
    assert code == 0
    from models.training import load_features

    frame = load_features(out)
    days = simulated.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    wanted = (days >= np.datetime64("2018-05-10")) & (days <= np.datetime64("2018-05-11"))
    assert len(frame) == int(wanted.sum()) > 0


def test_two_executions_of_one_day_cannot_run_at_once(
    stack: LocalStack, simulated: pa.Table
) -> None:
    states, s3 = stack.client("stepfunctions"), stack.client("s3")
    machine, day = stack.info["batch_state_machine"], date(2018, 5, 12)
    first = start_run(states, machine, day)
    second = start_run(states, machine, day)
    outcomes = []
    for arn in (first, second):
        try:
            follow(states, s3, _config(stack), arn, interval=0.2, timeout=600)
            outcomes.append("SUCCEEDED")
        except RunFailedError as error:
            outcomes.append(str(error))
    # one of them ran the day; the other was refused at plan, naming the holder
    assert outcomes.count("SUCCEEDED") == 1
    (refused,) = [o for o in outcomes if o != "SUCCEEDED"]
    assert "RunInProgressError" in refused and "is being run by" in refused
