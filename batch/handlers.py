"""Step Functions task handlers of the batch job: thin Powertools wrappers over batch/job.py.

Each task gets a small JSON payload (a Distributed Map item, or the plan's output) and
returns a small one: the work itself reads and writes S3 (Step Functions' payload limit is
256 KB). The run's model version is resolved once, by ``plan``: every chunk then loads that
version, so a promote mid-run cannot mix versions.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from batch import job
from batch.schedule import ScheduledSettings, run_day
from models import contracts as c

logger = Logger(service="rtml-batch")
metrics = Metrics(namespace="rtml", service="batch")
tracer = Tracer(service="rtml-batch")


class BatchSettings(ScheduledSettings):
    """The batch functions' environment, validated once (names in models.contracts)."""

    bucket: str = Field(alias=c.ENV_DATA_BUCKET)
    prefix: str = Field("batch", alias=c.ENV_BATCH_PREFIX)
    registry: str = Field(alias=c.ENV_REGISTRY)
    model_name: str = Field(c.DEFAULT_MODEL_NAME, alias=c.ENV_MODEL_NAME)
    threshold: float = Field(0.5, ge=0, le=1, alias=c.ENV_DECISION_THRESHOLD)
    scores_table: str | None = Field(None, alias=c.ENV_SCORES_TABLE)
    max_bytes_per_chunk: int = Field(job.MAX_BYTES_PER_CHUNK, ge=1, alias=c.ENV_MAX_BYTES_PER_CHUNK)

    def job_config(self) -> job.JobConfig:
        # a backfill never overwrites newer latest scores: its plan says so, and chunks skip them
        return job.JobConfig(
            bucket=self.bucket,
            prefix=self.prefix,
            threshold=self.threshold,
            max_bytes_per_chunk=self.max_bytes_per_chunk,
            scores_table=self.scores_table,
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


@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def plan(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Resolve the model version once, take the run id's lock and size the run; what the
    maps need (item keys). The state machine passes ``{"input": <execution input>,
    "execution_arn": ...}``; a direct call may pass the input alone."""
    settings = _settings()
    s3, _, registry = _clients()
    execution_arn = event.get("execution_arn")
    event = dict(event.get("input") or event)
    version = event.get("model_version") or registry.resolve(settings.model_name, "champion")
    backfill = bool(event.get("backfill"))
    day = run_day(event, zone=settings.data_time_zone)
    run = job.plan(s3, settings.job_config(), day, model_name=settings.model_name,
                   model_version=version, backfill=backfill, execution_arn=execution_arn,
                   is_running=_is_running)  # fmt: skip
    logger.info("planned", extra={"run_id": run.run_id, "model_version": version})
    return {
        "run_id": run.run_id,
        "day": run.day.isoformat(),
        "model_version": version,
        "backfill": backfill,
        "items": run.items,
        "counts": {stage: len(getattr(run, f"{stage}_items")) for stage in job.STAGES},
    }


def _is_running(execution_arn: str) -> bool:
    import boto3

    states = boto3.client("stepfunctions")
    try:
        return bool(states.describe_execution(executionArn=execution_arn)["status"] == "RUNNING")
    except states.exceptions.ExecutionDoesNotExist:
        return False


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def chunk(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One Distributed Map item: ``{"stage": ..., "item": {"run_id": ..., ...}}``."""
    settings = _settings()
    s3, dynamodb, _ = _clients()
    config = settings.job_config()
    stage, item = str(event.get("stage")), dict(event.get("item") or {})
    if "run_id" not in item:
        raise ValueError(f"item.run_id: missing in {item!r}")
    run = job.load_plan(s3, config, item["run_id"])
    logger.append_keys(run_id=run.run_id, stage=stage, item=item)
    model = _model(run.model_version) if stage == "customer" else None
    result = job.run_task(s3, config, run, stage, item, model=model, dynamodb=dynamodb)
    metrics.add_dimension(name="stage", value=stage)
    metrics.add_metric("ChunkRows", MetricUnit.Count, result["rows"])
    metrics.add_metric("ChunkSeconds", MetricUnit.Seconds, result["seconds"])
    return result


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def finalize(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The manifest and drift report; EMF metrics the alarms watch (rows, max PSI)."""
    settings = _settings()
    s3, _, _ = _clients()
    config = settings.job_config()
    run = job.load_plan(s3, config, str(event["run_id"]))
    result = job.finalize(s3, config, run, _model(run.model_version))
    manifest = result.manifest
    metrics.add_metric("BatchMissingBuckets", MetricUnit.Count, len(manifest["missing_buckets"]))
    metrics.add_metric(
        "BatchQuarantinedParts", MetricUnit.Count, len(manifest["inputs"]["quarantined"])
    )
    if run.backfill:  # a backfill's drift and history are not today's: no alarm metrics
        return {"run_id": run.run_id, "rows": manifest["outputs"]["rows"]}
    metrics.add_metric("BatchRows", MetricUnit.Count, manifest["outputs"]["rows"])
    metrics.add_metric("BatchHighRisk", MetricUnit.Count, manifest["high_risk"])
    metrics.add_metric("BatchMaxPsi", MetricUnit.NoUnit, manifest["max_psi"])
    metrics.add_metric("BatchDriftAlarms", MetricUnit.Count, len(manifest["drift_alarms"]))
    if manifest["labelled_day"]:
        labelled = manifest["labelled_day"]
        metrics.add_metric("LabelledAP", MetricUnit.NoUnit, labelled["average_precision"])
        metrics.add_metric("LabelledCP100", MetricUnit.NoUnit, labelled["card_precision_at_100"])
    return {"run_id": run.run_id, "rows": manifest["outputs"]["rows"],
            "max_psi": manifest["max_psi"], "drift_alarms": manifest["drift_alarms"]}  # fmt: skip
