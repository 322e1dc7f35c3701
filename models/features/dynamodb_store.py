"""The online feature state in DynamoDB: the StateStore adapter (boto3 lives here only).

Layout (one table, names in ``models.contracts``): an entity is a partition
``pk = "<ENTITY>#<id>"``. In the common case it is ONE item, ``sk = "S"``:

- ``v``: the version (N), the optimistic lock every write is conditioned on;
- ``d``: the state (B), encoded by :mod:`models.features.codec`: latest event time,
  counters, the events (time, id and the fields the spec aggregates: delta varints,
  amounts in cents when exact), which of them are labelled, labels waiting for their
  transaction, and, for a busy entity, its tiles;
- ``expires_at``: TTL, processing time + horizon + a day.

An entity whose item would outgrow a write unit (1 KB), or a busy one whose unsealed
events encode to more than ``seal_bytes``, seals them into time tiles: the main item
keeps per tile its count, part count and the stats the spec needs (sum, max, min), and
each tile's raw events go to parts ``sk = "T#<tile>#<part>"``
(``expires_at`` = processing time + twice the horizon). Parts are read only where a
window edge cuts a tile or an event lands in a sealed tile, so the main item, and the
cost of a write, stay bounded whatever the entity's rate. The tile length is chosen at the
first seal from the entity's rate (so that the horizon holds at most ``max_tiles``
tiles) and kept.

Reads: one BatchGetItem round for every main item of a batch (100 keys a call,
unprocessed keys retried with jittered backoff), strongly consistent on the
read-modify-write path (a stale read would only fail the version check and retry, but
costs a wasted write), eventually consistent for read-only lookups; a second round for
the tile parts of busy entities. Writes: one PutItem conditioned on the version read;
a TransactWriteItems (main item + parts, atomically, at double price) only when parts
change, so that a losing writer can never leave parts that disagree with the main item.
Every call asks for ``ReturnConsumedCapacity`` and the store counts both what DynamoDB
reports and the units computed from item sizes by DynamoDB's rules (:class:`Usage`).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.contracts import (
    ENV_FEATURE_STATE_TABLE,
    FEATURE_STATE_PK,
    FEATURE_STATE_SK,
    FEATURE_STATE_TTL,
)
from models.dynamodb_batch import BATCH_WRITE_LIMIT, batch_get, batch_put
from models.errors import RtmlError
from models.features import codec
from models.features.online import (
    COUNTERS,
    ConflictError,
    EntityKey,
    EntityMachine,
    EntityState,
    Tiles,
    Touch,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MAIN_SK = "S"
FORMAT = 1
TRANSACT_LIMIT = 100
MAX_ITEM_BYTES = 350_000  # DynamoDB's limit is 400 KB; keep a margin
TILE_LADDER = (900, 1800, 3600, 7200, 14_400, 28_800, 86_400, 172_800, 345_600, 604_800)
"""Tile lengths a tiled entity may get, in seconds (15 minutes to a week)."""
RETRYABLE_CANCELLATIONS = frozenset(
    {
        "ConditionalCheckFailed",
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
    }
)
"""Cancellation reasons of TransactWriteItems after which a fresh read and retry succeeds."""


class StateTooLargeError(RtmlError):
    """An entity's main item would exceed DynamoDB's item size limit."""


class StoreUnavailableError(RtmlError):
    """The table is missing, or DynamoDB kept returning unprocessed keys after every retry."""


class MissingStateError(RtmlError):
    """A tile part the main item refers to is not in the table (deleted or expired)."""


# --- DynamoDB's size and capacity rules ---------------------------------------------------


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1 + text.startswith("-")


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values (S, B, N)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        elif "B" in value:
            size += len(value["B"])
        elif "N" in value:
            size += _number_size(value["N"])
        else:
            raise ValueError(f"attribute {name}: only S, B and N are sized here")
    return size


_MAIN_NAMES_BYTES = len(FEATURE_STATE_PK) + len(FEATURE_STATE_SK) + len("v") + len("d")
_MAIN_NAMES_BYTES += len(FEATURE_STATE_TTL)


def _main_size(main: dict[str, Any]) -> int:
    """:func:`item_size` of a main item, by its known shape (it runs on every save)."""
    return (
        _MAIN_NAMES_BYTES
        + len(main[FEATURE_STATE_PK]["S"].encode())
        + len(main[FEATURE_STATE_SK]["S"])
        + _number_size(main["v"]["N"])
        + len(main["d"]["B"])
        + _number_size(main[FEATURE_STATE_TTL]["N"])
    )


def write_units(size: int, *, transactional: bool = False) -> int:
    """Write units of one item write: a unit per started KB, double in a transaction."""
    return max(1, math.ceil(size / 1024)) * (2 if transactional else 1)


def read_units(size: int, *, consistent: bool) -> float:
    """Read units of one item read: a unit per started 4 KB, half if eventually consistent."""
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


@dataclass
class Usage:
    """What the store asked of DynamoDB: requests, bytes, units (computed and reported)."""

    requests: int = 0
    items_read: int = 0
    items_written: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    reported_read_units: float = 0.0
    reported_write_units: float = 0.0
    item_sizes: dict[str, list[int]] = field(default_factory=dict)
    """Written item sizes per kind ("main", "part"), when ``track_sizes`` is set."""
    track_sizes: bool = False
    sizing: bool = True
    """Size every item to compute units (benchmarks, the cost model). Off in the Lambda,
    where sizing costs ~10% of the in-process time and the reported units suffice."""
    write_units_by_entity: dict[str, float] = field(default_factory=dict)
    read_units_by_entity: dict[str, float] = field(default_factory=dict)
    """Units per entity type (the partition key's prefix, e.g. TERMINAL_ID)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Saves run on a thread pool (``OnlineFeatures(save_workers=...)``)."""

    def reported(self, response: dict[str, Any], kind: str) -> None:
        """Count a request and add the ConsumedCapacity of its response."""
        consumed = response.get("ConsumedCapacity")
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        units = sum(float(entry.get("CapacityUnits", 0.0)) for entry in entries)
        with self._lock:
            self.requests += 1
            if kind == "read":
                self.reported_read_units += units
            else:
                self.reported_write_units += units

    def wrote(self, item: dict[str, Any], kind: str, *, transactional: bool) -> None:
        """Count one written item."""
        if not self.sizing:
            with self._lock:
                self.items_written += 1
            return
        size = item_size(item)
        units = write_units(size, transactional=transactional)
        with self._lock:
            self._wrote(item, kind, size, units)

    def _wrote(self, item: dict[str, Any], kind: str, size: int, units: int) -> None:
        self.items_written += 1
        self.bytes_written += size
        self.write_units += units
        entity = item[FEATURE_STATE_PK]["S"].partition("#")[0]
        self.write_units_by_entity[entity] = self.write_units_by_entity.get(entity, 0.0) + units
        if self.track_sizes:
            self.item_sizes.setdefault(kind, []).append(size)


# --- encoding -------------------------------------------------------------------------


def _write_events(
    out: bytearray, state: EntityState, lo: int, hi: int, n_fields: int
) -> tuple[int, int]:
    """Events ``state.keys[lo:hi]``: times, ids, one column per field, labelled positions."""
    keys = state.keys[lo:hi]
    codec.put_uvarint(out, len(keys))
    codec.write_sorted(out, [t for t, _ in keys])
    ids = [tx for _, tx in keys]
    codec.write_deltas(out, ids)
    for f in range(n_fields):
        codec.write_column(out, state.values[f][lo:hi])
    labelled = state.labelled
    codec.write_positions(out, [tx in labelled for tx in ids] if labelled else [False] * len(ids))
    return lo, hi


def _read_events(
    reader: codec.Reader, n_fields: int
) -> tuple[list[tuple[int, int]], list[list[float]], list[int]]:
    n = reader.uvarint()
    times = codec.read_sorted(reader, n)
    ids = codec.read_deltas(reader, n)
    columns = [codec.read_column(reader, n) for _ in range(n_fields)]
    labelled = codec.read_positions(reader, n)
    return list(zip(times, ids, strict=True)), columns, [ids[i] for i in labelled]


def encode_main(state: EntityState, machine: EntityMachine) -> bytes:
    """The main item's ``d``: header, unsealed events, pending labels, tiles."""
    out = bytearray([FORMAT])
    codec.put_uvarint(out, 0 if state.latest is None else codec.zigzag(state.latest) + 1)
    codec.put_uvarints(out, [state.counters.get(c, 0) for c in COUNTERS])
    tiles = state.tiles
    start = 0 if tiles is None else bisect.bisect_left(state.keys, tiles.frontier)
    _write_events(out, state, start, len(state.keys), len(machine.fields))
    if state.pending:
        pending = json.dumps(
            {str(tx): [t, labels] for tx, (t, labels) in sorted(state.pending.items())},
            separators=(",", ":"),
        ).encode()
        codec.put_uvarint(out, len(pending))
        out += pending
    else:
        codec.put_uvarint(out, 0)
    if tiles is None:
        out.append(0)
        return bytes(out)
    out.append(1)
    codec.put_uvarint(out, tiles.seconds)
    codec.put_uvarint(out, codec.zigzag(tiles.frontier[0]))
    codec.put_uvarint(out, codec.zigzag(tiles.frontier[1]))
    codec.put_uvarint(out, len(tiles.ids))
    codec.write_sorted(out, tiles.ids)
    codec.put_uvarints(out, tiles.counts)
    codec.put_uvarints(out, tiles.parts)
    for stat in machine.stats:
        codec.write_column(out, tiles.stats[stat])
    return bytes(out)


def decode_main(data: bytes, machine: EntityMachine) -> EntityState:
    """Inverse of :func:`encode_main` (sealed tiles' raw events are not in it)."""
    reader = codec.Reader(data)
    if reader.take(1)[0] != FORMAT:
        raise codec.CorruptStateError(f"unknown state format {data[0]}")
    state = machine.new_state()
    latest = reader.uvarint()
    state.latest = None if latest == 0 else codec.unzigzag(latest - 1)
    state.counters = dict(zip(COUNTERS, reader.uvarints(len(COUNTERS)), strict=True))
    keys, columns, labelled = _read_events(reader, len(machine.fields))
    state.keys, state.values = keys, columns
    state.labelled.update(labelled)
    n_pending = reader.uvarint()
    if n_pending:
        for tx, (t, labels) in json.loads(reader.take(n_pending)).items():
            state.pending[int(tx)] = (int(t), {k: float(v) for k, v in labels.items()})
    if reader.take(1)[0]:
        seconds = reader.uvarint()
        frontier = (codec.unzigzag(reader.uvarint()), codec.unzigzag(reader.uvarint()))
        n = reader.uvarint()
        ids = codec.read_sorted(reader, n)
        state.tiles = Tiles(
            seconds=seconds,
            frontier=frontier,
            ids=ids,
            counts=reader.uvarints(n),
            parts=reader.uvarints(n),
            stats={stat: codec.read_column(reader, n) for stat in machine.stats},
        )
    if not reader.at_end():
        raise codec.CorruptStateError("trailing bytes after the state")
    return state


def encode_part(state: EntityState, lo: int, hi: int, machine: EntityMachine) -> bytes:
    """A tile part's ``d``: the raw events ``state.keys[lo:hi]``."""
    out = bytearray([FORMAT])
    _write_events(out, state, lo, hi, len(machine.fields))
    return bytes(out)


def _merge_parts(
    state: EntityState, parts: list[tuple[int, int, bytes]], machine: EntityMachine
) -> None:
    """Put the raw events of loaded tile parts (tile, part, data) in front of the tail."""
    tiles = state.tiles
    assert tiles is not None
    keys: list[tuple[int, int]] = []
    columns: list[list[float]] = [[] for _ in machine.fields]
    for k, p, data in sorted(parts):
        reader = codec.Reader(data)
        if reader.take(1)[0] != FORMAT:
            raise codec.CorruptStateError(f"unknown tile part format {data[0]}")
        part_keys, part_columns, labelled = _read_events(reader, len(machine.fields))
        if part_keys:
            tiles.part_firsts.setdefault(k, {})[p] = part_keys[0]
        keys += part_keys
        for column, values in zip(columns, part_columns, strict=True):
            column.extend(values)
        state.labelled.update(labelled)
    tiles.loaded.update(k for k, _, _ in parts)
    state.keys = keys + state.keys
    state._ids = None
    state.values = [a + b for a, b in zip(columns, state.values, strict=True)]


# --- the store ------------------------------------------------------------------------


class DynamoDBStateStore:
    """StateStore over one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        item_bytes: int = 1024,
        min_part_bytes: int = 512,
        seal_bytes: int = 2048,
        max_tiles: int = 256,
        target_tile_events: int = 512,
        max_part_events: int = 1024,
        tile_seconds: int | None = None,
        clock: Callable[[], float] = time.time,
        max_retries: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        size_items: bool = True,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.item_bytes = item_bytes
        """Keep the main item within this (a write unit) when there is room for events."""
        self.min_part_bytes = min_part_bytes
        self.seal_bytes = seal_bytes
        """Unsealed bytes a busy entity (whose tiles fill ``item_bytes``) may hold."""
        self.max_tiles = max_tiles
        """The longest horizon of a busy entity holds at most this many tiles."""
        self.target_tile_events = target_tile_events
        """A tile should hold about this many events (at the rate seen at the first seal)."""
        self.max_part_events = max_part_events
        self.tile_seconds = tile_seconds
        """Force one tile length (tests); by default chosen per entity."""
        self.clock = clock
        self.max_retries = max_retries
        self.sleep = sleep
        self.usage = Usage(sizing=size_items)
        """Requests and units; ``size_items=False`` keeps only what DynamoDB reports."""

    @classmethod
    def from_env(cls, table_name: str | None = None) -> DynamoDBStateStore:
        """A store on the default boto3 session (AWS_ENDPOINT_URL points it at moto/local)."""
        import boto3

        name = table_name or os.environ.get(ENV_FEATURE_STATE_TABLE)
        if not name:
            raise ValueError(f"no table name: pass --table or set {ENV_FEATURE_STATE_TABLE}")
        return cls(boto3.client("dynamodb"), name)

    @staticmethod
    def pk(key: EntityKey) -> str:
        """The partition key of an entity."""
        return f"{key[0]}#{key[1]}"

    # --- reads -------------------------------------------------------------------------

    def load(
        self,
        requests: dict[EntityKey, list[Touch]],
        machines: dict[str, EntityMachine],
        *,
        consistent: bool = True,
    ) -> dict[EntityKey, EntityState]:
        """Main items in one round; tile parts the touches need in a second (busy only)."""
        keys = [
            {FEATURE_STATE_PK: {"S": self.pk(k)}, FEATURE_STATE_SK: {"S": MAIN_SK}}
            for k in requests
        ]
        found = {item[FEATURE_STATE_PK]["S"]: item for item in self._batch_get(keys, consistent)}
        states: dict[EntityKey, EntityState] = {}
        wanted: list[tuple[EntityKey, int, int]] = []
        for key, touches in requests.items():
            machine = machines[key[0]]
            item = found.get(self.pk(key))
            if item is None:
                states[key] = machine.new_state()
                continue
            state = states[key] = decode_main(item["d"]["B"], machine)
            state.version = int(item["v"]["N"])
            if state.tiles is not None:
                tiles = state.tiles
                for k in sorted(machine.needed_tiles(state, touches)):
                    n_parts = tiles.parts[bisect.bisect_left(tiles.ids, k)]
                    wanted += [(key, k, p) for p in range(n_parts)]
        if wanted:
            # parts strongly consistent even for lookups: an eventually consistent replica
            # may not hold yet the parts a fresh main item refers to
            self._load_parts(states, wanted, machines, consistent=True)
        return states

    def _load_parts(
        self,
        states: dict[EntityKey, EntityState],
        wanted: list[tuple[EntityKey, int, int]],
        machines: dict[str, EntityMachine],
        consistent: bool,
    ) -> None:
        keys = [
            {FEATURE_STATE_PK: {"S": self.pk(key)}, FEATURE_STATE_SK: {"S": f"T#{k}#{p}"}}
            for key, k, p in wanted
        ]
        got = {
            (item[FEATURE_STATE_PK]["S"], item[FEATURE_STATE_SK]["S"]): item["d"]["B"]
            for item in self._batch_get(keys, consistent)
        }
        per_entity: dict[EntityKey, list[tuple[int, int, bytes]]] = {}
        for key, k, p in wanted:
            data = got.get((self.pk(key), f"T#{k}#{p}"))
            if data is None:
                raise MissingStateError(
                    f"{self.pk(key)}: tile part T#{k}#{p} is missing from {self.table_name}"
                    " (expired or deleted); rebuild the entity's state by replay"
                )
            per_entity.setdefault(key, []).append((k, p, data))
        for key, parts in per_entity.items():
            _merge_parts(states[key], parts, machines[key[0]])

    def _batch_get(self, keys: list[dict[str, Any]], consistent: bool) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, retrying unprocessed keys with jittered backoff."""
        try:
            return batch_get(
                self.client,
                self.table_name,
                keys,
                consistent=consistent,
                give_up=StoreUnavailableError,
                max_retries=self.max_retries,
                sleep=self.sleep,
                on_response=lambda items, asked, response: self._count_reads(
                    items, asked, response, consistent
                ),
            )
        except self.client.exceptions.ResourceNotFoundException as exc:
            raise StoreUnavailableError(f"DynamoDB table {self.table_name!r} not found") from exc

    def _count_reads(
        self, items: list[dict[str, Any]], asked: int, response: Any, consistent: bool
    ) -> None:
        usage = self.usage
        # a key that is not found still costs the minimum read
        misses = (
            asked
            - len(items)
            - len(response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", []))
        )
        with usage._lock:
            usage.items_read += len(items)
            if usage.sizing:
                by_entity = usage.read_units_by_entity
                for item in items:
                    size = item_size(item)
                    units = read_units(size, consistent=consistent)
                    usage.bytes_read += size
                    usage.read_units += units
                    entity = item[FEATURE_STATE_PK]["S"].partition("#")[0]
                    by_entity[entity] = by_entity.get(entity, 0.0) + units
                usage.read_units += max(0, misses) * read_units(0, consistent=consistent)
        usage.reported(response, "read")

    # --- writes ------------------------------------------------------------------------

    def save(
        self, key: EntityKey, state: EntityState, machine: EntityMachine, *, seal: bool = True
    ) -> None:
        """The main item, conditioned on the version read; with its changed parts, atomically.

        Seals the unsealed events first when they outgrow :meth:`_seal_threshold` (unless
        ``seal`` is False: a write in mid-batch keeps the tiles the batch loaded as they are).
        """
        pk = self.pk(key)
        main, parts = self._items(key, state, machine, max_parts=TRANSACT_LIMIT - 1 if seal else 0)
        condition: dict[str, Any] = (
            {"ConditionExpression": f"attribute_not_exists({FEATURE_STATE_PK})"}
            if state.version == 0
            else {
                "ConditionExpression": "v = :v",
                "ExpressionAttributeValues": {":v": {"N": str(state.version)}},
            }
        )
        try:
            if parts:
                self._transact(main, condition, parts)
            else:
                response = self.client.put_item(
                    TableName=self.table_name,
                    Item=main,
                    ReturnConsumedCapacity="TOTAL",
                    **condition,
                )
                self.usage.wrote(main, "main", transactional=False)
                self.usage.reported(dict(response), "write")
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            raise ConflictError(f"{pk}: changed since it was read") from exc
        state.version += 1
        if state.tiles is not None:
            state.tiles.dirty.clear()

    def _items(
        self,
        key: EntityKey,
        state: EntityState,
        machine: EntityMachine,
        *,
        max_parts: int = TRANSACT_LIMIT - 1,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The main item (version + 1) and the changed tile parts of a state, sealed as due.

        ``max_parts``: how many parts one write may carry (a transaction takes 100 items;
        a bulk write has no such limit).
        """
        pk = self.pk(key)
        now = int(self.clock())
        data = encode_main(state, machine)
        main: dict[str, Any] = {
            FEATURE_STATE_PK: {"S": pk},
            FEATURE_STATE_SK: {"S": MAIN_SK},
            "v": {"N": str(state.version + 1)},
            "d": {"B": data},
            FEATURE_STATE_TTL: {"N": str(now + machine.horizon + 86_400)},
        }
        size = _main_size(main)
        unsealed = len(data) - self._tiles_bytes(state)
        if max_parts > 0 and unsealed > self._seal_threshold(size - unsealed):
            tiles = state.tiles
            seconds = tiles.seconds if tiles is not None else self._choose_tile(state, machine)
            room = max_parts - (len(tiles.dirty) if tiles is not None else 0)
            machine.seal(state, seconds, self.max_part_events, max_parts=max(0, room))
            main["d"] = {"B": encode_main(state, machine)}
            size = _main_size(main)
        if size > MAX_ITEM_BYTES:
            raise StateTooLargeError(
                f"{pk}: state of {size} bytes > {MAX_ITEM_BYTES} (pending labels: "
                f"{len(state.pending)}, tiles: {len(state.tiles.ids) if state.tiles else 0})"
            )
        return main, list(self._parts(pk, state, machine, now + 2 * machine.horizon))

    def write_states(
        self,
        states: dict[EntityKey, EntityState],
        machines: dict[str, EntityMachine],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write whole states in bulk (BatchWriteItem, 25 a call, unprocessed retried).

        For a table being filled (``rtml features materialize``): unconditional, so run it
        before the stream starts writing. Each state is laid out as :meth:`save` would;
        returns the number of items written.
        """
        items: list[dict[str, Any]] = []
        written = 0
        for key, state in states.items():
            state.version = 0
            main, parts = self._items(key, state, machines[key[0]], max_parts=2**31)
            items += [main, *parts]
            state.version = 1
            if state.tiles is not None:
                state.tiles.dirty.clear()
            while len(items) >= BATCH_WRITE_LIMIT:
                self._batch_write(items[:BATCH_WRITE_LIMIT])
                written += BATCH_WRITE_LIMIT
                del items[:BATCH_WRITE_LIMIT]
            if progress:
                progress(1)
        if items:
            self._batch_write(items)
            written += len(items)
        return written

    def _batch_write(self, items: list[dict[str, Any]]) -> None:
        def count(done: list[dict[str, Any]], response: dict[str, Any]) -> None:
            self.usage.reported(dict(response), "write")
            for item in done:
                self.usage.wrote(item, "bulk", transactional=False)

        batch_put(
            self.client,
            self.table_name,
            items,
            give_up=StoreUnavailableError,
            max_retries=self.max_retries,
            sleep=self.sleep,
            on_response=count,
        )

    def _seal_threshold(self, fixed: int) -> int:
        """How many bytes of unsealed events an entity may hold before it seals them.

        ``fixed``: the main item's bytes that are not unsealed events (keys, header,
        tiles). Room for events within ``item_bytes`` (one write unit) when that room is
        at least ``min_part_bytes``; else (aggregates alone fill the item: a busy entity)
        ``seal_bytes``, so that its parts stay few and large.
        """
        room = self.item_bytes - fixed
        return room if room >= self.min_part_bytes else self.seal_bytes

    @staticmethod
    def _tiles_bytes(state: EntityState) -> int:
        tiles = state.tiles
        if tiles is None:
            return 0
        # ids, counts and parts varints plus stats: measured, not estimated
        out = bytearray()
        codec.write_sorted(out, tiles.ids)
        codec.put_uvarints(out, tiles.counts)
        codec.put_uvarints(out, tiles.parts)
        for column in tiles.stats.values():
            codec.write_column(out, column)
        return len(out)

    def _choose_tile(self, state: EntityState, machine: EntityMachine) -> int:
        """The tile length of a busy entity: enough tiles to keep the main item small, and
        about ``target_tile_events`` events a tile at the entity's rate."""
        if self.tile_seconds is not None:
            return self.tile_seconds
        span = max(1, state.keys[-1][0] - state.keys[0][0]) if state.keys else 1
        rate = max(len(state.keys), 1) / span
        wanted = max(machine.horizon / self.max_tiles, self.target_tile_events / rate)
        return next((s for s in TILE_LADDER if s >= wanted), TILE_LADDER[-1])

    def _parts(
        self, pk: str, state: EntityState, machine: EntityMachine, expires: int
    ) -> Iterable[dict[str, Any]]:
        tiles = state.tiles
        if tiles is None:
            return
        for k, p in sorted(tiles.dirty):
            lo, hi = tiles.part_range(state, k, p)
            yield {
                FEATURE_STATE_PK: {"S": pk},
                FEATURE_STATE_SK: {"S": f"T#{k}#{p}"},
                "d": {"B": encode_part(state, lo, hi, machine)},
                FEATURE_STATE_TTL: {"N": str(expires)},
            }

    def _transact(
        self, main: dict[str, Any], condition: dict[str, Any], parts: list[dict[str, Any]]
    ) -> None:
        writes: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table_name, "Item": main, **condition}}
        ]
        writes += [{"Put": {"TableName": self.table_name, "Item": part}} for part in parts]
        try:
            response = self.client.transact_write_items(
                TransactItems=writes,  # type: ignore[arg-type]
                ReturnConsumedCapacity="TOTAL",
            )
        except self.client.exceptions.TransactionCanceledException as exc:
            codes = {r.get("Code") for r in exc.response.get("CancellationReasons", [])}
            if codes & RETRYABLE_CANCELLATIONS:
                # Another writer won (ConditionalCheckFailed), another transaction holds
                # the item (TransactionConflict), or the partition is throttled: read the
                # entity again and re-apply, after the engine's backoff.
                raise ConflictError(
                    f"{main[FEATURE_STATE_PK]['S']}: write cancelled"
                    f" ({', '.join(sorted(map(str, codes)))})"
                ) from exc
            raise
        self.usage.wrote(main, "main", transactional=True)
        for part in parts:
            self.usage.wrote(part, "part", transactional=True)
        self.usage.reported(dict(response), "write")


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the feature-state table as the CDK construct does (tests, local stack).

    Key schema and TTL attribute come from ``models.contracts``, like the construct's.
    """
    client.create_table(
        TableName=table_name,
        KeySchema=[
            {"AttributeName": FEATURE_STATE_PK, "KeyType": "HASH"},
            {"AttributeName": FEATURE_STATE_SK, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": FEATURE_STATE_PK, "AttributeType": "S"},
            {"AttributeName": FEATURE_STATE_SK, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": FEATURE_STATE_TTL},
    )
