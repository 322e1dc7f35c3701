"""Step Functions task handlers of the batch job: thin Powertools wrappers over batch/job.py.

Each task gets a small JSON payload (a Distributed Map item, or the plan's output) and
returns a small one: the work itself reads and writes S3 (Step Functions' payload limit is
256 KB). The run's model version is resolved once, by ``plan``: every chunk then loads that
version, so a promote mid-run cannot mix versions.
"""

from __future__ import annotations

import time
from datetime import date
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from batch import job
from models import contracts as c

logger = Logger(service="rtml-batch")
metrics = Metrics(namespace="rtml", service="batch")
tracer = Tracer(service="rtml-batch")


class BatchSettings(c.EnvSettings):
    """The batch functions' environment, validated once (names in models.contracts)."""

    bucket: str = Field(alias=c.ENV_DATA_BUCKET)
    prefix: str = Field("batch", alias=c.ENV_BATCH_PREFIX)
    registry: str = Field(alias=c.ENV_REGISTRY)
    model_name: str = Field(c.DEFAULT_MODEL_NAME, alias=c.ENV_MODEL_NAME)
    threshold: float = Field(0.5, ge=0, le=1, alias=c.ENV_DECISION_THRESHOLD)
    scores_table: str | None = Field(None, alias=c.ENV_SCORES_TABLE)
    max_bytes_per_chunk: int = Field(job.MAX_BYTES_PER_CHUNK, ge=1, alias=c.ENV_MAX_BYTES_PER_CHUNK)

    def job_config(self, *, backfill: bool = False) -> job.JobConfig:
        return job.JobConfig(
            bucket=self.bucket,
            prefix=self.prefix,
            threshold=self.threshold,
            max_bytes_per_chunk=self.max_bytes_per_chunk,
            # a backfill never overwrites newer latest scores: it writes none
            scores_table=None if backfill else self.scores_table,
        )


@cache
def _settings() -> BatchSettings:
    """The environment, validated once per execution environment."""
    return BatchSettings.from_env()


@cache
def _clients() -> tuple[Any, Any, Any]:
    import boto3

    from models.registry import open_registry

    settings = _settings()
    s3 = boto3.client("s3")
    return s3, boto3.client("dynamodb"), open_registry(settings.registry, s3_client=s3)


@cache
def _model(version: str) -> Any:
    """The run's model version (cached per execution environment: chunks reuse it)."""
    import tempfile
    from pathlib import Path

    from models.artifact import load_artifact

    settings = _settings()
    _, _, registry = _clients()
    cache_dir = Path(tempfile.gettempdir()) / "rtml-models"
    return load_artifact(registry.fetch(settings.model_name, version, cache_dir))


def _day(event: dict[str, Any]) -> date:
    try:
        return date.fromisoformat(str(event["date"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"date: expected YYYY-MM-DD, got {event.get('date')!r}") from exc


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def plan(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Resolve the model version once and size the run: {run_id, counts, items keys}."""
    settings = _settings()
    s3, _, registry = _clients()
    version = event.get("model_version") or registry.resolve(settings.model_name, "champion")
    run = job.plan(
        s3, settings.job_config(backfill=bool(event.get("backfill"))), _day(event),
        model_name=settings.model_name, model_version=version,
    )  # fmt: skip
    logger.info("planned", extra={"run_id": run.run_id, "model_version": version})
    return {
        "run_id": run.run_id,
        "backfill": bool(event.get("backfill")),
        "partition_items": run.partition_items,
        "terminal_items": run.terminal_items,
        "customer_items": run.customer_items,
    }


@logger.inject_lambda_context(clear_state=True)
def partition(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    s3, _, _ = _clients()
    rows = job.partition_day(s3, settings.job_config(), event["entity"], int(event["buckets"]),
                             _day({"date": event["day"]}))  # fmt: skip
    return {"rows": rows}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def terminal_chunk(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    s3, _, _ = _clients()
    config = settings.job_config()
    run = job.load_plan(s3, config, event["run_id"])
    started = time.perf_counter()
    rows = job.terminal_chunk(s3, config, run, int(event["bucket"]))
    metrics.add_metric("TerminalChunkSeconds", MetricUnit.Seconds, time.perf_counter() - started)
    return {"rows": rows}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def customer_chunk(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    s3, dynamodb, _ = _clients()
    config = settings.job_config(backfill=bool(event.get("backfill")))
    run = job.load_plan(s3, config, event["run_id"])
    started = time.perf_counter()
    rows = job.customer_chunk(s3, config, run, int(event["bucket"]),
                              model=_model(run.model_version), dynamodb=dynamodb)  # fmt: skip
    seconds = time.perf_counter() - started
    metrics.add_metric("RowsScored", MetricUnit.Count, rows)
    metrics.add_metric("CustomerChunkSeconds", MetricUnit.Seconds, seconds)
    return {"rows": rows, "seconds": round(seconds, 3)}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def finalize(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    s3, _, _ = _clients()
    config = settings.job_config()
    run = job.load_plan(s3, config, event["run_id"])
    result = job.finalize(s3, config, run, _model(run.model_version))
    metrics.add_metric("BatchRows", MetricUnit.Count, result.manifest["outputs"]["rows"])
    metrics.add_metric("DriftAlarms", MetricUnit.Count, len(result.manifest["drift_alarms"]))
    return {"run_id": run.run_id, "rows": result.manifest["outputs"]["rows"],
            "drift_alarms": result.manifest["drift_alarms"]}  # fmt: skip
