"""The online feature state in DynamoDB: the StateStore adapter (boto3 lives here only).

Layout (one table, names in ``models.contracts``): an entity is a partition
``pk = "<ENTITY>#<id>"`` holding

- ``sk = "HEAD"``: ``version`` (the optimistic lock), ``latest`` event time, counters;
- ``sk = "B#<bucket>"``: the entity's events whose time falls in one time bucket
  (``bucket_seconds``, a week by default), packed as binary arrays.

Bucketing keeps each item far under DynamoDB's 400 KB limit for busy entities (a packed
event costs 24 bytes; a bucket over ``max_item_bytes`` is refused with a clear error that
says to shorten the buckets) and lets a read fetch exactly the buckets a window needs:
one BatchGetItem for a whole Kinesis batch, unprocessed keys retried with backoff. A
write is one TransactWriteItems per entity: the HEAD put conditioned on the version read,
plus the touched buckets; a concurrent writer makes it fail as a ConflictError, and the
engine re-reads and re-applies. The TTL attribute is processing time + horizon + one
bucket (an event-time TTL would have DynamoDB delete a replay's fresh items at once).
"""

from __future__ import annotations

import bisect
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from models.contracts import (
    ENV_FEATURE_STATE_TABLE,
    FEATURE_STATE_PK,
    FEATURE_STATE_SK,
    FEATURE_STATE_TTL,
)
from models.errors import RtmlError
from models.features.online import (
    COUNTERS,
    ConflictError,
    EntityKey,
    EntityMachine,
    EntityState,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

HEAD = "HEAD"
RETRYABLE_CANCELLATIONS = frozenset(
    {
        "ConditionalCheckFailed",
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
    }
)
"""Cancellation reasons of TransactWriteItems after which a fresh read and retry succeeds."""
BATCH_GET_LIMIT = 100
MAX_ITEM_BYTES = 350_000  # DynamoDB's limit is 400 KB; keep a margin for names and HEAD
assert sys.byteorder == "little", "packed arrays assume a little-endian host"


class StateTooLargeError(RtmlError):
    """One bucket of an entity's events would exceed the DynamoDB item size limit."""


class StoreUnavailableError(RtmlError):
    """The table is missing, or DynamoDB kept returning unprocessed keys after every retry."""


def _pack(kind: str, values: Sequence[Any]) -> bytes:
    return array(kind, values).tobytes()


def _unpack(kind: str, data: bytes) -> list[Any]:
    packed = array(kind)
    packed.frombytes(data)
    return packed.tolist()


class DynamoDBStateStore:
    """StateStore over one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        bucket_seconds: int = 7 * 86_400,
        max_item_bytes: int = MAX_ITEM_BYTES,
        clock: Callable[[], float] = time.time,
        max_retries: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.bucket_seconds = bucket_seconds
        self.max_item_bytes = max_item_bytes
        self.clock = clock
        self.max_retries = max_retries
        self.sleep = sleep

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

    def bucket(self, event_time: int) -> int:
        """The time bucket of an event time."""
        return event_time // self.bucket_seconds

    # --- reads -------------------------------------------------------------------------

    def load(
        self, requests: dict[EntityKey, tuple[int, int]], machines: dict[str, EntityMachine]
    ) -> dict[EntityKey, EntityState]:
        """HEAD and the buckets covering (min_time - horizon, max_time] of each entity."""
        wanted: list[dict[str, Any]] = []
        for key, (t_min, t_max) in requests.items():
            pk = self.pk(key)
            wanted.append({FEATURE_STATE_PK: {"S": pk}, FEATURE_STATE_SK: {"S": HEAD}})
            first = self.bucket(t_min - machines[key[0]].horizon)
            for b in range(first, self.bucket(t_max) + 1):
                wanted.append({FEATURE_STATE_PK: {"S": pk}, FEATURE_STATE_SK: {"S": f"B#{b}"}})
        items = self._batch_get(wanted)
        by_pk: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_pk.setdefault(item[FEATURE_STATE_PK]["S"], []).append(item)
        return {
            key: self._decode(by_pk.get(self.pk(key), []), machines[key[0]]) for key in requests
        }

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, retrying unprocessed keys with jittered backoff."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            pending: list[dict[str, Any]] = keys[start : start + BATCH_GET_LIMIT]
            for attempt in range(self.max_retries + 1):
                try:
                    response = self.client.batch_get_item(
                        RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": True}}
                    )
                except self.client.exceptions.ResourceNotFoundException as exc:
                    raise StoreUnavailableError(
                        f"DynamoDB table {self.table_name!r} not found"
                    ) from exc
                found.extend(response.get("Responses", {}).get(self.table_name, []))
                unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name)
                if not unprocessed:
                    break
                pending = list(unprocessed["Keys"])
                if attempt == self.max_retries:
                    raise StoreUnavailableError(
                        f"{len(pending)} keys still unprocessed after {attempt} retries"
                    )
                self.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        return found

    def _decode(self, items: list[dict[str, Any]], machine: EntityMachine) -> EntityState:
        state = machine.new_state()
        buckets = sorted(
            (int(i[FEATURE_STATE_SK]["S"][2:]), i)
            for i in items
            if i[FEATURE_STATE_SK]["S"] != HEAD
        )
        n_fields = len(machine.fields)
        for _, item in buckets:
            times = _unpack("q", item["t"]["B"])
            ids = _unpack("q", item["i"]["B"])
            values = _unpack("d", item["v"]["B"])
            n = len(times)
            state.keys.extend(zip(times, ids, strict=True))
            for f in range(n_fields):
                state.values[f].extend(values[f * n : (f + 1) * n])
            state.labelled.update(_unpack("q", item["l"]["B"]))
            for tx_id, (t, labels) in json.loads(item["p"]["S"]).items():
                state.pending[int(tx_id)] = (int(t), {k: float(v) for k, v in labels.items()})
        head = next((i for i in items if i[FEATURE_STATE_SK]["S"] == HEAD), None)
        if head is not None:
            state.version = int(head["version"]["N"])
            state.latest = int(head["latest"]["N"])
            stored = {k: int(v["N"]) for k, v in head["counters"]["M"].items()}
            state.counters = {c: stored.get(c, 0) for c in COUNTERS}
        return state

    # --- writes ------------------------------------------------------------------------

    def save(
        self, key: EntityKey, state: EntityState, touched: set[int], machine: EntityMachine
    ) -> None:
        """HEAD (conditioned on the version read) and the touched buckets, atomically."""
        pk = self.pk(key)
        expires = int(self.clock()) + machine.horizon + self.bucket_seconds
        head: dict[str, Any] = {
            FEATURE_STATE_PK: {"S": pk},
            FEATURE_STATE_SK: {"S": HEAD},
            "version": {"N": str(state.version + 1)},
            "latest": {"N": str(state.latest if state.latest is not None else 0)},
            "counters": {"M": {c: {"N": str(v)} for c, v in state.counters.items()}},
            FEATURE_STATE_TTL: {"N": str(expires)},
        }
        condition = (
            {"ConditionExpression": f"attribute_not_exists({FEATURE_STATE_PK})"}
            if state.version == 0
            else {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(state.version)}},
            }
        )
        writes: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table_name, "Item": head, **condition}}
        ]
        for b in sorted({self.bucket(t) for t in touched}):
            item = self._encode_bucket(pk, b, state, machine, expires)
            writes.append({"Put": {"TableName": self.table_name, "Item": item}})
        try:
            self.client.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
        except self.client.exceptions.TransactionCanceledException as exc:
            codes = {r.get("Code") for r in exc.response.get("CancellationReasons", [])}
            if codes & RETRYABLE_CANCELLATIONS:
                # Another writer won (ConditionalCheckFailed), another transaction holds
                # the item (TransactionConflict), or the partition is throttled: read the
                # entity again and re-apply, after the engine's backoff.
                raise ConflictError(
                    f"{pk}: write cancelled ({', '.join(sorted(map(str, codes)))})"
                ) from exc
            raise
        state.version += 1

    def _encode_bucket(
        self, pk: str, b: int, state: EntityState, machine: EntityMachine, expires: int
    ) -> dict[str, Any]:
        lo, hi = b * self.bucket_seconds, (b + 1) * self.bucket_seconds
        # keys are sorted by (time, id): the bucket is one slice
        first, last = bisect.bisect_left(state.keys, (lo,)), bisect.bisect_left(state.keys, (hi,))
        times = [t for t, _ in state.keys[first:last]]
        ids = [tx for _, tx in state.keys[first:last]]
        values = [v for column in state.values for v in column[first:last]]
        labelled = [tx for tx in ids if tx in state.labelled]
        pending = {
            str(tx): [t, labels] for tx, (t, labels) in state.pending.items() if lo <= t < hi
        }
        item: dict[str, Any] = {
            FEATURE_STATE_PK: {"S": pk},
            FEATURE_STATE_SK: {"S": f"B#{b}"},
            "t": {"B": _pack("q", times)},
            "i": {"B": _pack("q", ids)},
            "v": {"B": _pack("d", values)},
            "l": {"B": _pack("q", labelled)},
            "p": {"S": json.dumps(pending, separators=(",", ":"))},
            "n": {"N": str(len(ids))},
            FEATURE_STATE_TTL: {"N": str(expires)},
        }
        size = sum(len(v.get("B", b"")) + len(v.get("S", "")) for v in item.values())
        if size > self.max_item_bytes:
            raise StateTooLargeError(
                f"{pk} bucket {b} holds {len(ids)} events ({size} bytes > {self.max_item_bytes}):"
                " lower bucket_seconds so that a bucket fits in one DynamoDB item"
            )
        return item


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
