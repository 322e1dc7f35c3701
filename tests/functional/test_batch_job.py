"""The batch job's steps on moto S3/DynamoDB: a day's predictions equal the same model scoring
the offline feature table, reruns are idempotent, empty days are valid runs."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pytest

from batch.job import JobConfig, load_plan, run_locally
from models import datasets
from models.artifact import LoadedModel
from models.contracts import TRANSACTIONS_COLUMNS, TRANSACTIONS_PREFIX
from models.features.offline import compute_features
from models.s3_datasets import part_key, write_part
from tests.functional.conftest import REGION
from tests.unit.test_scorer import save

pytestmark = pytest.mark.functional
BUCKET, SCORES = "data", "latest-scores"
DAY = date(2018, 5, 15)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    from rtml import cli

    out: Path = tmp_path_factory.mktemp("sim")
    args = ["simulate", "--customers", "60", "--terminals", "120", "--days", "50",
            "--radius", "20", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    return datasets.read_dataset(out, TRANSACTIONS_COLUMNS)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    _, _, _, loaded = save(tmp_path_factory.mktemp("model"), "logistic_regression", seed=3)
    return loaded


@pytest.fixture
def clients(aws: None, simulated: pa.Table) -> tuple[Any, Any]:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
    )
    days = simulated.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    for day in np.unique(days):
        part = simulated.filter(pa.array(days == day))
        write_part(s3, BUCKET, part_key(TRANSACTIONS_PREFIX, day.astype(object), 0), part)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=SCORES, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "customer_id", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "customer_id", "KeyType": "HASH"}],
    )  # fmt: skip
    return s3, dynamodb


def _predictions(s3: Any, prefix: str) -> pa.Table:
    import io

    import pyarrow.parquet as pq

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return pa.concat_tables(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())) for k in keys
    )


def test_batch_day_equals_the_model_on_the_offline_table_and_reruns_idempotently(
    clients: tuple[Any, Any], simulated: pa.Table, model: LoadedModel
) -> None:
    s3, dynamodb = clients
    # small chunks: several buckets per stage
    config = JobConfig(bucket=BUCKET, max_bytes_per_chunk=40_000, scores_table=SCORES)

    # when the day runs through every step
    result = run_locally(s3, config, DAY, model, dynamodb=dynamodb)

    # then the predictions are the model's scores of the offline feature rows of that day
    run = load_plan(s3, config, result.manifest["run_id"])
    assert run.customer_buckets > 1 and run.terminal_buckets > 1
    prefix = f"batch/predictions/date={DAY.isoformat()}/run={run.run_id}/"
    predictions = _predictions(s3, prefix)
    offline = compute_features(simulated)
    days = simulated.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    rows = np.flatnonzero(days == np.datetime64(DAY.isoformat()))
    names = model.manifest.feature_names
    vectors = [[float(offline[n][r]) for n in names] for r in rows]
    ids = simulated.column("TRANSACTION_ID").to_numpy()[rows].tolist()
    expected = dict(zip(ids, model.score_batch(vectors), strict=True))
    got = dict(zip(predictions.column("TRANSACTION_ID").to_pylist(),
                   predictions.column("SCORE").to_pylist(), strict=True))  # fmt: skip
    assert sorted(got) == sorted(expected) and len(got) > 50
    assert max(abs(got[t] - expected[t]) for t in got) <= 1e-9
    # and the manifest, the drift report and the latest score per customer are written
    assert result.manifest["outputs"]["rows"] == len(got)
    assert set(result.drift["features"]) == set(model.manifest.feature_names)
    scores = dynamodb.scan(TableName=SCORES)["Items"]
    assert {int(i["customer_id"]["N"]) for i in scores} == set(
        predictions.column("CUSTOMER_ID").to_pylist()
    )

    # when the same day runs again, then the same keys hold the same rows (no duplicates)
    keys_before = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    )
    run_locally(s3, config, DAY, model, dynamodb=dynamodb)
    keys_after = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    )
    assert keys_after == keys_before
    assert _predictions(s3, prefix).num_rows == len(got)


def test_a_day_without_data_is_an_empty_valid_run(
    clients: tuple[Any, Any], model: LoadedModel
) -> None:
    s3, _ = clients
    result = run_locally(s3, JobConfig(bucket=BUCKET), date(2019, 1, 1), model)
    assert result.manifest["outputs"]["rows"] == 0
    assert result.drift == {}
    assert datetime.fromisoformat(result.manifest["finished_at"])


def test_a_throttled_latest_scores_write_retries_only_the_unprocessed_items(
    clients: tuple[Any, Any], model: LoadedModel
) -> None:
    from batch.job import Plan, _write_latest

    _, dynamodb = clients
    calls: list[list[int]] = []

    class Throttling:
        """DynamoDB that leaves the second half of the first batch unprocessed."""

        def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
            requests = kwargs["RequestItems"][SCORES]
            calls.append([int(r["PutRequest"]["Item"]["customer_id"]["N"]) for r in requests])
            if len(calls) == 1:
                half = len(requests) // 2
                dynamodb.batch_write_item(RequestItems={SCORES: requests[:half]})
                return {"UnprocessedItems": {SCORES: requests[half:]}}
            response: dict[str, Any] = dynamodb.batch_write_item(**kwargs)
            return response

        def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
            got: dict[str, Any] = dynamodb.batch_get_item(**kwargs)
            return got

    stamps = [datetime(2018, 5, 15, 10, k) for k in range(30)]
    table = pa.table({
        "TRANSACTION_ID": list(range(30)), "CUSTOMER_ID": list(range(30)),
        "TX_DATETIME": stamps, "SCORE": [k / 30 for k in range(30)],
    })  # fmt: skip
    run = Plan(run_id="r", day=DAY, model_name="m", model_version="v", customer_buckets=1,
               terminal_buckets=1, history_bytes=0, partition_items=[], terminal_items=[],
               customer_items=[])  # fmt: skip
    _write_latest(Throttling(), SCORES, table, run)

    # then the first 25 went in one call, its unprocessed half was retried alone, then the rest
    assert calls[0] == list(range(25))
    assert calls[1] == list(range(12, 25))
    assert calls[2] == list(range(25, 30))
    assert dynamodb.scan(TableName=SCORES)["Count"] == 30


def test_latest_scores_never_move_back_to_an_older_days_score(
    clients: tuple[Any, Any], model: LoadedModel
) -> None:
    from batch.job import Plan, _write_latest

    _, dynamodb = clients

    def run(day: date) -> Plan:
        return Plan(run_id=str(day), day=day, model_name="m", model_version="v",
                    customer_buckets=1, terminal_buckets=1, history_bytes=0,
                    partition_items=[], terminal_items=[], customer_items=[])  # fmt: skip

    def scores(at: datetime, customers: list[int], score: float) -> pa.Table:
        return pa.table({"TRANSACTION_ID": customers, "CUSTOMER_ID": customers,
                         "TX_DATETIME": [at] * len(customers),
                         "SCORE": [score] * len(customers)})  # fmt: skip

    # given the scores of the 15th for customers 1..3
    assert _write_latest(dynamodb, SCORES, scores(datetime(2018, 5, 15, 9), [1, 2, 3], 0.9),
                         run(DAY)) == 3  # fmt: skip
    # when an older day (the 10th) runs later, for customers 2..5
    written = _write_latest(dynamodb, SCORES, scores(datetime(2018, 5, 10, 9), [2, 3, 4, 5], 0.1),
                            run(date(2018, 5, 10)))  # fmt: skip
    # then only the customers without a newer score take the older one
    assert written == 2
    items = dynamodb.scan(TableName=SCORES)["Items"]
    by_customer = {int(i["customer_id"]["N"]): float(i["score"]["N"]) for i in items}
    assert by_customer == {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.1, 5: 0.1}


def test_a_rerun_with_other_bucket_counts_replaces_the_earlier_output(
    clients: tuple[Any, Any], model: LoadedModel
) -> None:
    s3, _ = clients
    small = JobConfig(bucket=BUCKET, max_bytes_per_chunk=40_000)
    first = run_locally(s3, small, DAY, model)
    assert first.manifest["buckets"]["customer"] > 1
    # when the same run id runs again with another chunk rule (or after late data)
    again = run_locally(s3, JobConfig(bucket=BUCKET), DAY, model)
    # then only the new run's parts remain, and nothing is counted twice
    assert again.manifest["buckets"]["customer"] == 1
    prefix = f"batch/predictions/date={DAY.isoformat()}/run={again.manifest['run_id']}/"
    assert _predictions(s3, prefix).num_rows == first.manifest["outputs"]["rows"]
    assert again.manifest["outputs"]["rows"] == first.manifest["outputs"]["rows"]
    assert again.manifest["missing_buckets"] == []
    assert again.manifest["timings_seconds"]["customer"]["tasks"] == 1


def test_a_run_id_held_by_a_running_execution_is_refused(
    clients: tuple[Any, Any], model: LoadedModel
) -> None:
    from batch.job import RunInProgressError, plan

    s3, _ = clients
    config = JobConfig(bucket=BUCKET)
    kwargs: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    plan(s3, config, DAY, execution_arn="arn:first", **kwargs)
    # a second execution while the first runs: refused, naming the holder
    with pytest.raises(RunInProgressError, match="arn:first"):
        plan(s3, config, DAY, execution_arn="arn:second", is_running=lambda arn: True, **kwargs)
    # once the first is over (failed, say), the next takes the run id over
    plan(s3, config, DAY, execution_arn="arn:second", is_running=lambda arn: False, **kwargs)
    with pytest.raises(RunInProgressError, match="arn:second"):
        plan(s3, config, DAY, execution_arn="arn:third", is_running=lambda arn: True, **kwargs)
