"""Replay a simulated history through the online engine, as the stream would deliver it.

Each transaction arrives at its own time and its fraud label ``label delay`` later (the
terminal spec's delay: labels are known a week late), labels before transactions of the
same second. Two label feeds:

- ``"all"`` (explicit genuine labels): every transaction gets a label event, fraud or not,
  as a replay of a labelled dataset would send them;
- ``"chargebacks"``: only frauds get one, as a real chargeback feed does; a transaction
  without a chargeback is genuine (its TX_FRAUD stays 0). Exact against the offline
  engine whenever every chargeback arrives within the label delay, at a label write per
  fraud instead of one per transaction. A chargeback arriving later (still within the
  horizon) corrects the terminal's state from its arrival on: the queries in between saw
  the transaction as genuine, where the offline engine, which assumes every label known
  at the delay, counts it as fraud.

The features computed on arrival are collected per transaction, so the result compares row
for row with the offline engine (``rtml features --engine online``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np

from models.features.online import COUNTERS, MemoryStore, OnlineFeatures, RawEvent, StateStore
from models.features.spec import BASELINE, FeatureSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class ReplayResult:
    """Features per transaction (row-aligned with the input) and the engine's counters."""

    features: dict[str, np.ndarray]
    counters: dict[str, int]


LabelFeed = Literal["all", "chargebacks"]
"""Which label events a replay sends (see the module docstring)."""


def history_events(
    table: pa.Table, label_delay: timedelta, labels: LabelFeed = "all"
) -> tuple[list[RawEvent], np.ndarray]:
    """All transaction and label events in delivery order, and each event's input row."""
    ids = table.column("TRANSACTION_ID").to_numpy().astype(np.int64)
    seconds = table.column("TX_DATETIME").to_numpy().astype("datetime64[s]").astype(np.int64)
    customers = table.column("CUSTOMER_ID").to_pylist()
    terminals = table.column("TERMINAL_ID").to_pylist()
    amounts = table.column("TX_AMOUNT").to_pylist()
    frauds = table.column("TX_FRAUD").to_pylist()
    n = len(ids)
    delay = int(label_delay.total_seconds())
    delivery = np.empty(2 * n, dtype=np.int64)
    delivery[0::2] = seconds
    delivery[1::2] = seconds + delay
    is_tx = np.tile(np.array([1, 0], dtype=np.int64), n)
    order = np.lexsort((np.repeat(ids, 2), is_tx, delivery))
    if labels == "chargebacks":  # only frauds get a label event
        fraud = np.asarray(table.column("TX_FRAUD").to_numpy(), dtype=bool)
        order = order[((order & 1) == 0) | fraud[order >> 1]]
    id_list, time_list = ids.tolist(), seconds.tolist()
    events: list[RawEvent] = []
    for j in order.tolist():
        i = j >> 1
        label = bool(j & 1)
        events.append(
            RawEvent(
                is_label=label,
                transaction_id=id_list[i],
                time=time_list[i],
                customer_id=customers[i],
                terminal_id=terminals[i],
                values={"TX_FRAUD": float(frauds[i])} if label else {"TX_AMOUNT": amounts[i]},
            )
        )
    return events, order >> 1


def replay_history(
    table: pa.Table,
    spec: FeatureSpec = BASELINE,
    *,
    store: str | StateStore = "memory",
    table_name: str | None = None,
    batch_size: int = 2000,
    labels: LabelFeed = "all",
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``table`` through the online engine; features are those computed on arrival."""
    if isinstance(store, str):
        if store == "memory":
            store = MemoryStore()
        else:
            from models.features.dynamodb_store import DynamoDBStateStore

            store = DynamoDBStateStore.from_env(table_name)
    delay = max(e.delay_seconds for e in spec.entities)
    events, rows = history_events(table, timedelta(seconds=delay), labels)
    engine = OnlineFeatures(store, spec)
    names = spec.feature_names()
    counts = spec.count_features()
    out = {
        n: np.zeros(table.num_rows, dtype=np.int64 if n in counts else np.float64) for n in names
    }
    counters = dict.fromkeys(COUNTERS, 0)
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        for scored, row in zip(
            engine.process_raw(batch), rows[start : start + batch_size], strict=True
        ):
            for outcome in scored.outcomes.values():
                counters[outcome] += 1
            if scored.features is not None:
                for n in names:
                    out[n][row] = scored.features[n]
        if progress:
            progress(len(batch))
    return ReplayResult(features=out, counters=counters)


def states_as_of(
    table: pa.Table,
    as_of: int,
    spec: FeatureSpec = BASELINE,
    *,
    labels: LabelFeed = "all",
    progress: Callable[[int], None] | None = None,
) -> tuple[OnlineFeatures, dict[str, int]]:
    """Every entity's online state as of ``as_of`` (epoch seconds), replayed in memory.

    Exactly the events a stream would have delivered by then: transactions up to
    ``as_of``, labels once their delay has passed. Returns the engine (its MemoryStore
    holds the states) and the counters.
    """
    delay = max(e.delay_seconds for e in spec.entities)
    events, _ = history_events(table, timedelta(seconds=delay), labels)
    delivered = [e for e in events if e.time + (delay if e.is_label else 0) <= as_of]
    engine = OnlineFeatures(MemoryStore(), spec)
    counters = dict.fromkeys(COUNTERS, 0)
    for start in range(0, len(delivered), 5000):
        batch = delivered[start : start + 5000]
        for scored in engine.process_raw(batch):
            for outcome in scored.outcomes.values():
                counters[outcome] += 1
        if progress:
            progress(len(batch))
    return engine, counters


def delivered_between(
    table: pa.Table, start: int, end: int, spec: FeatureSpec = BASELINE, labels: LabelFeed = "all"
) -> list[RawEvent]:
    """The events a stream delivers in [start, end) (epoch seconds), in delivery order:
    transactions at their time, labels the spec's delay later."""
    delay = max(e.delay_seconds for e in spec.entities)
    events, _ = history_events(table, timedelta(seconds=delay), labels)
    return [e for e in events if start <= e.time + (delay if e.is_label else 0) < end]
