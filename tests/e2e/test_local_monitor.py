"""The monitor job on the local stack: fired by its deployed schedule (`rtml local tick`), it
reads the archive and the transactions from S3 and writes the day's report; the detectors'
alarms and the dashboard are deployed from the synthesized template."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from infra.local.stack import LocalStack
from models import contracts as c
from models import datasets
from models.artifact import load_artifact
from models.contracts import TRANSACTIONS_COLUMNS, TRANSACTIONS_PREFIX
from models.features import table as feature_table
from models.features.offline import compute_features
from models.monitor import replay_lines
from models.registry import open_registry
from models.s3_datasets import part_key, write_part

pytestmark = pytest.mark.e2e
DAY = date(2018, 5, 17)


@pytest.fixture(scope="module")
def archived(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A week of transactions and of the archive the stream would have written for them."""
    from rtml import cli

    out: Path = tmp_path_factory.mktemp("sim")
    args = ["simulate", "--customers", "200", "--terminals", "400", "--days", "50",
            "--radius", "10", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    transactions = datasets.read_dataset(out, TRANSACTIONS_COLUMNS)
    s3, bucket = stack.client("s3"), stack.info["data_bucket"]
    days = transactions.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    for day in np.unique(days):
        part = transactions.filter(pa.array(days == day))
        write_part(s3, bucket, part_key(TRANSACTIONS_PREFIX, day.astype(object), 0), part)
    registry = open_registry(stack.info["registry"], s3_client=s3)
    version = registry.resolve(c.DEFAULT_MODEL_NAME, "champion")
    model = load_artifact(registry.fetch(c.DEFAULT_MODEL_NAME, version,
                                         tmp_path_factory.mktemp("models")))  # fmt: skip
    table = feature_table.feature_table(transactions, compute_features(transactions))
    week = (days >= np.datetime64(DAY - timedelta(days=7))) & (days <= np.datetime64(DAY))
    lines = replay_lines(table.filter(pa.array(week)), model)
    for day, day_lines in lines.items():
        s3.put_object(Bucket=bucket, Key=f"{c.ARCHIVE_PREFIX}/date={day}/replay.jsonl",
                      Body=("\n".join(day_lines) + "\n").encode())  # fmt: skip
    return int(week.sum())


def test_the_schedule_runs_the_monitor_which_writes_the_days_report(
    stack: LocalStack, archived: int
) -> None:
    from infra.local.schedules import tick

    lambdas = stack.client("lambda")

    def invoke(name: str, payload: str) -> object:
        response = lambdas.invoke(FunctionName=name, Payload=payload.encode())
        return {"error": response.get("FunctionError"),
                "payload": json.loads(response["Payload"].read())}  # fmt: skip

    fired = tick(stack.client("scheduler"), datetime(2018, 5, 18, 3, 45, tzinfo=UTC),
                 invoke=invoke, start_execution=lambda *args: None)  # fmt: skip
    (run,) = [f for f in fired if "Monitor" in f["target"]]
    assert run["result"]["error"] is None, run
    result = run["result"]["payload"]
    assert result["day"] == DAY.isoformat()
    assert set(result["alarms"]) == set(c.MONITOR_ALARM_METRICS)
    # the report is in S3, as JSON and as the HTML page with its charts
    s3, bucket = stack.client("s3"), stack.info["data_bucket"]
    prefix = f"{c.MONITOR_PREFIX}/reports/date={DAY.isoformat()}"
    report = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/report.json")["Body"].read())
    assert sum(d["rows"] for d in report["days"]) == archived
    assert report["days"][-1]["day"] == DAY.isoformat()
    page = s3.get_object(Bucket=bucket, Key=f"{prefix}/report.html")["Body"].read().decode()
    assert page.count("<svg") == 4


def test_the_detectors_alarms_and_the_dashboard_are_deployed(stack: LocalStack) -> None:
    cloudwatch = stack.client("cloudwatch")
    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    watched = {a.get("MetricName") for a in alarms}
    assert set(c.MONITOR_ALARM_METRICS.values()) <= watched
    assert any(a.get("Metrics") and "IncomingRecords" in json.dumps(a["Metrics"]) for a in alarms)
    (dashboard,) = cloudwatch.list_dashboards()["DashboardEntries"]
    body = json.loads(cloudwatch.get_dashboard(DashboardName=dashboard["DashboardName"])[
        "DashboardBody"])  # fmt: skip
    titles = {w["properties"].get("title") for w in body["widgets"]}
    assert {"Throughput per path", "Errors", "Batch runs", "Largest PSI (monitor, batch)"} <= titles


def test_the_hourly_run_checks_the_day_under_way_without_its_volume(
    stack: LocalStack, archived: int
) -> None:
    from infra.local.schedules import tick

    lambdas = stack.client("lambda")

    def invoke(name: str, payload: str) -> object:
        response = lambdas.invoke(FunctionName=name, Payload=payload.encode())
        return json.loads(response["Payload"].read())

    fired = tick(stack.client("scheduler"), datetime(2018, 5, 17, 12, 5, tzinfo=UTC),
                 invoke=invoke, start_execution=lambda *args: None)  # fmt: skip
    (run,) = [f for f in fired if "Monitor" in f["target"]]
    assert run["result"]["day"] == DAY.isoformat()
    assert run["result"]["report"].endswith(f"date={DAY.isoformat()}/hour=12/report.html")
    s3, bucket = stack.client("s3"), stack.info["data_bucket"]
    key = f"{c.MONITOR_PREFIX}/reports/date={DAY.isoformat()}/hour=12/report.json"
    report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    # only the days whose labels are known by now (a week back) have label-based figures
    assert all(p["day"] <= (DAY - timedelta(days=7)).isoformat() for p in report["performance"])
    # the day under way has no volume check (earlier days are the daily runs' summaries)
    today = report["days"][-1]
    assert today["day"] == DAY.isoformat() and today["rows"] > 0
    assert not any(ch["detector"].startswith("volume") for ch in today["checks"])
    assert run["result"]["read"]["archive_days"] == [
        (DAY - timedelta(days=1)).isoformat(),
        DAY.isoformat(),
    ]  # the day before for its last 24 hours; every other day from its summary


def test_a_daily_run_reads_only_the_days_no_summary_holds(stack: LocalStack, archived: int) -> None:
    """The first run reads the whole window and keeps a summary per day; the next reads the
    checked day's archive alone (the labelled day's scores come from its summary), and its
    report is the same."""
    s3, bucket, lambdas = stack.client("s3"), stack.info["data_bucket"], stack.client("lambda")
    (monitor,) = [f["FunctionName"] for f in lambdas.list_functions()["Functions"]
                  if "Monitor" in f["FunctionName"]]  # fmt: skip
    for old in s3.list_objects_v2(Bucket=bucket, Prefix=f"{c.MONITOR_PREFIX}/days/").get(
        "Contents", []
    ):
        s3.delete_object(Bucket=bucket, Key=old["Key"])
    key = f"{c.MONITOR_PREFIX}/reports/date={DAY.isoformat()}/report.json"

    def run() -> tuple[dict[str, object], dict[str, object]]:
        payload = json.dumps({"date": DAY.isoformat()}).encode()
        response = lambdas.invoke(FunctionName=monitor, Payload=payload)
        assert response.get("FunctionError") is None
        result = json.loads(response["Payload"].read())
        return result, json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    first, first_report = run()
    assert len(first["read"]["archive_days"]) == 8  # type: ignore[index]
    kept = {o["Key"].rsplit("/", 2)[-2] for o in s3.list_objects_v2(
        Bucket=bucket, Prefix=f"{c.MONITOR_PREFIX}/days/")["Contents"]}  # fmt: skip
    assert len(kept) == 8
    second, second_report = run()
    assert second["read"]["archive_days"] == [DAY.isoformat()]  # type: ignore[index]
    assert second["read"]["rows_read"] < archived / 4  # type: ignore[index]
    assert second_report == first_report
    assert first_report["performance"], "the labelled day is judged from its kept scores"
    # a late file in a summarised day, or a summary made with another champion: read again
    late, other = DAY - timedelta(days=3), DAY - timedelta(days=2)
    s3.put_object(Bucket=bucket, Key=f"{c.ARCHIVE_PREFIX}/date={late}/late.jsonl", Body=b"")
    kept_key = f"{c.MONITOR_PREFIX}/days/date={other}/day.json"
    kept = json.loads(s3.get_object(Bucket=bucket, Key=kept_key)["Body"].read())
    kept["model_version"] = "an-earlier-champion"
    s3.put_object(Bucket=bucket, Key=kept_key, Body=json.dumps(kept).encode())
    third, third_report = run()
    assert third["read"]["archive_days"] == [  # type: ignore[index]
        late.isoformat(),
        other.isoformat(),
        DAY.isoformat(),
    ]
    assert third_report == first_report
    s3.delete_object(Bucket=bucket, Key=f"{c.ARCHIVE_PREFIX}/date={late}/late.jsonl")
