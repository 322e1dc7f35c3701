"""The wire format of the input streams: one JSON object per Kinesis record.

Every path that takes events from outside (the stream scorer, the API) parses them here,
so a record is accepted or refused the same way everywhere. A refusal is permanent (the
record can never be processed, whatever the retries): :class:`InvalidRecordError`, whose
``reason`` names the field, e.g. ``tx_amount: Input should be greater than or equal to 0``.

    >>> parse_event(b'{"transaction_id": 1, "tx_datetime": "2018-04-01T12:00:00",'
    ...             b' "customer_id": 7, "terminal_id": 42, "tx_amount": 57.19}').event_type
    'transaction'
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import TypeAdapter, ValidationError

from models.contracts import (
    DEFAULT_MAX_AMOUNT,
    MAX_RECORD_BYTES,
    LabelEvent,
    StreamEvent,
    TransactionEvent,
)
from models.errors import RtmlError
from models.features.online import RawEvent

Event = TransactionEvent | LabelEvent
STREAM_EVENT: TypeAdapter[Event] = TypeAdapter(StreamEvent)
_TAGS = frozenset({"transaction", "label"})


class InvalidRecordError(RtmlError):
    """A record refused for good: its reason names the field (or ``record`` for the whole)."""

    def __init__(self, reason: str, field: str = "record") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def parse_event(
    data: bytes,
    *,
    max_amount: float = DEFAULT_MAX_AMOUNT,
    not_after: datetime | None = None,
) -> Event:
    """One record's data -> a validated event, or :class:`InvalidRecordError`.

    ``not_after``: refuse events dated later (arrival time + the allowed clock skew);
    None for replays of history.
    """
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidRecordError(
            f"record: {len(data)} bytes, over the {MAX_RECORD_BYTES}-byte record limit"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(f"record: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return STREAM_EVENT.validate_json(
            text, context={"max_amount": max_amount, "not_after": not_after}
        )
    except ValidationError as exc:
        raise _refusal(exc) from None


def _refusal(exc: ValidationError) -> InvalidRecordError:
    """The first error as a one-line reason naming its field, the others counted."""
    errors = exc.errors(include_url=False)
    reasons = []
    for error in errors:
        loc = [str(part) for part in error["loc"] if part not in _TAGS]
        where = ".".join(loc) or "record"
        message = error["msg"]
        if error["type"] == "union_tag_invalid":
            where, message = "event_type", f"unknown event type; expected one of {sorted(_TAGS)}"
        reasons.append((where, message))
    field, message = reasons[0]
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return InvalidRecordError(f"{field}: {message}{more}", field)


def encode_event(event: RawEvent) -> bytes:
    """An engine event as a record of this wire format (replays, producers, tests)."""
    fields: dict[str, object] = {
        "transaction_id": event.transaction_id,
        "tx_datetime": datetime.fromtimestamp(event.time, UTC).replace(tzinfo=None).isoformat(),
        "customer_id": event.customer_id,
        "terminal_id": event.terminal_id,
    }
    if event.is_label:
        fields |= {"event_type": "label", "tx_fraud": int(event.values["TX_FRAUD"])}
    else:
        fields["tx_amount"] = event.values["TX_AMOUNT"]
    return json.dumps(fields, separators=(",", ":")).encode()
