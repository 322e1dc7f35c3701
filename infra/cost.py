"""What a deployment costs a month, per path, from published prices and measured figures.

``rtml cost --tps N [--api-rps M] [--batch-rows R]``. Prices: ``infra/prices-us-east-1.json``
(dated, on-demand list prices, one file). Work per record: ``bench/measured.json`` (DynamoDB
units, Lambda time a record, measured on this machine against stand-ins with 10 ms a call;
``make bench`` refreshes it from the benchmarks), so a user can plan past one machine; the
shape of the deployment (memory, batch size, stream mode, TTLs): the environment's settings.
Every assumption the model makes beyond those is a named constant below, listed in the README.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from infra.settings import EnvSettings

ROOT: Final = Path(__file__).resolve().parents[1]
PRICES: Final = Path(__file__).with_name("prices-us-east-1.json")
HOURS_PER_MONTH: Final = 730
SECONDS_PER_MONTH: Final = HOURS_PER_MONTH * 3600

# --- assumptions (the README lists them) ---------------------------------------------------
RECORD_KB: Final = 1
"""A transaction on the wire is ~200 bytes of JSON; Kinesis bills each record rounded up to
1 KB (on-demand) and 25 KB payload units (provisioned)."""
ARCHIVE_BYTES_PER_RECORD: Final = 912
"""An archive JSON line (a prediction with its 15 inputs), measured on the book's data."""
HIGH_RISK_SHARE: Final = 0.01
"""Alerts (EventBridge events) per transaction: about the book's high-risk share."""
LOG_BYTES_PER_INVOCATION: Final = 1_500
"""START/END/REPORT lines, one Powertools line and the EMF metrics of an invocation."""
AWS_CALL_MS: Final = 10.0
"""The benchmarks' latency of one AWS call (DynamoDB, S3) from Lambda."""
POLLS_PER_SECOND: Final = 1.0
"""Lambda polls each shard about once a second; with no batching window a batch holds what
arrived since (so at low rates batches are small and invocations many)."""
DYNAMODB_ITEM_OVERHEAD: Final = 100
"""Bytes DynamoDB adds to each item for its storage bill (indexes aside)."""
ON_DEMAND_START_SHARDS: Final = 4
"""An on-demand stream starts with 4 MB/s (4 shards) of write capacity and grows with use."""
SHARD_RECORDS_PER_SECOND: Final = 1_000
FULL_VCPU_MB: Final = 1_769
"""Lambda memory at which a function gets one full vCPU; below it, CPU time stretches."""
CUSTOMERS_PER_BATCH_ROW: Final = 0.52
"""Distinct customers a day per transaction (the book: ~5,000 of its 9,500 a day)."""
EMF_METRICS: Final = 60
"""Custom metric series (name and dimensions) the functions publish."""


MEASURED: Final = ROOT / "bench" / "measured.json"
"""The work per record the cost model uses (committed; ``make bench`` refreshes it)."""


@dataclass(frozen=True)
class Measured:
    """Work per record from the benchmarks, with where each figure came from."""

    stream_wall_ms_per_batch: float
    stream_batch: int
    stream_cpu_us_per_record: float
    stream_write_units: float
    stream_read_units: float
    api_in_process_ms: float
    batch_seconds_per_row: float
    prediction_item_bytes: int
    sources: tuple[str, ...] = field(default=())

    @classmethod
    def load(cls, path: Path = MEASURED) -> Measured:
        data = json.loads(path.read_text())
        return cls(**{**data, "sources": tuple(data.get("sources", ()))})

    def save(self, path: Path = MEASURED) -> None:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        path.write_text(json.dumps({**data, "sources": list(self.sources)}, indent=2) + "\n")

    @classmethod
    def from_results(cls, root: Path = ROOT / "bench", base: Measured | None = None) -> Measured:
        """The figures of the benchmarks' latest results (``bench/*_results.json``, written
        by ``python -m bench.stream``, ``bench.api``, ``bench.batch``, ``bench.state_store``);
        a benchmark not run keeps ``base``'s (the committed) figures."""
        figures = {k: getattr(base, k) for k in cls.__dataclass_fields__} if base else {}
        # "bench/<file> (<date measured>)", by file: a new run replaces its file's entry
        sources = {label.split(" ")[0]: label for label in (base.sources if base else ())}

        def load(name: str) -> Any:
            path = root / name
            if not path.exists():
                return None
            measured = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            sources[f"bench/{name}"] = f"bench/{name} ({measured:%Y-%m-%d})"
            return json.loads(path.read_text())

        if stream := load("stream_results.json"):
            latency, cpu = stream["latency"], stream["no_latency"]
            figures.update(
                stream_wall_ms_per_batch=latency["wall_ms_p50"], stream_batch=latency["batch"],
                stream_cpu_us_per_record=cpu["cpu_us_per_record"] - cpu["fake_cpu_us_per_record"],
                stream_write_units=latency["state_write_units_per_record"]
                + latency["prediction_write_units_per_record"],
                stream_read_units=latency["state_read_units_per_record"],
            )  # fmt: skip
        if api := load("api_results.json"):
            figures["api_in_process_ms"] = api["in_process"]["p50_us"] / 1000
        if batch := load("batch_results.json"):
            stages = batch["stage_seconds"]
            figures["batch_seconds_per_row"] = (stages["terminal"] + stages["customer"]) / batch[
                "rows"
            ]
        if state := load("state_store_results.json"):
            figures["prediction_item_bytes"] = int(state["prediction_item_bytes"])
        missing = set(cls.__dataclass_fields__) - {"sources"} - set(figures)
        if missing:
            raise FileNotFoundError(f"no benchmark result for {sorted(missing)}: run make bench")
        return cls(**{**figures, "sources": tuple(sources.values())})


@dataclass(frozen=True)
class Line:
    """One priced item: what, how many a month, the unit price's name, the monthly cost."""

    item: str
    quantity: float
    unit: str
    usd: float


@dataclass
class PathCost:
    """One serving path's resources and its lines of cost."""

    path: str
    scored_per_month: float
    resources: dict[str, float | str] = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def usd_per_million(self) -> float | None:
        return None if not self.scored_per_month else self.usd / self.scored_per_month * 1e6


class Prices:
    def __init__(self, path: Path = PRICES) -> None:
        data = json.loads(path.read_text())
        self.as_of: str = data["as_of"]
        self.region: str = data["region"]
        self._usd = {name: float(p["usd"]) for name, p in data["prices"].items()}

    def line(self, item: str, quantity: float, unit: str) -> Line:
        return Line(item, quantity, unit, quantity * self._usd[unit])


def _lambda_lines(
    prices: Prices, settings: EnvSettings, what: str, *, invocations: float, seconds: float,
    memory_mb: int,
) -> list[Line]:  # fmt: skip
    arch = settings.functions.architecture
    gb_seconds = invocations * seconds * memory_mb / 1024
    lines = [
        prices.line(f"{what}: Lambda requests", invocations, "lambda_request"),
        prices.line(f"{what}: Lambda GB-seconds ({arch})", gb_seconds,
                    f"lambda_gb_second_{arch}"),
        prices.line(f"{what}: CloudWatch Logs GB", invocations * LOG_BYTES_PER_INVOCATION / 1e9,
                    "cloudwatch_logs_gb_in"),
    ]  # fmt: skip
    if settings.functions.tracing:  # the first request a second, then 5% (Lambda's sampling)
        per_second = invocations / SECONDS_PER_MONTH
        traces = (min(per_second, 1.0) + 0.05 * max(per_second - 1.0, 0.0)) * SECONDS_PER_MONTH
        lines.append(prices.line(f"{what}: X-Ray traces", traces, "xray_trace"))
    return lines


def _cpu_stretch(memory_mb: int) -> float:
    """How much longer CPU work takes below a full vCPU (Lambda's share grows with memory)."""
    return max(1.0, FULL_VCPU_MB / memory_mb)


def stream_cost(prices: Prices, settings: EnvSettings, measured: Measured, tps: float) -> PathCost:
    """Kinesis, the scorer, its DynamoDB state and predictions, the archive, the alerts."""
    s = settings.stream
    records = tps * SECONDS_PER_MONTH
    cost = PathCost("stream", records)
    needed = max(1, math.ceil(tps * RECORD_KB / 1024), math.ceil(tps / SHARD_RECORDS_PER_SECOND))
    extended_hours = max(0, s.stream_retention_hours - 24)  # past the first day
    if s.stream_mode == "on_demand":
        shards = max(ON_DEMAND_START_SHARDS, needed)
        gb = records * RECORD_KB / 1024**2
        if extended_hours:  # the GB held past the first day, on average over the month
            held = gb / HOURS_PER_MONTH * extended_hours
            what = f"Kinesis extended retention ({s.stream_retention_hours} h, GB-month)"
            unit = "kinesis_on_demand_extended_retention_gb_month"
            cost.lines.append(prices.line(what, held, unit))
        cost.lines += [
            prices.line("Kinesis on-demand stream-hours (transactions, labels)",
                        2 * HOURS_PER_MONTH, "kinesis_on_demand_stream_hour"),
            prices.line("Kinesis data in (GB)", gb, "kinesis_on_demand_gb_in"),
            prices.line("Kinesis data out, the scorer's reads (GB)", gb,
                        "kinesis_on_demand_gb_out"),
        ]  # fmt: skip
    else:
        shards = int(s.shards or needed)
        if shards < needed:
            cost.resources["warning"] = (
                f"{shards} shards carry {shards * 1000} records/s; {tps:g} asked"
            )
        if extended_hours:
            what = f"Kinesis extended retention ({s.stream_retention_hours} h, shard-hours)"
            unit = "kinesis_extended_retention_shard_hour"
            cost.lines.append(prices.line(what, (shards + 1) * HOURS_PER_MONTH, unit))
        cost.lines += [
            prices.line("Kinesis shard-hours (transactions + 1 for labels)",
                        (shards + 1) * HOURS_PER_MONTH, "kinesis_shard_hour"),
            prices.line("Kinesis PUT payload units", records, "kinesis_put_payload_unit"),
        ]  # fmt: skip
    # a batch holds what a shard received since the last poll, or over the batching window,
    # shared among the shard's concurrent batches (the parallelization factor)
    per_poll = tps / shards * max(1 / POLLS_PER_SECOND, float(s.batching_window_seconds))
    per_poll /= s.parallelization_factor
    batch = max(1.0, min(float(s.batch_size), per_poll))
    invocations = records / batch
    # the benchmark's batch: its AWS round trips (wall minus CPU) stay; the CPU scales
    rounds_ms = max(0.0, measured.stream_wall_ms_per_batch
                    - measured.stream_cpu_us_per_record * measured.stream_batch / 1000)  # fmt: skip
    seconds = (rounds_ms + measured.stream_cpu_us_per_record * batch / 1000
               * _cpu_stretch(s.memory_mb)) / 1000  # fmt: skip
    concurrency = min(invocations / SECONDS_PER_MONTH * seconds, shards * s.parallelization_factor)
    cost.resources.update({
        "shards": shards, "records per invocation": round(batch, 1),
        "invocations a month": invocations, "seconds an invocation": round(seconds, 4),
        "concurrency": round(max(concurrency, 0.0), 2),
        "write units a record": round(measured.stream_write_units, 3),
        "read units a record": round(measured.stream_read_units, 3),
    })  # fmt: skip
    cost.lines += _lambda_lines(prices, settings, "scorer", invocations=invocations,
                                seconds=seconds, memory_mb=s.memory_mb)  # fmt: skip
    # DynamoDB bills storage on the item's bytes plus 100 bytes of overhead an item
    stored_gb = (tps * 86_400 * s.prediction_ttl_days
                 * (measured.prediction_item_bytes + DYNAMODB_ITEM_OVERHEAD) / 1e9)  # fmt: skip
    cost.lines += [
        prices.line("DynamoDB write units (state, prediction)",
                    records * measured.stream_write_units, "dynamodb_write_request_unit"),
        prices.line("DynamoDB read units (state)", records * measured.stream_read_units,
                    "dynamodb_read_request_unit"),
        prices.line(f"DynamoDB predictions kept ({s.prediction_ttl_days}-day TTL, steady GB)",
                    stored_gb, "dynamodb_gb_month"),
        prices.line("DynamoDB point-in-time recovery of them (GB)", stored_gb,
                    "dynamodb_pitr_gb_month"),
        prices.line("S3 archive PUTs (one object a batch)", invocations, "s3_put"),
        prices.line("S3 archive, a month's lines (storage grows by this every month, GB)",
                    records * ARCHIVE_BYTES_PER_RECORD / 1e9, "s3_gb_month"),
        prices.line("EventBridge alerts (high-risk decisions)", records * HIGH_RISK_SHARE,
                    "eventbridge_event"),
    ]  # fmt: skip
    return cost


def api_cost(prices: Prices, settings: EnvSettings, measured: Measured, rps: float) -> PathCost:
    """API Gateway, the predictor (one state read round, one prediction write)."""
    a = settings.api
    requests = rps * SECONDS_PER_MONTH
    cost = PathCost("api", requests)
    seconds = (measured.api_in_process_ms * _cpu_stretch(a.memory_mb) + 2 * AWS_CALL_MS) / 1000
    billed = math.ceil(seconds * 1000) / 1000  # Lambda bills whole milliseconds
    cost.resources.update({"requests a month": requests, "seconds an invocation": billed,
                           "concurrency": round(rps * billed, 2)})  # fmt: skip
    cost.lines += [prices.line("API Gateway REST requests", requests, "api_gateway_rest_request")]
    cost.lines += _lambda_lines(prices, settings, "predictor", invocations=requests,
                                seconds=billed, memory_mb=a.memory_mb)  # fmt: skip
    cost.lines += [
        # the same two items as the stream's strongly consistent read, eventually consistent
        prices.line("DynamoDB read units (state, eventually consistent)",
                    requests * measured.stream_read_units / 2, "dynamodb_read_request_unit"),
        prices.line("DynamoDB write units (the prediction, when it has an id)", requests,
                    "dynamodb_write_request_unit"),
    ]  # fmt: skip
    return cost


def batch_cost(
    prices: Prices, settings: EnvSettings, measured: Measured, rows_per_day: float
) -> PathCost:
    """The daily Step Functions run (its task functions, transitions, reads and writes)."""
    b = settings.batch
    rows = rows_per_day * 30.4
    cost = PathCost("batch", rows)
    chunk_rows = max(1.0, b.max_bytes_per_chunk / 200)  # ~200 bytes of Parquet a row
    chunks = max(1, math.ceil(rows_per_day * 30 / chunk_rows))  # a chunk reads 30 days
    task_seconds = rows_per_day * measured.batch_seconds_per_row * _cpu_stretch(b.memory_mb)
    invocations = 30.4 * (2 + 3 * chunks)  # plan, finalize, and a chunk per stage
    customers = rows * CUSTOMERS_PER_BATCH_ROW
    cost.resources.update({"chunks a stage": chunks, "task seconds a run": round(task_seconds, 1),
                           "runs a month": 30.4})  # fmt: skip
    cost.lines += _lambda_lines(prices, settings, "batch tasks", invocations=invocations,
                                seconds=task_seconds * 30.4 / invocations,
                                memory_mb=b.memory_mb)  # fmt: skip
    cost.lines += [
        prices.line("Step Functions transitions", 30.4 * (6 + 3 * chunks * 3),
                    "step_functions_transition"),
        prices.line("S3 GETs (30 days a chunk)", 30.4 * 3 * chunks * 38, "s3_get"),
        prices.line("S3 PUTs (splits, features, predictions)", 30.4 * 3 * chunks * 4, "s3_put"),
        prices.line("DynamoDB write units (latest score a customer)", customers,
                    "dynamodb_write_request_unit"),
        prices.line("DynamoDB read units (their stored times)", customers / 2,
                    "dynamodb_read_request_unit"),
        prices.line("Scheduler invocations (batch, monitor daily and hourly)", 30.4 * 26,
                    "scheduler_invocation"),
    ]  # fmt: skip
    return cost


def fixed_cost(prices: Prices, settings: EnvSettings, alarms: int) -> PathCost:
    """What the stage costs with no traffic: alarms, the dashboard, metrics, the key."""
    cost = PathCost("fixed", 0.0)
    runs = 30.4 * 25  # daily ~60 s, hourly ~20 s at the book's scale
    cost.lines += _lambda_lines(prices, settings, "monitor", invocations=runs,
                                seconds=30.4 * (60 + 24 * 20) / runs,
                                memory_mb=settings.monitor.memory_mb)  # fmt: skip
    cost.lines += [
        prices.line("CloudWatch alarms", alarms, "cloudwatch_alarm_month"),
        prices.line("CloudWatch dashboard", 1, "cloudwatch_dashboard_month"),
        prices.line("CloudWatch custom metrics (EMF)", EMF_METRICS, "cloudwatch_metric_month"),
        prices.line("KMS key (alarm topic)", 1, "kms_key_month"),
    ]
    return cost


@dataclass
class CostReport:
    prices_as_of: str
    region: str
    environment: str
    paths: list[PathCost]
    sources: tuple[str, ...]

    @property
    def usd(self) -> float:
        return sum(p.usd for p in self.paths)

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region, "prices_as_of": self.prices_as_of,
            "environment": self.environment, "usd_a_month": round(self.usd, 2),
            "measured": list(self.sources),
            "paths": [{
                "path": p.path, "usd_a_month": round(p.usd, 2),
                "usd_per_million_scored": None if p.usd_per_million is None
                else round(p.usd_per_million, 3),
                "scored_a_month": p.scored_per_month, "resources": p.resources,
                "lines": [{"item": ln.item, "quantity": ln.quantity, "unit": ln.unit,
                           "usd": round(ln.usd, 4)} for ln in p.lines],
            } for p in self.paths],
        }  # fmt: skip


def estimate(
    settings: EnvSettings,
    *,
    tps: float,
    api_rps: float = 0.0,
    batch_rows: float = 0.0,
    alarms: int = 24,
    measured: Measured | None = None,
    prices: Prices | None = None,
) -> CostReport:
    """The monthly cost of ``settings`` at a steady ``tps`` (stream), ``api_rps`` and
    ``batch_rows`` a day."""
    if tps < 0 or api_rps < 0 or batch_rows < 0:
        raise ValueError("tps, api_rps and batch_rows must be >= 0")
    work = measured or Measured.load()
    price = prices or Prices()
    paths = [stream_cost(price, settings, work, tps)] if tps else []
    if api_rps:
        paths.append(api_cost(price, settings, work, api_rps))
    if batch_rows:
        paths.append(batch_cost(price, settings, work, batch_rows))
    paths.append(fixed_cost(price, settings, alarms))
    return CostReport(price.as_of, price.region, settings.name, paths, work.sources)
