"""Online features: per-entity state updated one event at a time, queried as of any time.

Pure Python (stdlib only), so the serving Lambdas need no numpy. The same spec drives it
as the offline engine, and the two are proven equal (tests/unit/test_features_parity.py,
``rtml features --engine online``).

An entity's state keeps its events within ``horizon`` (its furthest window's delay +
length) of its latest event time (event time, never the wall clock: a replay of 2018 data
must not drop everything), sorted by (time, transaction id), with one value list per
aggregated field. Applying an event is idempotent (Kinesis delivers at least once); events
older than the horizon are ignored and counted; late events within it are applied and
counted. Labels (fields that arrive later, e.g. TX_FRAUD) fill in the value of their
transaction, or wait for it if they come first.

A busy entity's store may seal its older events into time *tiles* (:class:`Tiles`): per
tile, the count and the sums, maxima and minima the spec's aggregations need, with the
tile's raw events loaded only where a window edge cuts the tile (or an event lands in
it). Queries combine whole tiles' aggregates with raw events at the edges, so the values
are those of the raw events (``EntityMachine.features``); the engine never decides when
to seal, the store does (models/features/dynamodb_store.py).
"""

from __future__ import annotations

import bisect
import calendar
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from models.retry import backoff

MAX_ID = sys.maxsize
Event = TransactionEvent | LabelEvent
EntityKey = tuple[str, int]
"""(entity key column, entity id), e.g. ("TERMINAL_ID", 42)."""

COUNTERS = ("applied", "duplicate", "late", "expired", "labels", "labels_pending", "conflict")
UNCHANGED = frozenset({"duplicate", "expired", "conflict"})
"""Outcomes that leave an entity's events as they were (nothing to write)."""


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


Stat = tuple[int, str]
"""(value-field index, "sum" | "max" | "min"): a per-tile aggregate a spec needs."""
Touch = tuple[int, int, bool]
"""(event time, transaction id, is a label): what a batch does to an entity; the store
reads the tiles these need (see :meth:`EntityMachine.needed_tiles`)."""


@dataclass
class Tiles:
    """An entity's sealed events: those with (time, id) < ``frontier``, tiled by time.

    Tile ``k`` covers times [k * seconds, (k + 1) * seconds). Per non-empty tile: its
    event count, how many stored parts hold its raw events, and the stats the spec's
    aggregations need. Raw events of a tile are in the state's ``keys``/``values`` only
    for the tiles in ``part_firsts`` (loaded, or written in this batch).
    """

    seconds: int
    frontier: tuple[int, int]
    ids: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)
    stats: dict[Stat, list[float]] = field(default_factory=dict)
    part_firsts: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)
    """Per tile whose raw events are present: part index -> first (time, id) of the part."""
    loaded: set[int] = field(default_factory=set)
    """Tiles whose every part is present (queries and updates may cut them)."""
    dirty: set[tuple[int, int]] = field(default_factory=set)
    """(tile, part) to write back."""

    def copy(self) -> Tiles:
        """An independent copy (lookups fold events into copies)."""
        return Tiles(
            seconds=self.seconds,
            frontier=self.frontier,
            ids=list(self.ids),
            counts=list(self.counts),
            parts=list(self.parts),
            stats={s: list(c) for s, c in self.stats.items()},
            part_firsts={k: dict(v) for k, v in self.part_firsts.items()},
            loaded=set(self.loaded),
            dirty=set(self.dirty),
        )

    def tile_range(self, state: EntityState, k: int) -> tuple[int, int]:
        """Slice of ``state.keys`` holding tile k's sealed events (present ones)."""
        lo = bisect.bisect_left(state.keys, (k * self.seconds,))
        end = min(((k + 1) * self.seconds,), self.frontier)
        return lo, bisect.bisect_left(state.keys, end)

    def part_range(self, state: EntityState, k: int, p: int) -> tuple[int, int]:
        """Slice of ``state.keys`` holding part p of tile k (its raw events must be present)."""
        firsts = self.part_firsts[k]
        tile_lo, tile_hi = self.tile_range(state, k)
        lo = bisect.bisect_left(state.keys, firsts[p], tile_lo, tile_hi)
        nxt = firsts.get(p + 1)
        hi = tile_hi if nxt is None else bisect.bisect_left(state.keys, nxt, lo, tile_hi)
        return lo, hi


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
    tiles: Tiles | None = None
    """Sealed older events of a busy entity (None: every event is in ``keys``)."""
    _ids: set[int] | None = field(default=None, repr=False, compare=False)

    def holds_id(self, tx_id: int) -> bool:
        """Whether an event with this id is present (a set built once, kept up to date)."""
        if self._ids is None:
            self._ids = {tx for _, tx in self.keys}
        return tx_id in self._ids

    def copy(self) -> EntityState:
        """An independent copy (lookups fold events into copies)."""
        return EntityState(
            keys=list(self.keys),
            values=[list(c) for c in self.values],
            pending=dict(self.pending),
            labelled=set(self.labelled),
            latest=self.latest,
            version=self.version,
            counters=dict(self.counters),
            tiles=None if self.tiles is None else self.tiles.copy(),
        )

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
        # per window: (seconds, delay, [(feature name, kind, value-field index or -1)])
        self._plan = [
            (
                w.seconds,
                spec.delay_of(w),
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
        needed: list[Stat] = []
        for a in spec.aggregations:
            if a.field is not None:
                stat = "sum" if a.kind in ("sum", "mean", "ratio") else a.kind
                needed.append((self._field_index[a.field], stat))
        self.stats: tuple[Stat, ...] = tuple(dict.fromkeys(needed))
        """The per-tile aggregates this spec's queries need, in a fixed order."""

    def new_state(self) -> EntityState:
        """An empty state with one value list per field."""
        return EntityState(values=[[] for _ in self.fields])

    def _expired(self, state: EntityState, time: int) -> bool:
        return state.latest is not None and time <= state.latest - self.horizon

    def _sealed_tile(self, state: EntityState, time: int, tx_id: int) -> int | None:
        """The tile of a sealed event (its raw events must be loaded), else None."""
        tiles = state.tiles
        if tiles is None or (time, tx_id) >= tiles.frontier:
            return None
        k = time // tiles.seconds
        i = bisect.bisect_left(tiles.ids, k)
        if i < len(tiles.ids) and tiles.ids[i] == k and k not in tiles.loaded:
            raise RtmlError(f"tile {k} of {self.spec.key} was not loaded (store bug)")
        return k

    def apply_transaction(
        self, state: EntityState, tx_id: int, time: int, values: dict[str, float]
    ) -> str:
        """Fold a transaction in; returns what happened (a counter name)."""
        expired = self._expired(state, time)
        k = None if expired or state.tiles is None else self._sealed_tile(state, time, tx_id)
        if expired:
            outcome = "expired"
        elif (at := state.position(time, tx_id)) is not None:
            # a redelivery carries the same values; other values under the same key are
            # another transaction reusing the id: refused, never applied
            same = all(
                state.values[i][at] == float(values[f])
                for i, f in enumerate(self.fields)
                if f not in self._label_fields
            )
            outcome = "duplicate" if same else "conflict"
        elif state.holds_id(tx_id):
            outcome = "conflict"  # the id is held at another time
        else:
            outcome = "late" if state.latest is not None and time < state.latest else "applied"
            label = state.pending.pop(tx_id, None)
            if label is not None:
                state.labelled.add(tx_id)
            i = bisect.bisect_left(state.keys, (time, tx_id))
            state.keys.insert(i, (time, tx_id))
            if state._ids is not None:
                state._ids.add(tx_id)
            for f, column in zip(self.fields, state.values, strict=True):
                if f in self._label_fields:
                    column.insert(i, label[1].get(f, 0.0) if label else 0.0)
                else:
                    column.insert(i, float(values[f]))
            if k is not None:
                self._changed_sealed(state, k, (time, tx_id))
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
        expired = self._expired(state, time)
        k = None if expired or state.tiles is None else self._sealed_tile(state, time, tx_id)
        if expired:
            outcome = "expired"
        elif (i := state.position(time, tx_id)) is not None:
            current = {f: state.values[self._field_index[f]][i] for f in labels}
            repeat = tx_id in state.labelled and current == labels
            outcome = "duplicate" if repeat else "labels"
            for f, v in labels.items():
                state.values[self._field_index[f]][i] = v
            state.labelled.add(tx_id)
            if k is not None and not repeat:
                self._changed_sealed(state, k, (time, tx_id))
        else:
            known = state.pending.get(tx_id)
            outcome = "duplicate" if known and known[1] == labels else "labels_pending"
            state.pending[tx_id] = (time, labels)
        state.counters[outcome] += 1
        return outcome

    def _changed_sealed(self, state: EntityState, k: int, key: tuple[int, int]) -> None:
        """A sealed event of tile k was inserted or relabelled: redo the tile's aggregates."""
        tiles = state.tiles
        assert tiles is not None
        i = bisect.bisect_left(tiles.ids, k)
        if i == len(tiles.ids) or tiles.ids[i] != k:  # a late event opens a sealed tile
            tiles.ids.insert(i, k)
            tiles.counts.insert(i, 0)
            tiles.parts.insert(i, 1)
            for column in tiles.stats.values():
                column.insert(i, 0.0)
            tiles.part_firsts[k] = {0: key}
            tiles.loaded.add(k)
        firsts = tiles.part_firsts[k]
        p = max(0, bisect.bisect_right(sorted(firsts.values()), key) - 1)
        firsts[p] = min(firsts[p], key)
        tiles.dirty.add((k, p))
        lo, hi = tiles.tile_range(state, k)
        tiles.counts[i] = hi - lo
        for (f, stat), column in tiles.stats.items():
            column[i] = _reduce(stat, state.values[f][lo:hi])

    def _trim(self, state: EntityState) -> None:
        """Drop events at or before latest - horizon: no query at or after latest sees them.

        Sealed tiles go whole, once their last second is past the cut (a tile that
        straddles it is only ever cut by a window edge, where its raw events are read).
        """
        assert state.latest is not None
        cut_time = state.latest - self.horizon
        tiles = state.tiles
        if tiles is not None:
            first_kept = (cut_time + 1) // tiles.seconds
            n = bisect.bisect_left(tiles.ids, first_kept)
            if n:
                for k in tiles.ids[:n]:
                    tiles.part_firsts.pop(k, None)
                    tiles.loaded.discard(k)
                tiles.dirty = {d for d in tiles.dirty if d[0] >= first_kept}
                del tiles.ids[:n], tiles.counts[:n], tiles.parts[:n]
                for column in tiles.stats.values():
                    del column[:n]
            # unsealed events trim as usual; sealed ones go with their tile
            f = bisect.bisect_left(state.keys, tiles.frontier)
            self._drop(state, f, bisect.bisect_right(state.keys, (cut_time, MAX_ID)))
            sealed_cut = bisect.bisect_left(state.keys, (first_kept * tiles.seconds,))
            self._drop(state, 0, min(f, sealed_cut))
        else:
            self._drop(state, 0, bisect.bisect_right(state.keys, (cut_time, MAX_ID)))
        for tx_id in [k for k, (t, _) in state.pending.items() if t <= cut_time]:
            del state.pending[tx_id]

    @staticmethod
    def _drop(state: EntityState, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        dropped = [tx_id for _, tx_id in state.keys[lo:hi]]
        if state.labelled:
            state.labelled.difference_update(dropped)
        if state._ids is not None:
            state._ids.difference_update(dropped)
        del state.keys[lo:hi]
        for column in state.values:
            del column[lo:hi]

    def needed_tiles(self, state: EntityState, touches: Iterable[Touch]) -> set[int]:
        """Sealed tiles whose raw events a batch needs: where its events land, and where a
        window edge of one of its transactions cuts a tile."""
        tiles = state.tiles
        if tiles is None:
            return set()
        frontier, seconds = tiles.frontier, tiles.seconds
        need: set[int] = set()
        # windows are clipped at latest - horizon (see ``features``): that edge cuts a tile too
        floors = [] if state.latest is None else [state.latest - self.horizon]
        for t, tx_id, is_label in touches:
            if (t, tx_id) < frontier:
                need.add(t // seconds)
            floors.append(t - self.horizon)
            if is_label:
                continue
            for length, delay, _ in self._plan:
                if delay and (t - delay, MAX_ID) < frontier:
                    need.add((t - delay) // seconds)
                edge = t - delay - length
                if (edge, MAX_ID) < frontier:
                    need.add(edge // seconds)
        need.update(f // seconds for f in floors if (f, MAX_ID) < frontier)
        return need.intersection(tiles.ids)

    def seal(self, state: EntityState, seconds: int, max_part_events: int, max_parts: int) -> None:
        """Seal the unsealed events into tiles of ``seconds`` (the store decides when).

        New events of a tile become new parts of at most ``max_part_events``; at most
        ``max_parts`` parts are created (the rest stays unsealed for a later write).
        """
        tiles = state.tiles
        if tiles is None:
            tiles = state.tiles = Tiles(
                seconds=seconds,
                frontier=(-MAX_ID, -MAX_ID),
                stats={stat: [] for stat in self.stats},
            )
        seconds = tiles.seconds
        start = bisect.bisect_left(state.keys, tiles.frontier)
        end, created = start, 0
        keys = state.keys
        while end < len(keys) and created < max_parts:
            k = keys[end][0] // seconds
            tile_end = bisect.bisect_left(keys, ((k + 1) * seconds,), end)
            stop = min(tile_end, end + max_part_events)
            i = bisect.bisect_left(tiles.ids, k)
            if i == len(tiles.ids) or tiles.ids[i] != k:
                tiles.ids.insert(i, k)
                tiles.counts.insert(i, 0)
                tiles.parts.insert(i, 0)
                for (_, stat), column in tiles.stats.items():
                    column.insert(i, _EMPTY[stat])
                tiles.loaded.add(k)  # every event of a new tile is in hand
            p = tiles.parts[i]
            tiles.parts[i] += 1
            tiles.part_firsts.setdefault(k, {})[p] = keys[end]
            tiles.dirty.add((k, p))
            tiles.counts[i] += stop - end
            for (f, stat), column in tiles.stats.items():
                column[i] = _combine(stat, column[i], _reduce(stat, state.values[f][end:stop]))
            end = stop
            created += 1
        if end > start:
            last_time, last_id = keys[end - 1]
            tiles.frontier = (last_time, last_id + 1)

    def features(self, state: EntityState, time: int, tx_id: int) -> dict[str, float | int]:
        """This entity's windowed features as of (time, transaction id)."""
        out: dict[str, float | int] = {}
        keys = state.keys
        tiles = state.tiles
        # a late event's window may reach below latest - horizon, where the state keeps
        # nothing (flat) or whole tiles (tiled): clip it there, the same for every layout
        floor = -MAX_ID if state.latest is None else state.latest - self.horizon
        ends: dict[int, tuple[tuple[int, int], int]] = {}
        for length, delay, aggregations in self._plan:
            if delay not in ends:
                end = (time, tx_id) if delay == 0 else (time - delay, MAX_ID)
                ends[delay] = end, bisect.bisect_right(keys, end)
            hi_key, hi = ends[delay]
            lo_key = (max(time - delay - length, floor), MAX_ID)
            if lo_key >= hi_key:  # an expired event's window: nothing the state can hold
                self._raw_window(out, state, aggregations, 0, 0)
                continue
            lo = bisect.bisect_right(keys, lo_key)
            if tiles is None or lo_key >= tiles.frontier:  # all raw: the common case
                self._raw_window(out, state, aggregations, lo, hi)
                continue
            spans, whole = self._tiled_spans(state, tiles, lo_key, hi_key=hi_key, lo=lo, hi=hi)
            spans = [(a, b) for a, b in spans if b > a]
            count = sum(b - a for a, b in spans)
            if whole is not None:
                count += sum(tiles.counts[whole[0] : whole[1]])
            for name, kind, index in aggregations:
                if index < 0:
                    out[name] = count
                    continue
                if not count:
                    out[name] = 0.0
                    continue
                column = state.values[index]
                stat = "sum" if kind in ("sum", "mean", "ratio") else kind
                parts = [_reduce(stat, column[a:b]) for a, b in spans]
                if whole is not None and whole[1] > whole[0]:
                    tile_stats = tiles.stats[(index, stat)]
                    parts.append(_reduce(stat, tile_stats[whole[0] : whole[1]]))
                value = parts[0] if len(parts) == 1 else _reduce(stat, parts)
                out[name] = value / count if kind in ("mean", "ratio") else value
        return out

    @staticmethod
    def _raw_window(
        out: dict[str, float | int],
        state: EntityState,
        aggregations: Sequence[tuple[str, str, int]],
        lo: int,
        hi: int,
    ) -> None:
        """One window's aggregations over raw events ``lo:hi`` (lo <= hi)."""
        count = hi - lo
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

    @staticmethod
    def _tiled_spans(
        state: EntityState,
        tiles: Tiles,
        lo_key: tuple[int, int],
        *,
        hi_key: tuple[int, int],
        lo: int,
        hi: int,
    ) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """Raw slices and the range of whole tiles that make up the window (lo_key, hi_key].

        Unsealed events come raw; sealed tiles strictly inside the window come as
        aggregates; a sealed tile cut by an edge contributes its (loaded) raw events.
        """
        keys, frontier, seconds = state.keys, tiles.frontier, tiles.seconds
        f = bisect.bisect_left(keys, frontier)
        spans = [(max(lo, f), hi)]
        k_lo = lo_key[0] // seconds
        k_hi = hi_key[0] // seconds if hi_key < frontier else None
        for k in (k_lo,) if k_hi in (None, k_lo) else (k_lo, k_hi):
            i = bisect.bisect_left(tiles.ids, k)
            if i == len(tiles.ids) or tiles.ids[i] != k:
                continue
            if k not in tiles.loaded:
                raise RtmlError(f"tile {k} cut by a window edge was not loaded (store bug)")
            a, b = tiles.tile_range(state, k)
            spans.append((max(a, lo), min(b, hi)))
        first = bisect.bisect_right(tiles.ids, k_lo)
        last = len(tiles.ids) if k_hi is None else bisect.bisect_left(tiles.ids, k_hi)
        return spans, (first, max(first, last))


_EMPTY: dict[str, float] = {"sum": 0.0, "max": -math.inf, "min": math.inf}


def _reduce(stat: str, values: Sequence[float]) -> float:
    if stat == "sum":
        return sum(values)
    if not values:
        return _EMPTY[stat]
    return max(values) if stat == "max" else min(values)


def _combine(stat: str, a: float, b: float) -> float:
    if stat == "sum":
        return a + b
    return max(a, b) if stat == "max" else min(a, b)


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
        self,
        requests: dict[EntityKey, list[Touch]],
        machines: dict[str, EntityMachine],
        *,
        consistent: bool = True,
    ) -> dict[EntityKey, EntityState]:
        """States of entities, with whatever the touches (a batch's events) need.

        ``consistent``: read the latest committed write (the read-modify-write path);
        False allows an eventually consistent read (read-only lookups; half the price).
        """
        ...

    def save(
        self, key: EntityKey, state: EntityState, machine: EntityMachine, *, seal: bool = True
    ) -> None:
        """Write a state back if its version is unchanged.

        Raises ConflictError otherwise; on success the state's version is the new one.
        ``seal=False``: keep the layout of the state as it is (a write in mid-batch).
        """
        ...


class MemoryStore:
    """States in a dict, behind the StateStore interface (replays, tests, local runs)."""

    def __init__(self) -> None:
        self.states: dict[EntityKey, EntityState] = {}
        self._versions: dict[EntityKey, int] = {}

    def load(
        self,
        requests: dict[EntityKey, list[Touch]],
        machines: dict[str, EntityMachine],
        *,
        consistent: bool = True,
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
        self, key: EntityKey, state: EntityState, machine: EntityMachine, *, seal: bool = True
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
    error: Exception | None = None
    """Why one of the event's entities could not be saved (``strict=False``): the event
    must be delivered again; applying it again is idempotent."""


class OnlineFeatures:
    """Apply a batch of events to the entity states and compute each transaction's features.

    One ``store.load`` for the whole batch (one BatchGetItem round on DynamoDB, a second
    for busy entities' tiles), events applied in order, one conditional write per entity
    whose state changed, ``save_workers`` of them at a time (a 100-record batch touches
    about 200 entities: written one after another, their round trips add up). On a write
    conflict (the entity changed since it was read, e.g. a terminal hit from two shards)
    that entity is read again and the batch's events for it are applied again: applying is
    idempotent, so no update is lost and none is counted twice.
    """

    def __init__(
        self,
        store: StateStore,
        spec: FeatureSpec = BASELINE,
        max_attempts: int = 8,
        on_conflict: Callable[[int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        save_workers: int = 1,
        flush_parts: int = 90,
    ) -> None:
        self.store = store
        self.flush_parts = flush_parts
        """Write an entity mid-batch once its changes span this many tile parts."""
        self._pool = ThreadPoolExecutor(save_workers) if save_workers > 1 else None
        self._save_workers = save_workers
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

    def _route(self, events: Sequence[RawEvent]) -> dict[EntityKey, list[int]]:
        """Per entity, the indices of the batch's events that concern it, in order."""
        per_key: dict[EntityKey, list[int]] = {}
        for i, event in enumerate(events):
            for key, attribute, wants_labels in self._routes:
                if event.is_label and not wants_labels:
                    continue  # labels only concern entities with label fields
                per_key.setdefault((key, getattr(event, attribute)), []).append(i)
        return per_key

    @staticmethod
    def _touches(events: Sequence[RawEvent], idx: list[int]) -> list[Touch]:
        return [(events[i].time, events[i].transaction_id, events[i].is_label) for i in idx]

    def process_raw(self, events: Sequence[RawEvent], *, strict: bool = True) -> list[Scored]:
        """Apply events in order; return, per event, its features and outcomes.

        An entity whose events all turn out duplicate or expired (a redelivered batch) is
        not written: a retry costs reads only. A save that fails (a conflict after every
        attempt, a throttled or unavailable store) raises with ``strict``; otherwise it
        marks exactly the events of that entity (``Scored.error``), the rest stand.
        """
        per_key = self._route(events)
        feats: list[dict[str, float | int]] = [{} for _ in events]
        outcomes: list[dict[str, str]] = [{} for _ in events]
        failed: dict[EntityKey, Exception] = {}
        pending = per_key
        for attempt in range(1, self.max_attempts + 1):
            requests = {k: self._touches(events, idx) for k, idx in pending.items()}
            states = self.store.load(requests, self.machines)
            changed: list[EntityKey] = []
            mid_batch_errors: dict[EntityKey, Exception] = {}
            committed: dict[EntityKey, int] = {}
            """Per entity, how many of its events a mid-batch write stored for good."""
            for k, idx in pending.items():
                machine, state = self.machines[k[0]], states[k]
                dirty = False
                error: Exception | None = None
                for n, i in enumerate(idx, start=1):
                    event = events[i]
                    if event.is_label:
                        outcome = machine.apply_label(
                            state, event.transaction_id, event.time, event.values
                        )
                    else:
                        outcome = machine.apply_transaction(
                            state, event.transaction_id, event.time, event.values
                        )
                        feats[i].update(machine.features(state, event.time, event.transaction_id))
                    outcomes[i][k[0]] = outcome
                    dirty = dirty or outcome not in UNCHANGED
                    if state.tiles is not None and len(state.tiles.dirty) >= self.flush_parts:
                        # a write carries at most ~100 items (a transaction): write now,
                        # without sealing (the tiles this batch loaded must stay as they are)
                        error = self._save_all([k], states, seal=False).get(k)
                        if error is not None:
                            break  # conflict: re-read and re-apply; else: failed below
                        committed[k] = n
                        dirty = False
                if error is not None:
                    mid_batch_errors[k] = error
                elif dirty:
                    changed.append(k)
            conflicts: dict[EntityKey, list[int]] = {}
            errors_now = {**mid_batch_errors, **self._save_all(changed, states)}
            for k, error in errors_now.items():
                if isinstance(error, ConflictError):
                    # only the events after the last mid-batch write: those before are stored
                    conflicts[k] = pending[k][committed.get(k, 0) :]
                else:
                    failed[k] = error
            if not conflicts:
                break
            if self.on_conflict:
                self.on_conflict(attempt)
            if attempt < self.max_attempts:  # jittered backoff: 10 ms, 20 ms, ... up to 1 s
                self.sleep(backoff(attempt - 1, base=0.01, cap=1.0))
            pending = conflicts
        else:
            for k in pending:
                failed[k] = ConflictError(
                    f"{k[0]}#{k[1]}: gave up after {self.max_attempts} conflicting writes"
                )
        if failed and strict:
            raise next(iter(failed.values()))
        errors: list[Exception | None] = [None] * len(events)
        for k, error in failed.items():
            for i in per_key[k]:
                errors[i] = errors[i] or error
        return [
            Scored(e, None if e.is_label else self._row(e, f), o, err)
            for e, f, o, err in zip(events, feats, outcomes, errors, strict=True)
        ]

    def _save_all(
        self, keys: list[EntityKey], states: dict[EntityKey, EntityState], *, seal: bool = True
    ) -> dict[EntityKey, Exception]:
        """Save each entity (concurrently with a pool); the ones that failed, and why."""

        def save(k: EntityKey) -> Exception | None:
            try:
                if seal:
                    self.store.save(k, states[k], self.machines[k[0]])
                else:
                    self.store.save(k, states[k], self.machines[k[0]], seal=False)
            except Exception as exc:  # reported per entity; the caller decides
                return exc
            return None

        if self._pool is None or len(keys) < 2:
            results = [save(k) for k in keys]
        else:
            # one task per worker, not per entity: the pool runs that many at a time anyway,
            # and a future per entity costs more than the save's own in-process work
            groups = min(self._save_workers, len(keys))
            done = list(self._pool.map(lambda g: [save(k) for k in keys[g::groups]], range(groups)))
            results = [done[i % groups][i // groups] for i in range(len(keys))]
        return {k: e for k, e in zip(keys, results, strict=True) if e is not None}

    def lookup(
        self, events: Sequence[RawEvent], *, consistent: bool = False
    ) -> list[dict[str, float | int]]:
        """Features of transactions as if each were applied, without writing anything.

        The read-only path (an API request): one batched, by default eventually
        consistent, read of the entities' states; each transaction is folded into a
        private copy, so a request sees itself (and earlier ones of the same call) in its
        windows exactly as the stream would, and the stored state stays the stream's.
        """
        if any(e.is_label for e in events):
            raise ValueError("lookup takes transactions only (labels change state)")
        per_key = self._route(events)
        requests = {k: self._touches(events, idx) for k, idx in per_key.items()}
        loaded = self.store.load(requests, self.machines, consistent=consistent)
        feats: list[dict[str, float | int]] = [{} for _ in events]
        for k, idx in per_key.items():
            machine, state = self.machines[k[0]], loaded[k].copy()
            for i in idx:
                e = events[i]
                machine.apply_transaction(state, e.transaction_id, e.time, e.values)
                feats[i].update(machine.features(state, e.time, e.transaction_id))
        return [self._row(e, f) for e, f in zip(events, feats, strict=True)]

    def _row(self, event: RawEvent, feats: dict[str, float | int]) -> dict[str, float | int]:
        """The model inputs of a transaction, in the spec's order."""
        row: dict[str, float | int] = {n: event.values[n] for n in self.spec.passthrough}
        row.update(calendar_features(event.time, self.spec))
        row.update(feats)
        for r in self.spec.ratios:  # same rule as offline: 0 where the divisor is 0
            bottom = row[r.denominator]
            row[r.name] = row[r.numerator] / bottom if bottom != 0 else 0.0
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
