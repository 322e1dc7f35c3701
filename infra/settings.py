"""Typed per-environment settings, parsed from the ``rtml:environments`` cdk.json context.

Settings come only from CDK context (cdk.json, or ``-c`` on the command line): no STS
calls, env-var switches or git look-ups, so a synth is reproducible on any machine.
Every problem fails fast, naming the environment and the key at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import aws_cdk as cdk
from constructs import Construct
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.contracts import DEFAULT_PREDICTION_TTL_DAYS, MonitorThresholds, time_zone

ENVIRONMENTS_CONTEXT_KEY: Final = "rtml:environments"
"""Context key holding one settings object per environment name."""

SELECT_CONTEXT_KEY: Final = "env"
"""Context key that selects one environment (``cdk synth -c env=dev``); absent means all."""

LOG_RETENTION_DAYS: Final[frozenset[int]] = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192}
    | {2557, 2922, 3288, 3653}
)
"""Retention periods CloudWatch Logs accepts; any other fails at deploy, so settings reject it."""


def _known_zone(value: str) -> str:
    time_zone(value)  # the runtime's own check, so synth refuses what a function would
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name, checked at synth (a bad one would fail at deploy, or at run)."""


class SettingsError(ValueError):
    """The ``rtml:environments`` context is missing, malformed, or names an unknown environment."""


_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True)


class FunctionSettings(BaseModel):
    """What every Lambda function of an environment shares (the Lambda factory reads these)."""

    model_config = _STRICT

    architecture: Literal["arm64", "x86_64"] = "arm64"
    """CPU architecture; ``make bundle`` builds the serving zip for each one cdk.json names."""

    bundle_budget_mb: int = Field(default=64, ge=1, le=250)
    """Most the serving bundle may weigh unzipped (Lambda's hard limit is 250 MB)."""

    tracing: bool = True
    """X-Ray active tracing on every function."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Powertools log level."""


class StreamPathSettings(BaseModel):
    """The Kinesis scoring path: streams, the scorer function, its event source mappings."""

    model_config = _STRICT

    stream_mode: Literal["on_demand", "provisioned"] = "on_demand"
    """On-demand scales shards itself; provisioned is cheaper for steady, known traffic."""

    shards: int | None = Field(default=None, ge=1)
    """Shard count of the transactions stream when provisioned (required then, refused else)."""

    memory_mb: int = Field(default=1024, ge=128, le=10240)
    """Scorer memory; CPU grows with it (1,769 MB is one full vCPU)."""

    timeout_seconds: int = Field(default=60, ge=1, le=900)
    """Scorer timeout, well above one batch (~150 ms for 100 records)."""

    reserved_concurrency: int | None = Field(default=None, ge=1)
    """Cap on concurrent scorers (shards x parallelization); ``None`` leaves it unreserved,
    since reserving needs account headroom (new accounts have little)."""

    batch_size: int = Field(default=100, ge=1, le=10_000)
    """Records per invocation (the benchmark's target is 100 records in <= 150 ms)."""

    batching_window_seconds: int = Field(default=0, ge=0, le=300)
    """How long Lambda waits to fill a batch; 0 favours latency over batch size."""

    parallelization_factor: int = Field(default=1, ge=1, le=10)
    """Concurrent batches per shard (order is kept per partition key, i.e. per customer)."""

    max_retries: int = Field(default=10, ge=0, le=10_000)
    """Retries of a failing batch before its metadata goes to the on-failure queue."""

    max_record_age_seconds: int = Field(default=3_600, ge=60, le=604_800)
    """Records older than this are sent to the on-failure queue instead of blocking the shard
    (AWS's default, -1, lets one failing batch block a shard for the stream's retention)."""

    bisect_on_error: bool = True
    """Split a batch whose invocation fails, to isolate the record that fails it."""

    decision_threshold: float = Field(default=0.5, ge=0, le=1)
    """Score at and above which a transaction is high risk (alerted)."""

    ab_share: float = Field(default=0.0, ge=0, le=1)
    """Share of customers whose decision the challenger makes (0: shadow only)."""

    max_amount: float = Field(default=1_000_000.0, gt=0)
    """Largest accepted amount; larger is refused as invalid."""

    max_clock_skew_seconds: int | None = Field(default=300, ge=0)
    """How far past its arrival an event time may be (``None``: off, for replays of history)."""

    prediction_ttl_days: int = Field(default=DEFAULT_PREDICTION_TTL_DAYS, ge=1)
    """Days a stored prediction lives in the predictions table. The table answers for recent
    decisions (redeliveries within Kinesis' retention, alerts, a support desk's lookups); the
    S3 archive keeps every prediction. 30 days: kept predictions are the stream's largest
    cost after writes (with point-in-time recovery, at 1,000 tps: $0.24 per million scored at
    30 days, $0.72 at 90)."""

    alias_recheck_seconds: int = Field(default=60, ge=0)
    """How often a warm scorer checks the registry for a new champion (hot swap latency)."""

    stream_retention_hours: int = Field(default=24, ge=24, le=8_760)
    """How long Kinesis keeps records (replays of dead batches must happen within it)."""

    iterator_age_alarm_seconds: int = Field(default=60, ge=1)
    """Alarm when the oldest unprocessed record is older than this."""

    @model_validator(mode="after")
    def _shards_match_mode(self) -> StreamPathSettings:
        if self.stream_mode == "provisioned" and self.shards is None:
            raise ValueError("'shards' is required when stream_mode is 'provisioned'")
        if self.stream_mode == "on_demand" and self.shards is not None:
            raise ValueError("'shards' applies only when stream_mode is 'provisioned'")
        return self


class ApiPathSettings(BaseModel):
    """The on-demand path: the REST API, its usage plan, and the predictor function."""

    model_config = _STRICT

    auth: Literal["api_key", "iam"] = "api_key"
    """``api_key``: an API key (``x-api-key``) and usage plan; ``iam``: SigV4-signed calls."""

    rate_limit: float = Field(default=100.0, gt=0)
    """Steady requests a second, per key (usage plan) and for the stage."""

    burst_limit: int = Field(default=200, ge=1)
    """Requests allowed in a burst above the rate."""

    quota_per_day: int | None = Field(default=1_000_000, ge=1)
    """Requests a day per key (``None``: no quota)."""

    memory_mb: int = Field(default=1024, ge=128, le=10240)
    timeout_seconds: int = Field(default=10, ge=1, le=29)
    """Under API Gateway's 29 s integration timeout (a caller sees 504 past it)."""

    reserved_concurrency: int | None = Field(default=None, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty: no CORS at all."""

    latency_alarm_ms: int = Field(default=500, ge=1)
    """Alarm when the API's p99 latency stays above this."""

    error_rate_alarm: float = Field(default=0.05, gt=0, le=1)
    """Alarm when this share of requests gets a 4xx."""


class BatchPathSettings(BaseModel):
    """The scheduled batch job: its state machine, task functions and schedule."""

    model_config = _STRICT

    schedule: str = "cron(30 2 * * ? *)"
    """EventBridge Scheduler expression; a run scores the last complete day of the data."""

    timezone: TimeZoneName = "UTC"
    """IANA time zone of ``schedule`` (EventBridge Scheduler honours daylight saving): when
    it fires; the day it scores is the data's (``data_time_zone``)."""

    schedule_enabled: bool = True

    prefix: str = Field(default="batch", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """Key prefix of the job's output in the data bucket."""

    max_concurrency: int = Field(default=10, ge=1, le=10_000)
    """Chunks a Distributed Map runs at once (each is one Lambda invocation)."""

    tolerated_failure_percentage: int = Field(default=0, ge=0, le=100)
    """Share of chunks that may fail before the run fails (0: any failure fails the run)."""

    memory_mb: int = Field(default=3008, ge=128, le=10240)
    """Per task function; Lambda's CPU share grows with memory (1,769 MB is one vCPU)."""

    timeout_seconds: int = Field(default=900, ge=60, le=900)

    max_bytes_per_chunk: int = Field(default=64 * 1024 * 1024, ge=1)
    """Parquet a chunk reads at most; the plan sets the bucket counts from it."""

    retry_attempts: int = Field(default=3, ge=0, le=10)
    """Retries of a failed chunk (Lambda service errors, throttles, task errors)."""

    retry_interval_seconds: int = Field(default=2, ge=1, le=3_600)
    retry_backoff_rate: float = Field(default=2.0, ge=1.0, le=10.0)

    decision_threshold: float = Field(default=0.5, ge=0, le=1)

    drift_alarm_psi: float = Field(default=0.2, gt=0)
    """Alarm when a run's largest PSI (an input or the score) reaches this."""

    bundle_budget_mb: int = Field(default=250, ge=1, le=250)
    """Unzipped size the batch bundle (numpy, pyarrow) may reach; Lambda allows 250 MB."""


class MonitorPathSettings(BaseModel):
    """The scheduled monitor job, its alarms and the stage's dashboard."""

    model_config = _STRICT

    schedule: str = "cron(45 3 * * ? *)"
    """EventBridge Scheduler expression; a run checks the last complete day of the data."""

    hourly: bool = True
    """Also check the day under way every hour (label-free checks only)."""

    timezone: TimeZoneName = "UTC"
    """IANA time zone of ``schedule``: when it fires (the day it checks is the data's)."""
    schedule_enabled: bool = True
    window_days: int = Field(default=8, ge=8, le=60)
    """Days each run reads: the checked day and the week before (the high-risk baseline, and
    the day whose labels are known by then). At least 8, or no labelled day falls in it."""

    memory_mb: int = Field(default=2048, ge=128, le=10240)
    timeout_seconds: int = Field(default=600, ge=60, le=900)
    thresholds: MonitorThresholds = MonitorThresholds()
    """Every detector's bound (``models.contracts.MonitorThresholds``; README lists them)."""

    silence_minutes: int = Field(default=15, ge=5, le=1440)
    """Alarm when records arrive on the stream but none is scored for this long."""


class EnvSettings(BaseModel):
    """Settings of one deployment environment (a CDK stage holding the rtml stack)."""

    # strict: cdk.json is typed JSON, so "7" or true where a number belongs is a mistake to report.
    model_config = _STRICT

    name: str
    """The environment's key in ``rtml:environments`` (what ``-c env=NAME`` selects)."""

    stage_name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    """Construct id of the stage and the ``environment`` tag; lower-case to suit stack names."""

    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    """Target AWS account id; absent or ``null`` (context drops nulls) means account-agnostic."""

    region: str | None = None
    """Target AWS region; ``None`` keeps the stack region-agnostic."""

    removal_policy: Literal["destroy", "retain"]
    """What happens to stateful resources on stack delete: dev cleans up, prod keeps data."""

    log_retention_days: int
    """Days to keep logs (log groups, S3 access logs); one of the values CloudWatch Logs allows."""

    data_time_zone: TimeZoneName = "UTC"
    """IANA zone of the transactions' naive local time (``tx_datetime``): a day of the data,
    which the batch job scores and the monitor checks, is a day there. Scheduled runs take
    the last day complete in this zone when they fire."""

    alarm_email: str | None = None
    """Address subscribed to operational alarms; ``None`` means no e-mail subscription."""

    functions: FunctionSettings = FunctionSettings()
    """What every function shares (architecture, bundle budget, tracing, log level)."""

    stream: StreamPathSettings = StreamPathSettings()
    """The Kinesis scoring path."""

    api: ApiPathSettings = ApiPathSettings()
    """The on-demand path (REST API)."""

    batch: BatchPathSettings = BatchPathSettings()
    """The scheduled batch job (Step Functions)."""

    monitor: MonitorPathSettings = MonitorPathSettings()
    """The monitor job, its detectors' alarms, the dashboard."""

    @field_validator("log_retention_days")
    @classmethod
    def _retention_is_allowed(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            allowed = ", ".join(str(days) for days in sorted(LOG_RETENTION_DAYS))
            raise ValueError(f"{value} is not a CloudWatch Logs retention period ({allowed})")
        return value

    @property
    def cdk_environment(self) -> cdk.Environment:
        """The stage's ``env``: unset parts stay environment-agnostic tokens."""
        return cdk.Environment(account=self.account, region=self.region)

    @property
    def cdk_removal_policy(self) -> cdk.RemovalPolicy:
        """``removal_policy`` as the CDK enum constructs expect."""
        return (
            cdk.RemovalPolicy.DESTROY
            if self.removal_policy == "destroy"
            else cdk.RemovalPolicy.RETAIN
        )


def _describe(error: ValidationError, where: str) -> str:
    """One readable line per problem, naming the key: ``missing required key 'stage_name'``."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<root>"
        if problem["type"] == "missing":
            lines.append(f"{where}: missing required key '{key}'")
        elif problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{key}' (a typo?)")
        else:
            lines.append(f"{where}: key '{key}': {problem['msg']}")
    return "\n".join(lines)


def parse_environments(raw: Any) -> dict[str, EnvSettings]:
    """Parse the whole ``rtml:environments`` mapping; every entry is checked, selected or not."""
    if raw is None:
        raise SettingsError(
            f"cdk.json context is missing required key '{ENVIRONMENTS_CONTEXT_KEY}'"
        )
    if not isinstance(raw, Mapping) or not raw:
        raise SettingsError(
            f"context '{ENVIRONMENTS_CONTEXT_KEY}' must map environment names to settings objects"
        )
    environments: dict[str, EnvSettings] = {}
    for name, entry in raw.items():
        where = f"context '{ENVIRONMENTS_CONTEXT_KEY}.{name}'"
        if not isinstance(entry, Mapping):
            raise SettingsError(f"{where} must be an object, got {type(entry).__name__}")
        try:
            environments[name] = EnvSettings.model_validate({**entry, "name": name})
        except ValidationError as error:
            raise SettingsError(_describe(error, where)) from None
    return environments


def select_environments(
    environments: Mapping[str, EnvSettings], selected: str | None
) -> dict[str, EnvSettings]:
    """Keep the one ``selected`` environment, or all of them when nothing is selected."""
    if selected is None:
        return dict(environments)
    if selected not in environments:
        known = ", ".join(sorted(environments))
        raise SettingsError(
            f"unknown environment '{selected}' (-c {SELECT_CONTEXT_KEY}=...); known: {known}"
        )
    return {selected: environments[selected]}


def load_environments(scope: Construct) -> dict[str, EnvSettings]:
    """The environments to synthesize, read from ``scope``'s context (normally the ``cdk.App``)."""
    environments = parse_environments(scope.node.try_get_context(ENVIRONMENTS_CONTEXT_KEY))
    selected = scope.node.try_get_context(SELECT_CONTEXT_KEY)
    return select_environments(environments, None if selected is None else str(selected))
