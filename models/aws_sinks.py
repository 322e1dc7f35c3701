"""The stream path's sinks on AWS: DynamoDB predictions, EventBridge alerts, S3 archive,
SQS dead letters (boto3 lives here and in the feature store only).

Each call honours its service's limits (BatchGetItem 100 keys, BatchWriteItem 25 items,
PutEvents 10 entries, SendMessageBatch 10 messages) and retries what the service leaves
unprocessed with jittered backoff; what still fails is reported per item, never dropped.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from models.contracts import (
    DEFAULT_PREDICTION_TTL_DAYS,
    LATEST_SCORES_PK,
    PREDICTIONS_PK,
    PREDICTIONS_TTL,
    CustomerScore,
    Prediction,
)
from models.dynamodb_batch import BATCH_WRITE_LIMIT, batch_get, batch_put
from models.errors import RtmlError
from models.retry import backoff
from models.stream import DeadLetter, WriteResult

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ALERT_SOURCE = "rtml.stream"
ALERT_DETAIL_TYPE = "HighRiskTransaction"


class SinkUnavailableError(RtmlError):
    """A service kept refusing items after every retry (throttled, down): retry the records."""


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


BODY_COMPRESSION = 1
"""zlib level of a stored prediction: level 1 is ~4x faster than the default and a body stays
well within the item's one write unit (bench/stream.py reports the units)."""


def _body_dictionary() -> bytes:
    """A preset zlib dictionary: a prediction's JSON skeleton with the served features' names.

    The names are most of a body that zlib alone must spell out once per item; with them
    preset, a book prediction's body shrinks from about 500 bytes to about 220, and a kept
    prediction's storage with it. Frozen: stored bodies name it by its Adler-32, so a new
    dictionary is added beside this one (``BODY_DICTIONARIES``), never edited.
    """
    from models.features.spec import IMPROVED

    skeleton = {
        "schema_version": 1, "transaction_id": 0, "customer_id": 0, "terminal_id": 0,
        "tx_datetime": "2018-01-01T00:00:00", "score": 0.0, "decision": "low_risk",
        "threshold": 0.5, "model_name": "fraud", "model_version": "", "challenger_score": None,
        "challenger_version": None, "features": dict.fromkeys(IMPROVED.feature_names(), 0.0),
        "scored_at": "2026-01-01T00:00:00Z", "path": "stream",
    }  # fmt: skip
    return json.dumps(skeleton, separators=(",", ":")).encode()


BODY_DICTIONARY: Final = _body_dictionary()
BODY_DICTIONARIES: Final[dict[int, bytes]] = {zlib.adler32(BODY_DICTIONARY): BODY_DICTIONARY}
"""Every dictionary a stored body may name, by Adler-32 (a body without one needs none)."""


def encode_body(p: Prediction) -> bytes:
    """A prediction as a stored body: its JSON, deflated against ``BODY_DICTIONARY``."""
    deflate = zlib.compressobj(BODY_COMPRESSION, zdict=BODY_DICTIONARY)
    return deflate.compress(p.model_dump_json().encode()) + deflate.flush()


class DynamoDBPredictions:
    """Predictions keyed by transaction id; the first write wins.

    Item: the key, the fields that identify the transaction (to tell a redelivery from a
    different transaction reusing the id), the decision, the whole prediction as
    zlib-compressed JSON (``body``, :func:`decode_body`), the alert state (``pending`` until
    published, then ``sent``) and a TTL: about 600 bytes, one write unit. Chunks of 25 are
    written concurrently (``workers``).
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        ttl_seconds: int = DEFAULT_PREDICTION_TTL_DAYS * 86_400,
        max_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        workers: int = 4,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.ttl_seconds = ttl_seconds
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self.max_retries = max_retries
        self.sleep = sleep

    @staticmethod
    def _identity(p: Prediction) -> tuple[int, int, str, float]:
        return (p.customer_id, p.terminal_id, p.tx_datetime.isoformat(), p.features["TX_AMOUNT"])

    def write(self, predictions: Sequence[Prediction]) -> WriteResult:
        """BatchGetItem the ids, BatchWriteItem the ones not stored (no conditional batch)."""
        unique = list({p.transaction_id: p for p in reversed(predictions)}.values())[::-1]
        stored = self._existing([p.transaction_id for p in unique])
        result = WriteResult()
        fresh: list[Prediction] = []
        for p in unique:
            item = stored.get(p.transaction_id)
            if item is None:
                fresh.append(p)
                continue
            identity = (
                int(item["customer_id"]["N"]),
                int(item["terminal_id"]["N"]),
                item["tx_datetime"]["S"],
                float(item["tx_amount"]["N"]),
            )
            if identity != self._identity(p):
                result.conflicts[p.transaction_id] = (
                    f"transaction_id: {p.transaction_id} was already scored for another "
                    f"transaction (customer {identity[0]}, terminal {identity[1]}, "
                    f"{identity[2]}, amount {identity[3]})"
                )
            elif item.get("alert", {}).get("S") == "pending":
                result.unalerted.add(p.transaction_id)
        chunks = _chunks(fresh, BATCH_WRITE_LIMIT)

        def put(chunk: Sequence[Prediction]) -> Exception | None:
            try:
                self._put(chunk)
            except Exception as exc:  # throttled or unavailable: these records retry
                return exc
            return None

        errors = (
            list(self._pool.map(put, chunks))
            if self._pool is not None and len(chunks) > 1
            else [put(chunk) for chunk in chunks]
        )
        for chunk, error in zip(chunks, errors, strict=True):
            if error is None:
                result.new.update(p.transaction_id for p in chunk)
            else:
                result.failed.update({p.transaction_id: error for p in chunk})
        return result

    def _existing(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        items = batch_get(
            self.client,
            self.table_name,
            [{PREDICTIONS_PK: {"N": str(i)}} for i in ids],
            consistent=True,
            projection="transaction_id, customer_id, terminal_id, tx_datetime, tx_amount, alert",
            give_up=SinkUnavailableError,
            max_retries=self.max_retries,
            sleep=self.sleep,
        )
        return {int(item[PREDICTIONS_PK]["N"]): item for item in items}

    def _item(self, p: Prediction) -> dict[str, Any]:
        expires = int(p.scored_at.timestamp()) + self.ttl_seconds
        item: dict[str, Any] = {
            PREDICTIONS_PK: {"N": str(p.transaction_id)},
            "customer_id": {"N": str(p.customer_id)},
            "terminal_id": {"N": str(p.terminal_id)},
            "tx_datetime": {"S": p.tx_datetime.isoformat()},
            "tx_amount": {"N": repr(p.features["TX_AMOUNT"])},
            "decision": {"S": p.decision},
            "model_version": {"S": p.model_version},
            "body": {"B": encode_body(p)},
            PREDICTIONS_TTL: {"N": str(expires)},
        }
        if p.decision == "high_risk":
            item["alert"] = {"S": "pending"}
        return item

    def _put(self, chunk: Sequence[Prediction]) -> None:
        batch_put(
            self.client,
            self.table_name,
            [self._item(p) for p in chunk],
            give_up=SinkUnavailableError,
            max_retries=self.max_retries,
            sleep=self.sleep,
        )

    def alerted(self, ids: Sequence[int]) -> None:
        """Mark alerts sent (a failure here only risks one repeated, same-id alert)."""
        for tx in ids:
            self.client.update_item(
                TableName=self.table_name,
                Key={PREDICTIONS_PK: {"N": str(tx)}},
                UpdateExpression="SET alert = :sent",
                ExpressionAttributeValues={":sent": {"S": "sent"}},
            )

    def get(self, transaction_id: int) -> Prediction | None:
        """The stored prediction of a transaction (the API's GET)."""
        item = self.client.get_item(
            TableName=self.table_name, Key={PREDICTIONS_PK: {"N": str(transaction_id)}}
        ).get("Item")
        return None if item is None else decode_body(item)


class EventBridgeAlerts:
    """High-risk decisions on an EventBridge bus: source ``rtml.stream``, detail type
    ``HighRiskTransaction``, detail = the prediction (its ``transaction_id`` is the
    deduplication id)."""

    def __init__(self, client: Any, bus_name: str, *, max_retries: int = 4) -> None:
        self.client = client
        self.bus_name = bus_name
        self.max_retries = max_retries
        self.sleep: Callable[[float], None] = time.sleep

    def publish(self, predictions: Sequence[Prediction]) -> dict[int, Exception]:
        failed: dict[int, Exception] = {}
        for chunk in _chunks(predictions, 10):
            pending = list(chunk)
            for attempt in range(self.max_retries + 1):
                entries = [
                    {
                        "Source": ALERT_SOURCE,
                        "DetailType": ALERT_DETAIL_TYPE,
                        "Detail": p.model_dump_json(),
                        "EventBusName": self.bus_name,
                    }
                    for p in pending
                ]
                try:
                    response = self.client.put_events(Entries=entries)
                except Exception as exc:
                    failed.update({p.transaction_id: exc for p in pending})
                    break
                results = response.get("Entries", [])
                again = [p for p, r in zip(pending, results, strict=False) if "ErrorCode" in r]
                if not again:
                    break
                if attempt == self.max_retries:
                    failed.update(
                        {p.transaction_id: SinkUnavailableError("alert refused") for p in again}
                    )
                    break
                pending = again
                self.sleep(backoff(attempt))
        return failed


class S3Archive:
    """JSON lines under ``<prefix>/date=<transaction date>/<batch id>.jsonl``: a retried
    batch that starts at the same record rewrites its object; readers drop repeated ids."""

    def __init__(self, client: Any, bucket: str, prefix: str = "predictions") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.rstrip("/")

    def append(self, predictions: Sequence[Prediction], batch_id: str) -> None:
        by_date: dict[str, list[str]] = {}
        for p in predictions:
            by_date.setdefault(p.tx_datetime.date().isoformat(), []).append(p.model_dump_json())
        for date, lines in by_date.items():
            self.client.put_object(
                Bucket=self.bucket,
                Key=f"{self.prefix}/date={date}/{batch_id}.jsonl",
                Body=("\n".join(lines) + "\n").encode(),
                ContentType="application/x-ndjson",
            )


class SQSDeadLetters:
    """Refused records on an SQS queue, one JSON message each (see ``DeadLetter.message``)."""

    def __init__(self, client: Any, queue_url: str, *, clock: Callable[[], datetime] | None = None):
        self.client = client
        self.queue_url = queue_url
        self.clock = clock or (lambda: datetime.now(UTC))

    def send(self, letters: Sequence[DeadLetter]) -> dict[int, Exception]:
        failed: dict[int, Exception] = {}
        for start in range(0, len(letters), 10):
            chunk = letters[start : start + 10]
            entries = [
                {
                    "Id": str(start + k),
                    "MessageBody": json.dumps(
                        {**letter.message(), "dead_lettered_at": self.clock().isoformat()}
                    ),
                }
                for k, letter in enumerate(chunk)
            ]
            try:
                response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:
                failed.update({start + k: exc for k in range(len(chunk))})
                continue
            for entry in response.get("Failed", []):
                failed[int(entry["Id"])] = SinkUnavailableError(entry.get("Message", "refused"))
        return failed


def decode_body(item: dict[str, Any]) -> Prediction:
    """The prediction stored in a predictions item (``body``: its JSON deflated against a
    preset dictionary, or without one as before it existed; the item, the served spec's 21
    features included, is about 400 bytes: one write unit)."""
    body = bytes(item["body"]["B"])
    if len(body) > 6 and body[1] & 0x20:  # FDICT: the header names its dictionary
        name = int.from_bytes(body[2:6], "big")
        if name not in BODY_DICTIONARIES:
            raise ValueError(f"prediction body: unknown zlib dictionary {name:#010x}")
        inflate = zlib.decompressobj(zdict=BODY_DICTIONARIES[name])
        return Prediction.model_validate_json(inflate.decompress(body) + inflate.flush())
    return Prediction.model_validate_json(zlib.decompress(body))


class DynamoDBLatestScores:
    """The latest batch score per customer (written by batch/job.py, read by the API)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def get(self, customer_id: int) -> CustomerScore | None:
        item = self.client.get_item(
            TableName=self.table_name, Key={LATEST_SCORES_PK: {"N": str(customer_id)}}
        ).get("Item")
        if item is None:
            return None
        return CustomerScore(
            customer_id=int(item[LATEST_SCORES_PK]["N"]),
            score=float(item["score"]["N"]),
            transaction_id=int(item["transaction_id"]["N"]),
            tx_datetime=datetime.fromisoformat(item["tx_datetime"]["S"]),
            day=item["day"]["S"],
            run_id=item["run_id"]["S"],
            model_version=item["model_version"]["S"],
        )


def create_latest_scores_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the latest-scores table as the CDK construct does (tests, local runs)."""
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=[{"AttributeName": LATEST_SCORES_PK, "AttributeType": "N"}],
        KeySchema=[{"AttributeName": LATEST_SCORES_PK, "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def create_predictions_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the predictions table as the CDK construct will (tests, local stack)."""
    client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": PREDICTIONS_PK, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": PREDICTIONS_PK, "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": PREDICTIONS_TTL},
    )
