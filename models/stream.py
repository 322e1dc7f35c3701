"""Scoring a Kinesis batch: parse, features, score, write, and an outcome per record.

Failure semantics, chosen for Kinesis (a shard is a log: reporting record k as failed
makes Lambda deliver k and every later record of the shard again):

- a permanent failure (a record that can never be processed: bad JSON, a field out of
  range, a transaction id seen with another payload) never blocks the shard: the record
  goes to the dead-letter sink with its reason and raw payload, and counts as done;
- a transient failure (a throttled or unavailable table, queue, bus or bucket) marks the
  record ``retry``: the handler reports it as a batch item failure and Lambda delivers it
  again; everything is idempotent, so nothing is applied, written or alerted twice;
- a batch-wide failure (the state cannot be read, no model can be loaded) raises: the
  whole batch is retried, and no record is scored with a default.

Exactly-once effects on at-least-once delivery: a redelivered record changes no feature
state (the engine's idempotent apply), writes no second prediction (first write wins in
the predictions sink), and publishes no second alert unless the previous attempt died
between publishing and recording it; a repeated alert carries the same id (the
transaction id) for consumers to drop.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from models.contracts import DEFAULT_MAX_AMOUNT, LabelEvent, Prediction
from models.features.online import OnlineFeatures, RawEvent
from models.serving import ModelRouter, predict
from models.wire import InvalidRecordError, parse_event

Status = Literal["scored", "labelled", "duplicate", "dead_lettered", "retry"]


@dataclass(frozen=True)
class StreamRecord:
    """One Kinesis record as the function receives it (decoded from the event)."""

    data: bytes
    shard_id: str
    sequence_number: str
    arrival: datetime
    """approximateArrivalTimestamp, UTC (event times are naive local time, 2018 in replays)."""


@dataclass(frozen=True)
class DeadLetter:
    """A refused record: why, and everything needed to find or replay it."""

    reason: str
    field: str
    record: StreamRecord

    def message(self, max_payload_bytes: int = 180_000) -> dict[str, object]:
        """The dead-letter message body (SQS takes 256 KB: a larger payload is cut, and the
        record stays readable in the stream by shard and sequence number)."""
        payload = base64.b64encode(self.record.data).decode()
        return {
            "reason": self.reason,
            "field": self.field,
            "shard_id": self.record.shard_id,
            "sequence_number": self.record.sequence_number,
            "arrival": self.record.arrival.isoformat(),
            "payload_base64": payload[:max_payload_bytes],
            "payload_truncated": len(payload) > max_payload_bytes,
            "payload_bytes": len(self.record.data),
        }


@dataclass(frozen=True)
class WriteResult:
    """What a predictions sink did with a batch of predictions."""

    new: set[int] = field(default_factory=set)
    """Ids written now (first write)."""
    unalerted: set[int] = field(default_factory=set)
    """Ids already stored whose high-risk alert was never recorded as sent."""
    conflicts: dict[int, str] = field(default_factory=dict)
    """Ids already stored with another transaction's payload: why."""
    failed: dict[int, Exception] = field(default_factory=dict)
    """Ids that could not be written now (throttled): retry them."""


class PredictionSink(Protocol):
    """Where predictions are kept, first write winning (DynamoDB: models/aws_sinks.py)."""

    def write(self, predictions: Sequence[Prediction]) -> WriteResult:
        """Write the predictions not stored yet; report the rest."""
        ...

    def alerted(self, ids: Sequence[int]) -> None:
        """Record that the alerts of these ids were published."""
        ...


class AlertSink(Protocol):
    """Where high-risk decisions go for downstream consumers (EventBridge)."""

    def publish(self, predictions: Sequence[Prediction]) -> dict[int, Exception]:
        """Publish; the ids that failed, and why."""
        ...


class Archive(Protocol):
    """Every prediction with its features and model version, for monitoring and retraining."""

    def append(self, predictions: Sequence[Prediction], batch_id: str) -> None:
        """Store one batch's predictions (at least once: readers drop repeated ids)."""
        ...


class DeadLetterSink(Protocol):
    """Where refused records go (SQS)."""

    def send(self, letters: Sequence[DeadLetter]) -> dict[int, Exception]:
        """Send; the indices (into ``letters``) that failed, and why."""
        ...


@dataclass
class RecordOutcome:
    """What became of one record."""

    status: Status
    reason: str | None = None
    prediction: Prediction | None = None


@dataclass
class StreamScoring:
    """The stream path's work for one batch, over injected stores and sinks."""

    engine: OnlineFeatures
    router: ModelRouter
    predictions: PredictionSink
    alerts: AlertSink
    archive: Archive
    dead_letters: DeadLetterSink
    threshold: float = 0.5
    max_amount: float = DEFAULT_MAX_AMOUNT
    max_clock_skew: timedelta | None = None
    """Refuse events dated later than arrival + this (None: off, for replays of history)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def process(self, records: Sequence[StreamRecord]) -> list[RecordOutcome]:
        """Outcomes in record order; raises only when the whole batch must be retried."""
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        letters: list[tuple[int, DeadLetter]] = []
        valid: list[tuple[int, RawEvent]] = []
        for i, record in enumerate(records):
            try:
                event = parse_event(
                    record.data,
                    max_amount=self.max_amount,
                    not_after=self._not_after(record),
                )
            except InvalidRecordError as exc:
                letters.append((i, DeadLetter(exc.reason, exc.field, record)))
                continue
            valid.append((i, RawEvent.from_event(event)))
            if isinstance(event, LabelEvent):
                outcomes[i] = RecordOutcome("labelled")

        scored = self.engine.process_raw([e for _, e in valid], strict=False)
        rows: list[tuple[int, int, int, datetime, dict[str, float | int]]] = []
        row_index: list[int] = []
        for (i, raw), result in zip(valid, scored, strict=True):
            if result.error is not None:
                outcomes[i] = RecordOutcome("retry", f"feature state: {result.error}")
            elif "conflict" in result.outcomes.values():
                entities = sorted(k for k, o in result.outcomes.items() if o == "conflict")
                reason = (
                    f"transaction_id: {raw.transaction_id} is already held with another time"
                    f" or amount ({', '.join(entities)}): another transaction reusing the id"
                )
                letters.append((i, DeadLetter(reason, "transaction_id", records[i])))
            elif result.features is not None:
                at = datetime.fromtimestamp(raw.time, UTC).replace(tzinfo=None)
                rows.append(
                    (
                        raw.transaction_id,
                        raw.customer_id,
                        raw.terminal_id,
                        at,
                        result.features,
                    )
                )
                row_index.append(i)

        if rows:
            made = predict(
                rows, self.router, threshold=self.threshold, path="stream", scored_at=self.clock()
            )
            self._write(made, row_index, records, outcomes, letters)
        self._dead_letter(letters, outcomes)
        return [o if o is not None else RecordOutcome("retry", "not processed") for o in outcomes]

    def _not_after(self, record: StreamRecord) -> datetime | None:
        if self.max_clock_skew is None:
            return None
        # event times are naive local time; compare with arrival in the same (UTC) frame
        return (record.arrival + self.max_clock_skew).astimezone(UTC).replace(tzinfo=None)

    def _write(
        self,
        made: list[Prediction],
        row_index: list[int],
        records: Sequence[StreamRecord],
        outcomes: list[RecordOutcome | None],
        letters: list[tuple[int, DeadLetter]],
    ) -> None:
        result = self.predictions.write(made)
        to_alert: list[Prediction] = []
        kept: list[Prediction] = []
        for i, prediction in zip(row_index, made, strict=True):
            tx = prediction.transaction_id
            if tx in result.failed:
                outcomes[i] = RecordOutcome("retry", f"predictions: {result.failed[tx]}")
            elif tx in result.conflicts:
                letters.append((i, DeadLetter(result.conflicts[tx], "transaction_id", records[i])))
            else:
                status: Status = "scored" if tx in result.new else "duplicate"
                outcomes[i] = RecordOutcome(status, prediction=prediction)
                kept.append(prediction)
                high = prediction.decision == "high_risk"
                if high and (tx in result.new or tx in result.unalerted):
                    to_alert.append(prediction)
        failed_alerts = self.alerts.publish(to_alert) if to_alert else {}
        sent = [p.transaction_id for p in to_alert if p.transaction_id not in failed_alerts]
        if sent:
            self.predictions.alerted(sent)
        for i, prediction in zip(row_index, made, strict=True):
            error = failed_alerts.get(prediction.transaction_id)
            if error is not None:
                outcomes[i] = RecordOutcome("retry", f"alerts: {error}", prediction)
        if kept:
            first = records[row_index[0]]
            batch_id = f"{first.shard_id}-{first.sequence_number}"
            try:
                self.archive.append(kept, batch_id)
            except Exception as exc:  # transient: the whole batch's predictions again
                for i in row_index:
                    outcome = outcomes[i]
                    if outcome is not None and outcome.status in ("scored", "duplicate"):
                        outcomes[i] = RecordOutcome("retry", f"archive: {exc}", outcome.prediction)

    def _dead_letter(
        self, letters: list[tuple[int, DeadLetter]], outcomes: list[RecordOutcome | None]
    ) -> None:
        if not letters:
            return
        failed = self.dead_letters.send([letter for _, letter in letters])
        for k, (i, letter) in enumerate(letters):
            if k in failed:  # the queue is down: keep the record in the stream, retry it
                outcomes[i] = RecordOutcome("retry", f"dead-letter queue: {failed[k]}")
            else:
                outcomes[i] = RecordOutcome("dead_lettered", letter.reason)
