"""The scheduled monitor job: a Lambda that checks the last days of the prediction archive.

Daily (EventBridge Scheduler), for the last complete UTC day and the week before it (the
baseline); hourly (``{"partial": true}``) for the day under way, label-free checks only
(drift, stuck scores, constant or missing inputs, disagreement; no volume, no labels yet).
It reads the stream's archive and the transactions (volumes, labels known a week later)
from S3, runs ``models.monitor.monitor_period`` against the champion's reference profile,
writes ``<monitor prefix>/reports/date=<day>[/hour=<HH>]/report.json`` and ``report.html``,
and publishes one EMF metric per detector kind (``MONITOR_ALARM_METRICS``), which the alarms
in infra watch. Runs from the batch bundle (numpy, pyarrow).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from batch.schedule import run_day, scheduled_time
from models import contracts as c

logger = Logger(service="rtml-monitor")
metrics = Metrics(namespace="rtml", service="monitor")


class MonitorSettings(c.EnvSettings):
    """The monitor function's environment (names in models.contracts)."""

    bucket: str = Field(alias=c.ENV_DATA_BUCKET)
    archive_prefix: str = Field(c.ARCHIVE_PREFIX, alias=c.ENV_ARCHIVE_PREFIX)
    report_prefix: str = Field(c.MONITOR_PREFIX, alias=c.ENV_MONITOR_PREFIX)
    batch_prefix: str = Field("batch", alias=c.ENV_BATCH_PREFIX)
    registry: str = Field(alias=c.ENV_REGISTRY)
    model_name: str = Field(c.DEFAULT_MODEL_NAME, alias=c.ENV_MODEL_NAME)
    threshold: float = Field(0.5, ge=0, le=1, alias=c.ENV_DECISION_THRESHOLD)
    window_days: int = Field(8, ge=1, le=60, alias=c.ENV_MONITOR_WINDOW_DAYS)
    thresholds: str = Field("{}", alias=c.ENV_MONITOR_THRESHOLDS)


@cache
def _settings() -> MonitorSettings:
    return MonitorSettings.from_env()


@cache
def _clients() -> tuple[Any, Any]:
    import boto3

    from models.registry import open_registry

    s3 = boto3.client("s3")
    return s3, open_registry(_settings().registry, s3_client=s3)


def check_day(
    s3: Any,
    model: Any,
    settings: MonitorSettings,
    day: date,
    *,
    partial: bool = False,
    at: datetime | None = None,
) -> Any:
    """The report of the window ending ``day``: labels are those known by ``day`` (a week
    back). A partial (hourly) run checks the last 24 hours as one window ending at the
    scheduled time, so the mix of night and day, the baseline's shape, is a whole day's; it
    skips the volume check (the transactions are not all in the dataset yet)."""
    import numpy as np

    from models.contracts import TRANSACTIONS_COLUMNS, TRANSACTIONS_PREFIX
    from models.monitor import monitor_period, read_archive_s3
    from models.monitoring import MonitorThresholds
    from models.s3_datasets import read_days

    start = day - timedelta(days=settings.window_days - 1)
    names = list(model.manifest.feature_names)
    archive = read_archive_s3(s3, settings.bucket, settings.archive_prefix, start=start,
                              end=day, feature_names=names)  # fmt: skip
    if partial and at is not None:  # the last 24 hours make the checked window
        since = np.datetime64(at.astimezone(UTC).replace(tzinfo=None) - timedelta(days=1), "s")
        archive.day = np.where(archive.time > since, np.datetime64(day, "D"), archive.day)
    days = [start + timedelta(days=k) for k in range(settings.window_days)]
    transactions = read_days(s3, settings.bucket, TRANSACTIONS_PREFIX, days, TRANSACTIONS_COLUMNS)
    tx_days = transactions.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    counted = np.unique(tx_days, return_counts=True)
    labels = dict(zip(transactions.column("TRANSACTION_ID").to_pylist(),
                      transactions.column("TX_FRAUD").to_pylist(), strict=True))  # fmt: skip
    report = monitor_period(
        model.manifest.reference, archive, start=start, end=day,
        transactions_in={str(d): int(n) for d, n in zip(*counted, strict=True)},
        labels=labels, threshold=settings.threshold, as_of=day, check_volume=not partial,
        thresholds=MonitorThresholds.model_validate(json.loads(settings.thresholds)),
        other_paths={"batch": batch_rows(s3, settings.bucket, settings.batch_prefix, days)},
        model_version=model.version,
    )  # fmt: skip
    scores = {d.day: archive.score[archive.day == np.datetime64(d.day)] for d in report.days}
    return report, scores


def batch_rows(s3: Any, bucket: str, batch_prefix: str, days: list[date]) -> dict[str, int]:
    """Rows the batch job scored per day (its latest finished run of the day, any model)."""
    from models.s3_datasets import list_objects

    found: dict[str, int] = {}
    for day in days:
        manifests = [k for k, _ in list_objects(s3, bucket, f"{batch_prefix}/runs/{day}-")
                     if k.endswith("/manifest.json")]  # fmt: skip
        for key in manifests:
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            if not manifest.get("backfill"):
                found[day.isoformat()] = int(manifest["outputs"]["rows"])
    return found


def alarm_counts(report: Any, day: date) -> dict[str, int]:
    """Alarms per detector kind on ``day`` (and the AP floor of the newest labelled day)."""
    counts = dict.fromkeys(c.MONITOR_ALARM_METRICS, 0)
    for report_day in report.days:
        if report_day.day == day.isoformat():
            for check in report_day.alarms:
                kind = check.detector.split(":")[0]
                if kind in counts:
                    counts[kind] += 1
    labelled = [ch for ch in report.performance_checks if ch.status != "insufficient"]
    if labelled and labelled[-1].status == "alarm":
        counts["ap_floor"] = 1
    return counts


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Check the day, write the report, publish a metric per detector kind."""
    from models.artifact import load_artifact
    from models.monitor import NOT_ALARMED_DAILY
    from models.monitor_html import render

    settings = _settings()
    s3, registry = _clients()
    day = run_day(event, under_way=bool(event.get("partial")))
    version = registry.resolve(settings.model_name, "champion")
    model = load_artifact(registry.fetch(settings.model_name, version,
                                         Path(tempfile.gettempdir()) / "rtml-models"))  # fmt: skip
    partial = bool(event.get("partial"))
    at = scheduled_time(event) or datetime.now(UTC)
    report, scores = check_day(s3, model, settings, day, partial=partial, at=at)
    prefix = f"{settings.report_prefix}/reports/date={day.isoformat()}"
    if partial:  # the day so far, kept per hour beside the day's final report
        hour = str(event.get("scheduled_time", ""))[11:13] or datetime.now(UTC).strftime("%H")
        prefix += f"/hour={hour}"
    s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/report.json",
                  Body=report.model_dump_json(indent=2).encode(),
                  ContentType="application/json")  # fmt: skip
    page = render(report, model.manifest.reference, scores,
                  title=f"rtml monitoring {day.isoformat()}: {model.manifest.ref}")  # fmt: skip
    s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/report.html", Body=page.encode(),
                  ContentType="text/html")  # fmt: skip
    metrics.add_metric("MonitorRuns", MetricUnit.Count, 1)  # the heartbeat an alarm watches
    counts = alarm_counts(report, day)
    if partial:
        counts["ap_floor"] = 0  # judged by the daily run, on labels
    for kind, n in counts.items():
        metrics.add_metric(c.MONITOR_ALARM_METRICS[kind], MetricUnit.Count, n)
    today = next((d for d in report.days if d.day == day.isoformat()), None)
    if today is not None and today.rows:
        judged = [v for n, v in today.psi.items() if n not in NOT_ALARMED_DAILY]
        metrics.add_metric("MonitorMaxPsi", MetricUnit.NoUnit, max([today.score_psi, *judged]))
        metrics.add_metric("MonitorPredictions", MetricUnit.Count, today.rows)
    logger.info("checked", extra={"day": day.isoformat(), "alarms": counts})
    return {"day": day.isoformat(), "report": f"s3://{settings.bucket}/{prefix}/report.html",
            "alarms": counts, "first_alarm": report.first_alarm}  # fmt: skip
