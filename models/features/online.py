"""Online features: per-entity state updated one event at a time, queried as of any time.

Pure Python (stdlib only), so the serving Lambdas need no numpy. The same spec drives it
as the offline engine, and the two are proven equal (tests/unit/test_features_parity.py,
``rtml features --engine online``).

An entity's state keeps its events within ``horizon = delay + longest window`` of its
latest event time (event time, never the wall clock: a replay of 2018 data must not drop
everything), sorted by (time, transaction id), with one value list per aggregated field.
Applying an event is idempotent (Kinesis delivers at least once); events older than the
horizon are ignored and counted; late events within it are applied and counted. Labels
(fields that arrive later, e.g. TX_FRAUD) fill in the value of their transaction, or wait
for it if they come first.
"""

from __future__ import annotations

import bisect
import calendar
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from models.contracts import LabelEvent, TransactionEvent
from models.errors import RtmlError
from models.features.spec import (
    BASELINE,
    EPOCH_WEEKDAY,
    SECONDS_PER_DAY,
    EntitySpec,
    FeatureSpec,
)

MAX_ID = sys.maxsize
Event = TransactionEvent | LabelEvent
EntityKey = tuple[str, int]
"""(entity key column, entity id), e.g. ("TERMINAL_ID", 42)."""

COUNTERS = ("applied", "duplicate", "late", "expired", "labels", "labels_pending")


@dataclass(frozen=True, slots=True)
class RawEvent:
    """The engine's internal event: validated fields, time as epoch seconds.

    Boundaries validate pydantic events (contracts) and convert them with
    :meth:`from_event`; replays of trusted datasets build these directly, which keeps a
    3.5-million-event replay fast.
    """

    is_label: bool
    transaction_id: int
    time: int
    customer_id: int
    terminal_id: int
    values: dict[str, float]
    """TX_AMOUNT for a transaction, TX_FRAUD for a label."""

    @classmethod
    def from_event(cls, event: Event) -> RawEvent:
        """Convert a validated stream event."""
        if isinstance(event, TransactionEvent):
            values = {"TX_AMOUNT": event.tx_amount}
        else:
            values = {"TX_FRAUD": float(event.tx_fraud)}
        return cls(
            is_label=isinstance(event, LabelEvent),
            transaction_id=event.transaction_id,
            time=epoch_seconds(event.tx_datetime),
            customer_id=event.customer_id,
            terminal_id=event.terminal_id,
            values=values,
        )


def epoch_seconds(value: datetime) -> int:
    """Naive datetime -> integer seconds since 1970-01-01 (the same axis as offline)."""
    return calendar.timegm(value.timetuple())


@dataclass
class EntityState:
    """One entity's recent events; ``version`` is the store's optimistic-lock token."""

    keys: list[tuple[int, int]] = field(default_factory=list)
    """(event time, transaction id) of each event, sorted."""
    values: list[list[float]] = field(default_factory=list)
    """One list per value field of the entity spec, aligned with ``keys``."""
    pending: dict[int, tuple[int, dict[str, float]]] = field(default_factory=dict)
    """Labels whose transaction has not arrived: id -> (time, {field: value})."""
    labelled: set[int] = field(default_factory=set)
    """Ids of held transactions whose label has arrived (to tell a repeat from news)."""
    latest: int | None = None
    version: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def position(self, time: int, tx_id: int) -> int | None:
        """Index of an event, or None if the state does not hold it."""
        i = bisect.bisect_left(self.keys, (time, tx_id))
        return i if i < len(self.keys) and self.keys[i] == (time, tx_id) else None


class EntityMachine:
    """The state transitions and queries of one entity spec."""

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        self.fields = spec.value_fields
        self._label_fields = frozenset(spec.label_fields)
        self._field_index = {f: i for i, f in enumerate(self.fields)}
        self.horizon = spec.horizon_seconds
        # per window: (feature name, kind, value-field index or -1 for a count)
        self._plan = [
            (
                w.seconds,
                [
                    (
                        f"{spec.key}_{a.name}_{w.suffix}",
                        a.kind,
                        self._field_index[a.field] if a.field else -1,
                    )
                    for a in spec.aggregations
                ],
            )
            for w in spec.windows
        ]

    def new_state(self) -> EntityState:
        """An empty state with one value list per field."""
        return EntityState(values=[[] for _ in self.fields])

    def _expired(self, state: EntityState, time: int) -> bool:
        return state.latest is not None and time <= state.latest - self.horizon

    def apply_transaction(
        self, state: EntityState, tx_id: int, time: int, values: dict[str, float]
    ) -> str:
        """Fold a transaction in; returns what happened (a counter name)."""
        if state.position(time, tx_id) is not None:
            outcome = "duplicate"
        elif self._expired(state, time):
            outcome = "expired"
        else:
            outcome = "late" if state.latest is not None and time < state.latest else "applied"
            label = state.pending.pop(tx_id, None)
            if label is not None:
                state.labelled.add(tx_id)
            i = bisect.bisect_left(state.keys, (time, tx_id))
            state.keys.insert(i, (time, tx_id))
            for f, column in zip(self.fields, state.values, strict=True):
                if f in self._label_fields:
                    column.insert(i, label[1].get(f, 0.0) if label else 0.0)
                else:
                    column.insert(i, float(values[f]))
            if state.latest is None or time > state.latest:
                state.latest = time
                self._trim(state)
        state.counters[outcome] += 1
        return outcome

    def apply_label(
        self, state: EntityState, tx_id: int, time: int, labels: dict[str, float]
    ) -> str:
        """Fill in label fields of a transaction (or keep them until it arrives)."""
        labels = {f: float(v) for f, v in labels.items() if f in self._label_fields}
        i = state.position(time, tx_id)
        if self._expired(state, time):
            outcome = "expired"
        elif i is not None:
            current = {f: state.values[self._field_index[f]][i] for f in labels}
            repeat = tx_id in state.labelled and current == labels
            outcome = "duplicate" if repeat else "labels"
            for f, v in labels.items():
                state.values[self._field_index[f]][i] = v
            state.labelled.add(tx_id)
        else:
            known = state.pending.get(tx_id)
            outcome = "duplicate" if known and known[1] == labels else "labels_pending"
            state.pending[tx_id] = (time, labels)
        state.counters[outcome] += 1
        return outcome

    def _trim(self, state: EntityState) -> None:
        """Drop events at or before latest - horizon: no query at or after latest sees them."""
        assert state.latest is not None
        cut_time = state.latest - self.horizon
        cut = bisect.bisect_right(state.keys, (cut_time, MAX_ID))
        if cut:
            if state.labelled:
                state.labelled.difference_update(tx_id for _, tx_id in state.keys[:cut])
            del state.keys[:cut]
            for column in state.values:
                del column[:cut]
        for tx_id in [k for k, (t, _) in state.pending.items() if t <= cut_time]:
            del state.pending[tx_id]

    def features(self, state: EntityState, time: int, tx_id: int) -> dict[str, float | int]:
        """This entity's windowed features as of (time, transaction id)."""
        out: dict[str, float | int] = {}
        keys, delay = state.keys, self.spec.delay_seconds
        if delay == 0:
            hi = bisect.bisect_right(keys, (time, tx_id))
        else:
            hi = bisect.bisect_right(keys, (time - delay, MAX_ID))
        for length, aggregations in self._plan:
            lo = bisect.bisect_right(keys, (time - delay - length, MAX_ID))
            count = hi - lo  # lo <= hi: every window starts before it ends
            for name, kind, index in aggregations:
                if index < 0:
                    out[name] = count
                    continue
                vals = state.values[index][lo:hi]
                if not vals:
                    out[name] = 0.0
                elif kind == "max":
                    out[name] = max(vals)
                elif kind == "min":
                    out[name] = min(vals)
                elif kind == "sum":
                    out[name] = sum(vals)
                else:  # mean, ratio
                    out[name] = sum(vals) / count
        return out


def calendar_features(time: int, spec: FeatureSpec = BASELINE) -> dict[str, float]:
    """The spec's calendar flags of one epoch time (same rules as offline)."""
    out: dict[str, float] = {}
    for name in spec.calendar:
        if name == "TX_DURING_WEEKEND":
            out[name] = float((time // SECONDS_PER_DAY + EPOCH_WEEKDAY) % 7 >= 5)
        else:
            out[name] = float((time % SECONDS_PER_DAY) // 3600 <= spec.night_last_hour)
    return out


class ConflictError(RtmlError):
    """Another writer changed an entity since it was read (optimistic lock failed)."""


class StateStore(Protocol):
    """Where entity states live: in memory, or DynamoDB (models/features/dynamodb_store.py)."""

    def load(
        self, requests: dict[EntityKey, tuple[int, int]], machines: dict[str, EntityMachine]
    ) -> dict[EntityKey, EntityState]:
        """States of entities, each covering events in (min_time - horizon, max_time]."""
        ...

    def save(
        self, key: EntityKey, state: EntityState, touched: set[int], machine: EntityMachine
    ) -> None:
        """Write a state back if its version is unchanged (touched: event times applied).

        Raises ConflictError otherwise; on success the state's version is the new one.
        """
        ...


class MemoryStore:
    """States in a dict, behind the StateStore interface (replays, tests, local runs)."""

    def __init__(self) -> None:
        self.states: dict[EntityKey, EntityState] = {}
        self._versions: dict[EntityKey, int] = {}

    def load(
        self, requests: dict[EntityKey, tuple[int, int]], machines: dict[str, EntityMachine]
    ) -> dict[EntityKey, EntityState]:
        """The live states (single-threaded use: no copy, so a replay stays fast)."""
        out = {}
        for key in requests:
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = machines[key[0]].new_state()
            out[key] = state
        return out

    def save(
        self, key: EntityKey, state: EntityState, touched: set[int], machine: EntityMachine
    ) -> None:
        """Bump the version (the state object is already the stored one)."""
        if self._versions.get(key, 0) != state.version:
            raise ConflictError(f"{key} changed since it was read")
        state.version += 1
        self._versions[key] = state.version
        self.states[key] = state


@dataclass(frozen=True)
class Scored:
    """The outcome of one event: the features of a transaction, or None for a label."""

    event: RawEvent
    features: dict[str, float | int] | None
    outcomes: dict[str, str]
    """Per entity key column: applied, duplicate, late, expired, labels, labels_pending."""


class OnlineFeatures:
    """Apply a batch of events to the entity states and compute each transaction's features.

    One ``store.load`` for the whole batch (one BatchGetItem on DynamoDB), events applied
    in order, one conditional write per touched entity. On a write conflict (the entity
    changed since it was read, e.g. a terminal hit from two shards) that entity is read
    again and the batch's events for it are applied again: applying is idempotent, so no
    update is lost and none is counted twice.
    """

    def __init__(
        self,
        store: StateStore,
        spec: FeatureSpec = BASELINE,
        max_attempts: int = 8,
        on_conflict: Callable[[int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.spec = spec
        self.machines = {e.key: EntityMachine(e) for e in spec.entities}
        self.max_attempts = max_attempts
        self.on_conflict = on_conflict
        self.sleep = sleep
        self.names = spec.feature_names()
        # (entity key column, event attribute holding its id, whether it takes labels)
        self._routes = [(k, k.lower(), bool(m.spec.label_fields)) for k, m in self.machines.items()]

    @staticmethod
    def _entity_id(event: RawEvent, key: str) -> int:
        return int(getattr(event, key.lower()))

    def process(self, events: Sequence[Event]) -> list[Scored]:
        """Apply validated stream events in order; per event, its features and outcomes."""
        return self.process_raw([RawEvent.from_event(e) for e in events])

    def process_raw(self, events: Sequence[RawEvent]) -> list[Scored]:
        """Apply events in order; return, per event, its features and outcomes."""
        per_key: dict[EntityKey, list[int]] = {}
        bounds: dict[EntityKey, tuple[int, int]] = {}
        for i, event in enumerate(events):
            t = event.time
            for key, attribute, wants_labels in self._routes:
                if event.is_label and not wants_labels:
                    continue  # labels only concern entities with label fields
                k = (key, getattr(event, attribute))
                if k in per_key:
                    per_key[k].append(i)
                    lo, hi = bounds[k]
                    bounds[k] = (min(lo, t), max(hi, t))
                else:
                    per_key[k] = [i]
                    bounds[k] = (t, t)
        feats: list[dict[str, float | int]] = [{} for _ in events]
        outcomes: list[dict[str, str]] = [{} for _ in events]
        pending = per_key
        for attempt in range(1, self.max_attempts + 1):
            states = self.store.load({k: bounds[k] for k in pending}, self.machines)
            conflicts: dict[EntityKey, list[int]] = {}
            for k, idx in pending.items():
                machine, state = self.machines[k[0]], states[k]
                for i in idx:
                    event = events[i]
                    if event.is_label:
                        outcomes[i][k[0]] = machine.apply_label(
                            state, event.transaction_id, event.time, event.values
                        )
                    else:
                        outcomes[i][k[0]] = machine.apply_transaction(
                            state, event.transaction_id, event.time, event.values
                        )
                        feats[i].update(machine.features(state, event.time, event.transaction_id))
                try:
                    self.store.save(k, state, {events[i].time for i in idx}, machine)
                except ConflictError:
                    conflicts[k] = idx
            if not conflicts:
                break
            if self.on_conflict:
                self.on_conflict(attempt)
            if attempt < self.max_attempts:  # jittered backoff: 10 ms, 20 ms, ... up to 1 s
                self.sleep(min(1.0, 0.01 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            pending = conflicts
        else:
            raise ConflictError(f"gave up after {self.max_attempts} conflicting writes")
        return [
            Scored(e, None if e.is_label else self._row(e, f), o)
            for e, f, o in zip(events, feats, outcomes, strict=True)
        ]

    def _row(self, event: RawEvent, feats: dict[str, float | int]) -> dict[str, float | int]:
        """The model inputs of a transaction, in the spec's order."""
        row: dict[str, float | int] = {n: event.values[n] for n in self.spec.passthrough}
        row.update(calendar_features(event.time, self.spec))
        row.update(feats)
        return {n: row[n] for n in self.names}

    def as_of(
        self, states: dict[EntityKey, EntityState], event: RawEvent
    ) -> dict[str, float | int]:
        """Features of a transaction from given states, without applying anything."""
        feats: dict[str, float | int] = {}
        for key, machine in self.machines.items():
            state = states.get((key, self._entity_id(event, key))) or machine.new_state()
            feats.update(machine.features(state, event.time, event.transaction_id))
        return self._row(event, feats)


def delivery_order(events: Iterable[tuple[int, RawEvent]]) -> list[RawEvent]:
    """Events sorted by delivery time; labels before transactions of the same second."""
    keyed = sorted(events, key=lambda te: (te[0], not te[1].is_label, te[1].transaction_id))
    return [e for _, e in keyed]
