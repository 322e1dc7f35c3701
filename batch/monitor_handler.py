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

import io
import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from batch.schedule import ScheduledSettings, local_time, run_day, scheduled_time
from models import contracts as c

logger = Logger(service="rtml-monitor")
metrics = Metrics(namespace="rtml", service="monitor")


class MonitorSettings(ScheduledSettings):
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


PERFORMANCE_HISTORY_DAYS = 28
"""Labelled days a report's quality chart shows (each kept by the run that judged it)."""


class DaySummary(BaseModel):
    """A day as a daily run checked it, and what it was checked with: a summary made with
    another champion, threshold or bounds, or before more of the day's archive arrived (a
    late or redriven batch), is not reused; the day is read again."""

    model_config = ConfigDict(frozen=True)

    report: Any
    model_version: str
    threshold: float
    thresholds: str
    archive: str = Field(description="The day's archive listing when read (files:latest).")


class Summaries:
    """What each daily run keeps per day under ``<monitor prefix>/days/date=<day>/``, so
    later runs need not read that day's archive again: ``day.json`` (a :class:`DaySummary`),
    ``scores.parquet`` (its scores without the model inputs, for the label check a week
    later) and ``performance.json`` (its label-based quality, once known)."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix.strip("/")

    def key(self, day: date, name: str) -> str:
        return f"{self.prefix}/days/date={day.isoformat()}/{name}"

    def _get(self, day: date, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(day, name))
        except ClientError as exc:  # a 403 here means the role lacks a grant: let it raise
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def _many(self, days: list[date], name: str) -> dict[date, bytes]:
        from concurrent.futures import ThreadPoolExecutor

        from models.s3_datasets import READ_WORKERS

        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            found = dict(zip(days, pool.map(lambda d: self._get(d, name), days), strict=True))
        return {d: body for d, body in found.items() if body is not None}

    def days(self, days: list[date]) -> dict[date, DaySummary]:
        from models.monitor import DayReport

        found = {}
        for day, body in self._many(days, "day.json").items():
            summary = DaySummary.model_validate_json(body)
            found[day] = summary.model_copy(
                update={"report": DayReport.model_validate(summary.report)}
            )
        return found

    def performance(self, days: list[date]) -> list[Any]:
        from models.monitoring import DailyPerformance

        return [DailyPerformance.model_validate(p)
                for body in self._many(days, "performance.json").values()
                for p in json.loads(body)]  # fmt: skip

    def scores(self, day: date) -> Any:
        import pyarrow.parquet as pq

        from models.monitor import ArchivedPredictions

        body = self._get(day, "scores.parquet")
        return None if body is None else ArchivedPredictions.from_table(pq.read_table(
            io.BytesIO(body)))  # fmt: skip

    def keep(
        self, report: Any, archive: Any, checked: dict[date, str], labelled_day: date,
        *, made_with: dict[str, Any],
    ) -> None:  # fmt: skip
        """The checked days' summaries (``checked``: day -> its archive fingerprint when
        read), and the labelled day's quality."""
        import numpy as np
        import pyarrow.parquet as pq

        for day_report in report.days:
            day = date.fromisoformat(day_report.day)
            if day not in checked:
                continue
            buffer = io.BytesIO()
            pq.write_table(archive.where(archive.day == np.datetime64(day)).to_table(), buffer)
            self._put(day, "scores.parquet", buffer.getvalue())
            summary = DaySummary(report=day_report, archive=checked[day], **made_with)
            self._put(day, "day.json", summary.model_dump_json().encode())
        judged = [p.model_dump() for p in report.performance if p.day == labelled_day.isoformat()]
        if judged:
            self._put(labelled_day, "performance.json", json.dumps(judged).encode())

    def _put(self, day: date, name: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(day, name), Body=body)


def check_day(
    s3: Any,
    model: Any,
    settings: MonitorSettings,
    day: date,
    *,
    partial: bool = False,
    at: datetime | None = None,
) -> Any:
    """The report of the window ending ``day``, reading as little archive as it can.

    Daily: the checked day's archive, and any day of the window whose summary is missing or
    stale (a first or a missed run, a promote, new files in the day); the other days come
    from their summaries, the labelled day (a week back) from its scores. It then keeps the
    summaries it computed. Partial (hourly): the last 24 hours make the checked day, so the
    mix of night and day, the baseline's shape, is a whole day's; of the day before, only
    files written in those hours are read; no volume check (the transactions are not all in
    yet), no labels, nothing kept."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from models.contracts import TRANSACTIONS_COLUMNS, TRANSACTIONS_PREFIX
    from models.monitor import (
        LABEL_DELAY_DAYS,
        archive_listing,
        listing_fingerprint,
        monitor_period,
        read_archive_s3,
    )
    from models.monitoring import MonitorThresholds
    from models.s3_datasets import read_days

    start = day - timedelta(days=settings.window_days - 1)
    labelled_day = day - timedelta(days=LABEL_DELAY_DAYS)
    summaries = Summaries(s3, settings.bucket, settings.report_prefix)
    prior = [start + timedelta(days=k) for k in range(settings.window_days - 1)]
    from models.s3_datasets import READ_WORKERS

    window = [*prior, day]  # listed once: the summaries' freshness, then the reads
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        found = pool.map(lambda d: archive_listing(s3, settings.bucket, settings.archive_prefix,
                                                   d), window)  # fmt: skip
        listed = dict(zip(window, found, strict=True))
    listings = {d: listing_fingerprint(files) for d, files in listed.items()}
    made_with = {"model_version": model.version, "threshold": settings.threshold,
                 "thresholds": settings.thresholds}  # fmt: skip
    stored = summaries.days(prior)
    fresh = {d: s for d, s in stored.items() if s.archive == listings[d]}
    known = {d.isoformat(): s.report for d, s in fresh.items()
             if {k: getattr(s, k) for k in made_with} == made_with}  # fmt: skip
    to_read = [d for d in prior if d.isoformat() not in known] + [day]
    written_since: dict[date, datetime] = {}
    since = None
    if partial and at is not None:
        since = np.datetime64(local_time(at, settings.data_time_zone) - timedelta(days=1), "s")
        yesterday = day - timedelta(days=1)
        if yesterday not in to_read:  # its tail only: files written in the last 24 hours
            to_read.insert(-1, yesterday)
            written_since[yesterday] = at.astimezone(UTC) - timedelta(days=1, hours=1)
    labelled = None
    if not partial and labelled_day not in to_read:
        # its scores hold every model's: only new files in the day make them stale
        labelled = summaries.scores(labelled_day) if labelled_day in fresh else None
        if labelled is None:
            to_read.insert(0, labelled_day)
    names = list(model.manifest.feature_names)
    archive = read_archive_s3(s3, settings.bucket, settings.archive_prefix, days=to_read,
                              feature_names=names, written_since=written_since,
                              listings=listed)  # fmt: skip
    if since is not None:  # the last 24 hours make the checked window
        archive.day = np.where(archive.time > since, np.datetime64(day, "D"), archive.day)
    transactions_in: dict[str, int] = {}
    labels: dict[int, int] = {}
    batch: dict[str, int] = {}
    if not partial:
        tx_days = sorted({*to_read, labelled_day})
        transactions = read_days(s3, settings.bucket, TRANSACTIONS_PREFIX, tx_days,
                                 TRANSACTIONS_COLUMNS)  # fmt: skip
        in_day = transactions.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
        transactions_in = {str(d): int(n) for d, n in zip(*np.unique(in_day, return_counts=True),
                                                          strict=True)}  # fmt: skip
        judged = in_day == np.datetime64(labelled_day)
        labels = dict(zip(transactions.column("TRANSACTION_ID").to_numpy()[judged].tolist(),
                          transactions.column("TX_FRAUD").to_numpy()[judged].tolist(),
                          strict=True))  # fmt: skip
        batch = batch_rows(s3, settings.bucket, settings.batch_prefix, to_read)
    history = [labelled_day - timedelta(days=k) for k in range(1, PERFORMANCE_HISTORY_DAYS)]
    report = monitor_period(
        model.manifest.reference, archive, start=start, end=day,
        transactions_in=transactions_in, labels=labels, threshold=settings.threshold,
        as_of=day, check_volume=not partial,
        thresholds=MonitorThresholds.model_validate(json.loads(settings.thresholds)),
        other_paths={"batch": batch}, model_version=model.version, known_days=known,
        labelled=labelled, earlier_performance=summaries.performance(history),
    )  # fmt: skip
    if not partial:
        checked = {d: listings[d] for d in to_read if start <= d <= day}
        summaries.keep(report, archive, checked, labelled_day, made_with=made_with)
    return report, {"archive_days": [d.isoformat() for d in to_read], "rows_read": len(archive)}


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
    day = run_day(event, under_way=bool(event.get("partial")), zone=settings.data_time_zone)
    version = registry.resolve(settings.model_name, "champion")
    model = load_artifact(registry.fetch(settings.model_name, version,
                                         Path(tempfile.gettempdir()) / "rtml-models"))  # fmt: skip
    partial = bool(event.get("partial"))
    at = scheduled_time(event) or datetime.now(UTC)
    report, read = check_day(s3, model, settings, day, partial=partial, at=at)
    prefix = f"{settings.report_prefix}/reports/date={day.isoformat()}"
    if partial:  # the day so far, kept per hour beside the day's final report
        hour = local_time(at, settings.data_time_zone).strftime("%H")  # of the checked day
        prefix += f"/hour={hour}"
    s3.put_object(Bucket=settings.bucket, Key=f"{prefix}/report.json",
                  Body=report.model_dump_json(indent=2).encode(),
                  ContentType="application/json")  # fmt: skip
    page = render(report, model.manifest.reference,
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
    logger.info("checked", extra={"day": day.isoformat(), "alarms": counts, **read})
    return {"day": day.isoformat(), "report": f"s3://{settings.bucket}/{prefix}/report.html",
            "alarms": counts, "first_alarm": report.first_alarm, "read": read}  # fmt: skip
