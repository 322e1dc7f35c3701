"""The batch scoring job's steps, as plain functions over S3 (and DynamoDB for the latest
score per customer): plan -> partition the history by entity bucket -> terminal stage ->
customer stage (score, write) -> finalize. The Step Functions tasks (batch/handlers.py) are
thin wrappers; tests and ``rtml batch`` can call these directly.

Layout under ``<prefix>`` (default ``batch``) in the data bucket, every key deterministic so
a rerun overwrites and never duplicates:

- ``by_<entity>/n=<buckets>/bucket=<k>/date=<d>/part-00000.parquet``: the history, bucketed
  once per day and bucket count (kept: the next day's run reuses all but one day);
- ``runs/<run id>/terminal/part-<k>.parquet``: the terminal stage's features of the day;
- ``predictions/date=<d>/run=<run id>/part-<k>.parquet``: the scores, one part per chunk;
- ``runs/<run id>/plan.json``, ``runs/<run id>/items/<stage>.json`` (what each Distributed
  Map reads), ``runs/<run id>/chunks/<stage>-<n>.json`` (each task's rows and seconds),
  ``runs/<run id>/manifest.json``, ``runs/<run id>/drift.json``;
- ``quarantine/<source key>``: a source part that could not be read, moved aside (with a
  ``.reason.json`` beside it) so that the failed run names it and a rerun does not trip on it.

The run id is ``<date>-<model version>``: a rerun with the same model overwrites its own
output; a new model writes beside it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from batch.chunks import (
    SECONDS_PER_DAY,
    assemble,
    entity_stage,
    history_days,
    rows_of_day,
    split_by_bucket,
)
from models.contracts import (
    LATEST_SCORES_PK,
    PART_FILE_TEMPLATE,
    TRANSACTIONS_COLUMNS,
    TRANSACTIONS_PREFIX,
)
from models.errors import RtmlError
from models.features.spec import SERVED, EntitySpec
from models.s3_datasets import (
    MalformedPartError,
    day_prefix,
    list_etags,
    list_objects,
    part_key,
    read_days,
    read_table,
    write_part,
)

MAX_BYTES_PER_CHUNK: Final = 64 * 1024 * 1024
"""A chunk reads at most about this much Parquet (~3 million transactions): well within one
Lambda invocation's 15 minutes and a few GB of memory. The plan sets the bucket counts so."""


class JobConfig(BaseModel):
    """Where the job reads and writes."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    transactions_prefix: str = TRANSACTIONS_PREFIX
    prefix: str = "batch"
    threshold: float = Field(default=0.5, ge=0, le=1)
    max_bytes_per_chunk: int = Field(default=MAX_BYTES_PER_CHUNK, ge=1)
    scores_table: str | None = None
    """DynamoDB table of the latest score per customer (None: no write, e.g. a backfill)."""


class Plan(BaseModel):
    """A run's work: what the Step Functions maps iterate over (written to S3: the state
    payload is limited to 256 KB)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    day: date
    model_name: str
    model_version: str
    customer_buckets: int
    terminal_buckets: int
    history_bytes: int
    source_days: int = 0
    """Days of the windows that hold data."""
    backfill: bool = False
    """A backfill writes predictions (a point-in-time feature table) but no latest scores."""
    items: dict[str, str] = Field(default_factory=dict)
    """Stage -> S3 key of its work items (a JSON array: the Distributed Map's ItemReader)."""
    partition_items: list[dict[str, Any]]
    terminal_items: list[dict[str, Any]]
    customer_items: list[dict[str, Any]]


def _entities() -> tuple[EntitySpec, EntitySpec]:
    by_key = {e.key: e for e in SERVED.entities}
    return by_key["CUSTOMER_ID"], by_key["TERMINAL_ID"]


def _days(day: date, back: int) -> list[date]:
    return [day - timedelta(days=k) for k in range(back, -1, -1)]


def _day_bytes(s3: Any, config: JobConfig, day: date) -> int:
    prefix = day_prefix(config.transactions_prefix, day)
    return sum(
        size for key, size in list_objects(s3, config.bucket, prefix) if key.endswith(".parquet")
    )


STAGES: Final = ("partition", "terminal", "customer")
"""The Distributed Maps of a run, in order."""


def plan(
    s3: Any,
    config: JobConfig,
    day: date,
    *,
    model_name: str,
    model_version: str,
    backfill: bool = False,
    execution_arn: str | None = None,
    is_running: Callable[[str], bool] = lambda arn: False,
) -> Plan:
    """Size the run from the source's bytes and list its work items (written to S3).

    The run id's lock is taken first (another execution still running the same run id is a
    :class:`RunInProgressError`), then whatever an earlier attempt of this run id left is
    deleted (its bucket counts may differ), so a rerun can only overwrite, never add.
    """
    customers, terminals = _entities()
    longest = max(history_days(customers), history_days(terminals))
    sizes = {d: _day_bytes(s3, config, d) for d in _days(day, longest)}
    terminal_bytes = sum(sizes.values())
    customer_bytes = sum(
        v for d, v in sizes.items() if d >= day - timedelta(history_days(customers))
    )
    terminal_buckets = max(1, math.ceil(terminal_bytes / config.max_bytes_per_chunk))
    customer_buckets = max(1, math.ceil(customer_bytes / config.max_bytes_per_chunk))
    run_id = f"{day.isoformat()}-{model_version}"
    if execution_arn is not None:
        _acquire(s3, config, run_id, execution_arn, is_running)
    for prefix in _run_outputs(config, run_id, day):
        delete_prefix(s3, config.bucket, prefix)
    # every day of the windows, with data or not: a day emptied since (all its files
    # quarantined or deleted) must clear its bucketed history too (partition_day decides)
    partition_items = [
        {"run_id": run_id, "entity": entity.key, "buckets": n, "day": d.isoformat()}
        for entity, n in ((customers, customer_buckets), (terminals, terminal_buckets))
        for d in _days(day, history_days(entity))
    ]
    result = Plan(
        run_id=run_id,
        day=day,
        model_name=model_name,
        model_version=model_version,
        backfill=backfill,
        items={stage: _run_key(config, run_id, f"items/{stage}.json") for stage in STAGES},
        customer_buckets=customer_buckets,
        terminal_buckets=terminal_buckets,
        history_bytes=terminal_bytes,
        source_days=sum(1 for v in sizes.values() if v),
        partition_items=partition_items,
        terminal_items=[{"run_id": run_id, "bucket": k} for k in range(terminal_buckets)],
        customer_items=[{"run_id": run_id, "bucket": k} for k in range(customer_buckets)],
    )
    for stage in STAGES:
        body = json.dumps(getattr(result, f"{stage}_items")).encode()
        s3.put_object(Bucket=config.bucket, Key=result.items[stage], Body=body)
    s3.put_object(
        Bucket=config.bucket,
        Key=_run_key(config, run_id, "plan.json"),
        Body=result.model_dump_json(indent=2).encode(),
    )
    return result


class RunInProgressError(RtmlError):
    """Another execution is running the same run id (same day and model version)."""


def _acquire(
    s3: Any, config: JobConfig, run_id: str, execution_arn: str, is_running: Callable[[str], bool]
) -> None:
    """Take ``runs/<id>/lock.json`` with S3's conditional writes: created if absent, taken
    over (If-Match its ETag) from an execution that is no longer running, else refused."""
    from botocore.exceptions import ClientError

    key = _run_key(config, run_id, "lock.json")
    body = json.dumps({"execution_arn": execution_arn}).encode()
    conflict = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
    try:
        s3.put_object(Bucket=config.bucket, Key=key, Body=body, IfNoneMatch="*")
        return
    except ClientError as error:
        if error.response["Error"]["Code"] not in conflict:
            raise
    held = s3.get_object(Bucket=config.bucket, Key=key)
    holder = json.loads(held["Body"].read()).get("execution_arn", "")
    if holder != execution_arn and is_running(holder):
        raise RunInProgressError(f"run {run_id} is being run by {holder}")
    try:
        s3.put_object(Bucket=config.bucket, Key=key, Body=body, IfMatch=held["ETag"])
    except ClientError as error:
        if error.response["Error"]["Code"] in conflict:
            raise RunInProgressError(f"run {run_id} was just taken by another execution") from None
        raise


def release(s3: Any, config: JobConfig, run_id: str) -> None:
    s3.delete_object(Bucket=config.bucket, Key=_run_key(config, run_id, "lock.json"))


def _run_outputs(config: JobConfig, run_id: str, day: date) -> list[str]:
    """Every prefix a run id writes under, except its lock."""
    return [
        _run_key(config, run_id, "chunks/"),
        _run_key(config, run_id, "terminal/"),
        _run_key(config, run_id, "items/"),
        _prediction_prefix(config, day, run_id),
        f"{config.prefix}/features/date={day.isoformat()}/run={run_id}/",
    ]


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` (DeleteObjects, 1,000 keys a call)."""
    keys = [key for key, _ in list_objects(s3, bucket, prefix)]
    for start in range(0, len(keys), 1000):
        objects = [{"Key": k} for k in keys[start : start + 1000]]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        if response.get("Errors"):
            raise OSError(f"could not delete under {prefix}: {response['Errors'][:3]}")
    return len(keys)


def record_chunk(
    s3: Any, config: JobConfig, run_id: str, stage: str, name: str, **figures: float
) -> None:
    """One task's figures (rows, seconds), for the manifest's timings; rerun: overwritten."""
    s3.put_object(
        Bucket=config.bucket,
        Key=_run_key(config, run_id, f"chunks/{stage}-{name}.json"),
        Body=json.dumps(figures).encode(),
    )


def backfill_part_key(config: JobConfig, run: Plan, bucket: int) -> str:
    """A backfill chunk's feature-table part (transactions, labels and model inputs)."""
    return (
        f"{config.prefix}/features/date={run.day.isoformat()}/run={run.run_id}/"
        + PART_FILE_TEMPLATE.format(chunk=bucket)
    )


def quarantine_key(config: JobConfig, key: str) -> str:
    return f"{config.prefix}/quarantine/{key}"


def load_plan(s3: Any, config: JobConfig, run_id: str) -> Plan:
    body = s3.get_object(Bucket=config.bucket, Key=_run_key(config, run_id, "plan.json"))["Body"]
    return Plan.model_validate_json(body.read())


def _run_key(config: JobConfig, run_id: str, name: str) -> str:
    return f"{config.prefix}/runs/{run_id}/{name}"


def _bucketed_prefix(config: JobConfig, entity: str, buckets: int, bucket: int) -> str:
    return f"{config.prefix}/by_{entity.lower()}/n={buckets}/bucket={bucket}"


def partition_day(s3: Any, config: JobConfig, entity: str, buckets: int, day: date) -> int:
    """Split one source day by entity bucket; the rows of the day.

    Skipped when the day's source is unchanged since it was last split (a marker holds the
    source parts' keys and ETags), so a daily run splits about one new day, not 38. Every
    bucket is written, empty ones too, so a bucket that lost its rows (a corrected or
    quarantined file) never keeps stale ones.

    A source part that cannot be read is moved to quarantine by the customer split of its
    day only (one writer; the terminal split of the same day, running at the same time,
    reports it without moving it) and the error raised again, naming it: the run fails and
    says which file; nothing is skipped in silence.
    """
    from models.contracts import arrow_schema

    source = [
        (k, e)
        for k, e in list_etags(s3, config.bucket, day_prefix(config.transactions_prefix, day))
        if k.endswith(".parquet")
    ]
    marker_key = f"{config.prefix}/by_{entity.lower()}/n={buckets}/_done/date={day}.json"
    marker = _read_json(s3, config.bucket, marker_key)
    if marker is not None and marker.get("source") == [list(x) for x in source]:
        return int(marker["rows"])
    if marker is None and not source:
        return 0  # nothing there, nothing written before: nothing to clear
    try:
        table = read_days(
            s3, config.bucket, config.transactions_prefix, [day], TRANSACTIONS_COLUMNS
        )
    except MalformedPartError as error:
        if entity != "CUSTOMER_ID":
            raise MalformedPartError(error.key, f"{error.reason}; quarantined by the customer"
                                     " split of its day") from None  # fmt: skip
        target = quarantine_key(config, error.key)
        s3.copy_object(
            Bucket=config.bucket, Key=target, CopySource={"Bucket": config.bucket, "Key": error.key}
        )
        s3.put_object(
            Bucket=config.bucket,
            Key=target + ".reason.json",
            Body=json.dumps({"key": error.key, "reason": error.reason}).encode(),
        )
        s3.delete_object(Bucket=config.bucket, Key=error.key)
        raise MalformedPartError(error.key, f"{error.reason}; moved to {target}") from None
    parts = split_by_bucket(table, entity, buckets)
    empty = arrow_schema(TRANSACTIONS_COLUMNS).empty_table()
    for bucket in range(buckets):
        key = part_key(_bucketed_prefix(config, entity, buckets, bucket), day, 0)
        write_part(s3, config.bucket, key, parts.get(bucket, empty))
    rows = int(table.num_rows)
    body = json.dumps({"source": [list(x) for x in source], "rows": rows}).encode()
    s3.put_object(Bucket=config.bucket, Key=marker_key, Body=body)
    return rows


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _bucket_history(
    s3: Any, config: JobConfig, entity: EntitySpec, *, buckets: int, bucket: int, day: date
) -> Any:
    prefix = _bucketed_prefix(config, entity.key, buckets, bucket)
    return read_days(
        s3, config.bucket, prefix, _days(day, history_days(entity)), TRANSACTIONS_COLUMNS
    )


def _terminal_prefix(config: JobConfig, run: Plan, customer_bucket: int) -> str:
    return _run_key(config, run.run_id, f"terminal/cb={customer_bucket}/")


def terminal_chunk(s3: Any, config: JobConfig, run: Plan, bucket: int) -> int:
    """The terminal features of the day's rows of one terminal bucket, written split by the
    rows' *customer* bucket, so each customer chunk reads only its own rows' terminal
    features (bytes per chunk: the day's volume / the buckets); rows written."""
    _, terminals = _entities()
    history = _bucket_history(
        s3, config, terminals, buckets=run.terminal_buckets, bucket=bucket, day=run.day
    )
    start = _day_start(run.day)
    features = entity_stage(history, terminals, start, start + SECONDS_PER_DAY)
    day_rows = rows_of_day(history, start)
    if not features.column("TRANSACTION_ID").equals(day_rows.column("TRANSACTION_ID")):
        raise AssertionError("terminal stage rows are not the day's rows in order")
    features = features.append_column("CUSTOMER_ID", day_rows.column("CUSTOMER_ID"))
    for customer_bucket, part in split_by_bucket(
        features, "CUSTOMER_ID", run.customer_buckets
    ).items():
        key = _terminal_prefix(config, run, customer_bucket) + PART_FILE_TEMPLATE.format(
            chunk=bucket
        )
        write_part(s3, config.bucket, key, part.drop_columns(["CUSTOMER_ID"]))
    return int(features.num_rows)


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def customer_chunk(
    s3: Any,
    config: JobConfig,
    run: Plan,
    bucket: int,
    *,
    model: Any,
    dynamodb: Any = None,
    timings: dict[str, float] | None = None,
) -> int:
    """Score the day's rows of one customer bucket: features (customer stage + the terminal
    stage's output for these rows), the run's model, predictions written as Parquet (and the
    latest score per customer, when configured); the rows scored. ``timings`` gets the
    seconds spent reading, computing features, scoring and writing."""
    import numpy as np
    import pyarrow as pa

    clock = _Clock(timings)
    customers, _ = _entities()
    history = _bucket_history(
        s3, config, customers, buckets=run.customer_buckets, bucket=bucket, day=run.day
    )
    start = _day_start(run.day)
    day_rows = rows_of_day(history, start)
    key = part_key(f"{config.prefix}/predictions", run.day, bucket).replace(
        f"/{PART_FILE_TEMPLATE.format(chunk=bucket)}",
        f"/run={run.run_id}/{PART_FILE_TEMPLATE.format(chunk=bucket)}",
    )
    if day_rows.num_rows == 0:
        write_part(s3, config.bucket, key, _empty_predictions(model))
        return 0
    terminal_keys = list_objects(s3, config.bucket, _terminal_prefix(config, run, bucket))
    terminal_features = pa.concat_tables(
        [read_table(s3, config.bucket, k) for k, _ in terminal_keys]
    )
    clock.lap("read")
    customer_features = entity_stage(history, customers, start, start + SECONDS_PER_DAY)
    features = assemble(day_rows, [customer_features, terminal_features], SERVED)
    names = list(model.manifest.feature_names)
    rows = np.column_stack([features[n].astype(np.float64) for n in names])
    clock.lap("features")
    scores = score_rows(model, rows)
    clock.lap("score")
    table = pa.table(
        {
            "TRANSACTION_ID": day_rows.column("TRANSACTION_ID"),
            "TX_DATETIME": day_rows.column("TX_DATETIME"),
            "CUSTOMER_ID": day_rows.column("CUSTOMER_ID"),
            "TERMINAL_ID": day_rows.column("TERMINAL_ID"),
            **{n: pa.array(features[n].astype(np.float64)) for n in names},
            "SCORE": pa.array(scores),
            "DECISION": pa.array(np.where(scores >= config.threshold, "high_risk", "low_risk")),
            "MODEL_VERSION": pa.array([run.model_version] * len(scores)),
            "RUN_ID": pa.array([run.run_id] * len(scores)),
        }
    )
    write_part(s3, config.bucket, key, table)
    if run.backfill:  # the point-in-time feature table `rtml batch backfill --out` collects
        from models.features.table import feature_table

        write_part(s3, config.bucket, backfill_part_key(config, run, bucket),
                   feature_table(day_rows, features, SERVED))  # fmt: skip
    clock.lap("write")
    if config.scores_table and dynamodb is not None and not run.backfill:
        _write_latest(dynamodb, config.scores_table, table, run)
        clock.lap("latest_scores")
    return int(table.num_rows)


class _Clock:
    """Seconds per step into a dict (or nowhere)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        if self.into is not None:
            self.into[step] = round(self.into.get(step, 0.0) + now - self.last, 4)
        self.last = now


def score_rows(model: Any, rows: Any) -> Any:
    """The model's scores of a float64 matrix: the numpy batch scorer (the lean scorer's exact
    results, vectorized), built once per model version."""
    import numpy as np

    scorer = _batch_scorer(model)
    return np.asarray(scorer.score_matrix(rows), dtype=np.float64)


_BATCH_SCORERS: dict[str, Any] = {}


def _batch_scorer(model: Any) -> Any:
    from models.batch_scorer import load_batch_scorer

    key = f"{model.name}-{model.version}-{model.path}"
    if key not in _BATCH_SCORERS:
        _BATCH_SCORERS[key] = load_batch_scorer(model)
    return _BATCH_SCORERS[key]


def _empty_predictions(model: Any) -> Any:
    import pyarrow as pa

    names = list(model.manifest.feature_names)
    return pa.table(
        {
            "TRANSACTION_ID": pa.array([], pa.int64()),
            **{n: pa.array([], pa.float64()) for n in names},
            "SCORE": pa.array([], pa.float64()),
        }
    )


def _write_latest(dynamodb: Any, table_name: str, table: Any, run: Plan) -> int:
    """The last score of each customer that day, BatchWriteItem in 25s (unprocessed retried),
    except where the table already holds a later transaction's score (a run of an older day,
    or a late rerun, never moves a customer back in time); the items written.

    BatchWriteItem takes no condition, so the stored times are read first (BatchGetItem,
    100 keys a call): two runs of *different* days writing the same customer at the same
    moment could still race; runs of one day cannot (the run lock)."""
    import time as _time

    from models.dynamodb_batch import batch_get, batch_put

    latest: dict[int, tuple[str, float, int]] = {}
    for tx, customer, at, score in zip(
        table.column("TRANSACTION_ID").to_pylist(),
        table.column("CUSTOMER_ID").to_pylist(),
        table.column("TX_DATETIME").to_pylist(),
        table.column("SCORE").to_pylist(),
        strict=True,
    ):
        stamp = at.isoformat()
        if customer not in latest or stamp >= latest[customer][0]:
            latest[customer] = (stamp, score, tx)
    items = [
        {
            LATEST_SCORES_PK: {"N": str(customer)},
            "score": {"N": repr(score)},
            "transaction_id": {"N": str(tx)},
            "tx_datetime": {"S": stamp},
            "day": {"S": run.day.isoformat()},
            "run_id": {"S": run.run_id},
            "model_version": {"S": run.model_version},
        }
        for customer, (stamp, score, tx) in sorted(latest.items())
    ]
    stored = batch_get(
        dynamodb, table_name, [{LATEST_SCORES_PK: i[LATEST_SCORES_PK]} for i in items],
        consistent=True, projection=f"{LATEST_SCORES_PK}, tx_datetime", give_up=RuntimeError,
        sleep=_time.sleep,
    )  # fmt: skip
    newer = {i[LATEST_SCORES_PK]["N"]: i["tx_datetime"]["S"] for i in stored if "tx_datetime" in i}
    items = [i for i in items if newer.get(i[LATEST_SCORES_PK]["N"], "") <= i["tx_datetime"]["S"]]
    for start in range(0, len(items), 25):
        batch_put(
            dynamodb, table_name, items[start : start + 25], give_up=RuntimeError, sleep=_time.sleep
        )
    return len(items)


@dataclass(frozen=True)
class RunResult:
    manifest: dict[str, Any]
    drift: dict[str, Any]


DAY_DETERMINED: Final = ("TX_DURING_WEEKEND",)
"""Inputs with one value for every transaction of a day: a daily run's PSI of them measures
the calendar, not drift (every weekday would alarm), so they are reported but never alarm."""

LABEL_DELAY_DAYS: Final = 7
"""Labels of a day are known this many days later (the handbook's delay)."""


def _prediction_prefix(config: JobConfig, day: date, run_id: str) -> str:
    return f"{config.prefix}/predictions/date={day.isoformat()}/run={run_id}/"


def _read_predictions(s3: Any, config: JobConfig, day: date, run_id: str) -> tuple[list[str], Any]:
    import pyarrow as pa

    keys = [k for k, _ in list_objects(s3, config.bucket, _prediction_prefix(config, day, run_id))]
    tables = [read_table(s3, config.bucket, k) for k in keys]
    return keys, (pa.concat_tables(tables, promote_options="default") if tables else None)


def _timings(s3: Any, config: JobConfig, run_id: str) -> dict[str, dict[str, float]]:
    """Per stage: tasks, rows, summed and slowest task seconds (from the tasks' records)."""
    found: dict[str, dict[str, float]] = {}
    for key, _ in list_objects(s3, config.bucket, _run_key(config, run_id, "chunks/")):
        stage = key.rsplit("/", 1)[1].split("-", 1)[0]
        figures = json.loads(s3.get_object(Bucket=config.bucket, Key=key)["Body"].read())
        entry = found.setdefault(stage, {"tasks": 0, "rows": 0, "seconds": 0.0, "slowest": 0.0})
        entry["tasks"] += 1
        entry["rows"] += figures.get("rows", 0)
        entry["seconds"] = round(entry["seconds"] + figures.get("seconds", 0.0), 3)
        entry["slowest"] = max(entry["slowest"], figures.get("seconds", 0.0))
        for step, value in figures.items():
            if step not in ("rows", "seconds"):
                entry[step] = round(entry.get(step, 0.0) + value, 4)
    return found


def labelled_day_metrics(s3: Any, config: JobConfig, run: Plan) -> dict[str, Any] | None:
    """AUC, AP and CP@100 of the same model's predictions for the day whose labels are now
    known (the run's day minus the label delay), joined with the source's TX_FRAUD; None when
    that day was not scored by this model version or has no fraud to rank."""
    import numpy as np

    from models.evaluation import evaluate

    day = run.day - timedelta(days=LABEL_DELAY_DAYS)
    _, predictions = _read_predictions(s3, config, day, f"{day.isoformat()}-{run.model_version}")
    if predictions is None or predictions.num_rows == 0:
        return None
    source = read_days(s3, config.bucket, config.transactions_prefix, [day], TRANSACTIONS_COLUMNS)
    labels = dict(
        zip(source.column("TRANSACTION_ID").to_pylist(), source.column("TX_FRAUD").to_pylist(),
            strict=True)
    )  # fmt: skip
    ids = predictions.column("TRANSACTION_ID").to_pylist()
    known = [i for i, tx in enumerate(ids) if tx in labels]
    y = np.array([labels[ids[i]] for i in known], dtype=np.int64)
    if len(known) == 0 or int(y.sum()) in (0, len(known)):
        return None
    scores = predictions.column("SCORE").to_numpy()[known]
    days = np.full(len(known), np.datetime64(day.isoformat()))
    cards = predictions.column("CUSTOMER_ID").to_numpy()[known]
    metrics = evaluate(y, scores, days, cards)
    return {"day": day.isoformat(), "rows": len(known), "frauds": int(y.sum()),
            **metrics.model_dump()}  # fmt: skip


def finalize(
    s3: Any, config: JobConfig, run: Plan, model: Any, *, timings: dict[str, float] | None = None
) -> RunResult:
    """The run's manifest (inputs, counts, model, timings, quarantined inputs, the labelled
    day's metrics) and drift report, written to S3."""
    from models.monitoring import drift_report

    keys, predictions = _read_predictions(s3, config, run.day, run.run_id)
    rows = 0 if predictions is None else predictions.num_rows
    names = list(model.manifest.feature_names)
    drift: dict[str, Any] = {}
    high_risk, max_psi = 0, 0.0
    if predictions is not None and rows:
        report = drift_report(
            model.manifest.reference,
            {n: predictions.column(n).to_numpy() for n in names},
            predictions.column("SCORE").to_numpy(),
            threshold=config.threshold,
            not_alarmed=DAY_DETERMINED,
        )
        drift = report.model_dump(mode="json")
        max_psi = report.max_psi
        high_risk = sum(1 for d in predictions.column("DECISION").to_pylist() if d == "high_risk")
    quarantined = [
        k.removeprefix(f"{config.prefix}/quarantine/")
        for k, _ in list_objects(s3, config.bucket, f"{config.prefix}/quarantine/")
        if not k.endswith(".reason.json")
    ]
    manifest = {
        "run_id": run.run_id,
        "day": run.day.isoformat(),
        "backfill": run.backfill,
        "model": {"name": run.model_name, "version": run.model_version},
        "buckets": {"customer": run.customer_buckets, "terminal": run.terminal_buckets},
        "inputs": {
            "history_bytes": run.history_bytes,
            "source_days": run.source_days,
            "quarantined": [k for k in quarantined if _in_days(k, run)],
        },
        "outputs": {"predictions": keys, "rows": rows},
        # a tolerated customer-chunk failure leaves a bucket unscored: said here, not hidden
        "missing_buckets": sorted(set(range(run.customer_buckets)) - _buckets_of(keys)),
        "high_risk": high_risk,
        "max_psi": max_psi,
        "drift_alarms": drift.get("alarms", []),
        "labelled_day": labelled_day_metrics(s3, config, run),
        "timings_seconds": {**_timings(s3, config, run.run_id), **(timings or {})},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    s3.put_object(
        Bucket=config.bucket,
        Key=_run_key(config, run.run_id, "manifest.json"),
        Body=json.dumps(manifest, indent=2).encode(),
    )
    s3.put_object(
        Bucket=config.bucket,
        Key=_run_key(config, run.run_id, "drift.json"),
        Body=json.dumps(drift, indent=2).encode(),
    )
    release(s3, config, run.run_id)
    return RunResult(manifest, drift)


def _buckets_of(keys: list[str]) -> set[int]:
    """Customer buckets of prediction part keys (``.../part-<bucket>.parquet``)."""
    return {int(k.rsplit("part-", 1)[1].split(".")[0]) for k in keys}


def _in_days(key: str, run: Plan) -> bool:
    """Whether a source key belongs to one of the days the run reads."""
    return any(f"date={i['day']}/" in key for i in run.partition_items) or (
        f"date={run.day.isoformat()}/" in key
    )


def load_manifest(s3: Any, config: JobConfig, run_id: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=config.bucket, Key=_run_key(config, run_id, "manifest.json"))
    result: dict[str, Any] = json.loads(body["Body"].read())
    return result


def run_task(
    s3: Any,
    config: JobConfig,
    run: Plan,
    stage: str,
    item: dict[str, Any],
    *,
    model: Any = None,
    dynamodb: Any = None,
) -> dict[str, Any]:
    """One work item of a stage (what one Distributed Map iteration runs), recorded for the
    manifest's timings: {rows, seconds}."""
    started = time.perf_counter()
    steps: dict[str, float] = {}
    if stage == "partition":
        rows = partition_day(s3, config, item["entity"], int(item["buckets"]),
                             date.fromisoformat(item["day"]))  # fmt: skip
        name = f"{item['entity'].lower()}-{item['day']}"
    elif stage == "terminal":
        rows, name = terminal_chunk(s3, config, run, int(item["bucket"])), str(item["bucket"])
    elif stage == "customer":
        rows = customer_chunk(s3, config, run, int(item["bucket"]), model=model,
                              dynamodb=dynamodb, timings=steps)  # fmt: skip
        name = str(item["bucket"])
    else:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    seconds = round(time.perf_counter() - started, 3)
    record_chunk(s3, config, run.run_id, stage, name, rows=rows, seconds=seconds, **steps)
    return {"rows": rows, "seconds": seconds, **steps}


def run_locally(
    s3: Any,
    config: JobConfig,
    day: date,
    model: Any,
    *,
    dynamodb: Any = None,
    backfill: bool = False,
) -> RunResult:
    """Every step in this process, in the state machine's order (tests, debugging)."""
    started = time.perf_counter()
    run = plan(s3, config, day, model_name=model.name, model_version=model.version,
               backfill=backfill)  # fmt: skip
    timings = {"plan": round(time.perf_counter() - started, 3)}
    for stage in STAGES:
        for item in getattr(run, f"{stage}_items"):
            run_task(s3, config, run, stage, item, model=model, dynamodb=dynamodb)
    return finalize(s3, config, run, model, timings=timings)
