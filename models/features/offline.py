"""Offline features: the spec computed over a whole history at once, vectorized with numpy.

Point-in-time correct by construction: each row's window is a slice of its entity's
events sorted by (time, transaction id), found with ``searchsorted``; a row only sees
events its spec window allows (same-second events with a larger id excluded; delayed
windows end ``delay`` before it). Sums, maxima and minima are ``ufunc.reduceat`` over the
slices, so any aggregation of the spec costs one line here and nothing per entity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from models.features.spec import (
    BASELINE,
    EPOCH_WEEKDAY,
    SECONDS_PER_DAY,
    Aggregation,
    EntitySpec,
    FeatureSpec,
)

if TYPE_CHECKING:
    import pyarrow as pa

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def epoch_seconds(tx_datetime: npt.NDArray[np.datetime64]) -> I64:
    """Naive datetimes as integer seconds since 1970-01-01 (the features' time axis)."""
    return tx_datetime.astype("datetime64[s]").astype(np.int64)


def calendar_features(seconds: I64, spec: FeatureSpec = BASELINE) -> dict[str, F64]:
    """TX_DURING_WEEKEND (Saturday, Sunday) and TX_DURING_NIGHT (hour <= 6) as 0.0/1.0."""
    out: dict[str, F64] = {}
    for name in spec.calendar:
        if name == "TX_DURING_WEEKEND":
            weekday = (seconds // SECONDS_PER_DAY + EPOCH_WEEKDAY) % 7
            out[name] = (weekday >= 5).astype(np.float64)
        else:
            hour = (seconds % SECONDS_PER_DAY) // 3600
            out[name] = (hour <= spec.night_last_hour).astype(np.float64)
    return out


def _window_bounds(key: I64, base: I64, end_back: int, length: int) -> tuple[I64, I64]:
    """[lo, hi) of each sorted row's window; ``base`` is the row's own key.

    end_back == 0: (t - length, t] up to and including the row itself (later same-second
    rows sort after it); otherwise (t - end_back - length, t - end_back].
    """
    lo = np.searchsorted(key, base - end_back - length, side="right")
    if end_back == 0:
        hi = np.arange(1, len(key) + 1, dtype=np.int64)
    else:
        hi = np.searchsorted(key, base - end_back, side="right")
    return lo.astype(np.int64), hi.astype(np.int64)


def _reduce(ufunc: np.ufunc, values: F64, lo: I64, hi: I64, empty: float = 0.0) -> F64:
    """``ufunc`` reduced over each slice values[lo:hi]; ``empty`` where the slice is empty."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.float64)
    padded = np.append(values, values[:1])  # reduceat needs every index < len
    idx = np.empty(2 * len(lo), dtype=np.int64)
    idx[0::2] = lo
    idx[1::2] = hi
    out: F64 = ufunc.reduceat(padded, idx)[0::2]
    out[hi <= lo] = empty
    return out


def _aggregate(agg: Aggregation, values: F64 | None, lo: I64, hi: I64) -> npt.NDArray[np.generic]:
    """One aggregation over every row's window slice."""
    count = hi - lo
    if agg.kind == "count" or values is None:
        return count
    if agg.kind == "max":
        return _reduce(np.maximum, values, lo, hi)
    if agg.kind == "min":
        return _reduce(np.minimum, values, lo, hi)
    total = _reduce(np.add, values, lo, hi)
    if agg.kind == "sum":
        return total
    # mean and ratio: sum / count, 0 for an empty window
    ratio: F64 = np.divide(total, count, out=np.zeros(len(count)), where=count > 0)
    return ratio


def entity_features(
    entity: EntitySpec,
    ids: I64,
    seconds: I64,
    keys: I64,
    fields: dict[str, F64],
) -> dict[str, npt.NDArray[np.generic]]:
    """All windowed features of one entity, for every row, in input row order."""
    n = len(ids)
    order = np.lexsort((ids, seconds, keys))
    k_sorted, s_sorted = keys[order], seconds[order]
    # Composite sort key: dense entity rank, then time shifted to be non-negative.
    rank = np.zeros(n, dtype=np.int64)
    if n:
        rank[1:] = np.cumsum(k_sorted[1:] != k_sorted[:-1])
    offset = int(np.min(s_sorted, initial=0)) - entity.horizon_seconds - 1
    span = int(np.max(s_sorted, initial=0)) - offset + 1
    if (int(rank[-1]) if n else 0) + 1 > np.iinfo(np.int64).max // max(span, 1):
        raise OverflowError("too many entities x time span for a 64-bit composite key")
    key = rank * span + (s_sorted - offset)
    sorted_values = {f: fields[f][order] for f in entity.value_fields}

    out: dict[str, npt.NDArray[np.generic]] = {}
    for window in entity.windows:
        lo, hi = _window_bounds(key, key, entity.delay_of(window), window.seconds)
        for agg in entity.aggregations:
            values = sorted_values[agg.field] if agg.field else None
            result = _aggregate(agg, values, lo, hi)
            unsorted = np.empty_like(result)
            unsorted[order] = result
            out[f"{entity.key}_{agg.name}_{window.suffix}"] = unsorted
    return out


def ratio_features(spec: FeatureSpec, features: dict[str, np.ndarray]) -> dict[str, F64]:
    """The spec's ratios of already computed features (0 where the divisor is 0)."""
    out: dict[str, F64] = {}
    for r in spec.ratios:
        top = np.asarray(features[r.numerator], dtype=np.float64)
        bottom = np.asarray(features[r.denominator], dtype=np.float64)
        out[r.name] = np.divide(top, bottom, out=np.zeros(len(top)), where=bottom != 0)
    return out


def compute_features(table: pa.Table, spec: FeatureSpec = BASELINE) -> dict[str, np.ndarray]:
    """Every feature of ``spec`` for every row of a transactions table, in row order.

    The table needs TRANSACTION_ID, TX_DATETIME, the entity keys and the aggregated
    fields (TX_AMOUNT, TX_FRAUD for the baseline). Counts are int64, the rest float64.
    """
    ids = table.column("TRANSACTION_ID").to_numpy().astype(np.int64)
    seconds = epoch_seconds(table.column("TX_DATETIME").to_numpy())
    out: dict[str, np.ndarray] = {
        name: table.column(name).to_numpy().astype(np.float64) for name in spec.passthrough
    }
    out.update(calendar_features(seconds, spec))
    for entity in spec.entities:
        fields = {f: table.column(f).to_numpy().astype(np.float64) for f in entity.value_fields}
        keys = table.column(entity.key).to_numpy().astype(np.int64)
        out.update(entity_features(entity, ids, seconds, keys, fields))
    out.update(ratio_features(spec, out))
    return {name: out[name] for name in spec.feature_names()}
