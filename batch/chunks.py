"""How the batch job splits a day into chunks whose features stay exact and whose reads stay
bounded as data grows.

A customer's features need only that customer's history (30 days); a terminal's need only
that terminal's (30 days of windows + the 7-day label delay). A chunk of customers by time
would still need every terminal's history, so the job runs two stages over **entity
buckets** (a stable hash of the id):

1. terminal stage, one chunk per terminal bucket: read that bucket's history (37 days + the
   day), compute the terminal features of the day's rows, write them keyed by transaction;
2. customer stage, one chunk per customer bucket: read that bucket's history (30 days + the
   day), compute the customer features, join the terminal features of its rows, score.

The history is kept bucketed once per day (``by_<entity>/bucket=<k>/date=<d>``), so a chunk
reads ``window_days x daily_volume / buckets`` bytes: linear in the window and the volume,
divided by the bucket count, which the plan raises with the volume (at 100x the book, 100x
the buckets and the same bytes per chunk). Nothing ever reads the whole 37-day history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.features.offline import (
    calendar_features,
    entity_features,
    epoch_seconds,
    ratio_features,
)
from models.features.spec import BASELINE, EntitySpec, FeatureSpec

SECONDS_PER_DAY: Final = 86_400
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(ids: npt.ArrayLike, buckets: int) -> npt.NDArray[np.int64]:
    """A stable bucket per id (Fibonacci hashing of the 64-bit id): the same on every host,
    process and run, and spread evenly even for consecutive ids."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, not {buckets}")
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = x * _GOLDEN  # modulo 2**64
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


def split_by_bucket(table: pa.Table, key: str, buckets: int) -> dict[int, pa.Table]:
    """The rows of ``table`` per bucket of its ``key`` column (empty buckets left out)."""
    which = bucket_of(table.column(key).to_numpy(), buckets)
    return {int(b): table.filter(pa.array(which == b)) for b in np.unique(which)}


def history_days(entity: EntitySpec) -> int:
    """Whole days of history before the scored day that ``entity``'s windows can reach."""
    return -(-entity.horizon_seconds // SECONDS_PER_DAY)


def _seconds(table: pa.Table) -> npt.NDArray[np.int64]:
    return epoch_seconds(table.column("TX_DATETIME").to_numpy())


def entity_stage(history: pa.Table, entity: EntitySpec, day_start: int, day_end: int) -> pa.Table:
    """The ``entity`` features of the rows dated in [day_start, day_end), keyed by transaction.

    ``history`` must hold every row of its entities from ``day_start`` minus the horizon up
    to ``day_end`` (one bucket's history): the features are then exactly the offline ones.
    """
    seconds = _seconds(history)
    ids = history.column("TRANSACTION_ID").to_numpy().astype(np.int64)
    keys = history.column(entity.key).to_numpy().astype(np.int64)
    fields = {f: history.column(f).to_numpy().astype(np.float64) for f in entity.value_fields}
    features = entity_features(entity, ids, seconds, keys, fields)
    in_day = (seconds >= day_start) & (seconds < day_end)
    columns = {"TRANSACTION_ID": ids[in_day]}
    columns.update({name: values[in_day] for name, values in features.items()})
    return pa.table(columns)


def assemble(
    day_rows: pa.Table, stages: Sequence[pa.Table], spec: FeatureSpec = BASELINE
) -> dict[str, np.ndarray]:
    """The model inputs of ``day_rows`` (in their order): passthrough and calendar from the
    rows, entity features joined from the stages' outputs by transaction id. A row missing
    from a stage is an error, never a silent zero."""
    ids = day_rows.column("TRANSACTION_ID").to_numpy().astype(np.int64)
    out: dict[str, np.ndarray] = {
        name: day_rows.column(name).to_numpy().astype(np.float64) for name in spec.passthrough
    }
    out.update(calendar_features(_seconds(day_rows), spec))
    for stage in stages:
        names = [n for n in stage.column_names if n != "TRANSACTION_ID"]
        stage_ids = stage.column("TRANSACTION_ID").to_numpy().astype(np.int64)
        order = np.argsort(stage_ids, kind="stable")
        sorted_ids = stage_ids[order]
        position = np.searchsorted(sorted_ids, ids)
        clipped = np.minimum(position, max(len(sorted_ids) - 1, 0))
        found = (position < len(sorted_ids)) & (
            sorted_ids[clipped] == ids if len(sorted_ids) else False
        )
        if not np.all(found):
            missing = ids[~found][:5].tolist()
            raise ValueError(f"rows without {names[0] if names else 'stage'} features: {missing}")
        for name in names:
            out[name] = stage.column(name).to_numpy()[order][clipped]
    out.update(ratio_features(spec, out))
    return {name: out[name] for name in spec.feature_names()}


def rows_of_day(table: pa.Table, day_start: int) -> pa.Table:
    """The rows dated within the day starting at ``day_start`` (epoch seconds)."""
    seconds = _seconds(table)
    mask = (seconds >= day_start) & (seconds < day_start + SECONDS_PER_DAY)
    return table.filter(pa.array(mask))


def bucket_history(
    table: pa.Table, entity: EntitySpec, buckets: int, day_start: int
) -> Mapping[int, pa.Table]:
    """One day's scoring needs, per bucket: the rows of the bucket's entities within the
    horizon before the day, and the day itself (what the bucketed history files hold)."""
    seconds = _seconds(table)
    lo = day_start - history_days(entity) * SECONDS_PER_DAY
    window = table.filter(pa.array((seconds >= lo) & (seconds < day_start + SECONDS_PER_DAY)))
    return split_by_bucket(window, entity.key, buckets)


__all__ = [
    "assemble",
    "bucket_history",
    "bucket_of",
    "entity_stage",
    "history_days",
    "rows_of_day",
    "split_by_bucket",
]
