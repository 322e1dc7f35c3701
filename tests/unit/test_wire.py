"""The wire format: what a stream record may be, and how each refusal names its field."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from models.contracts import LabelEvent, TransactionEvent
from models.wire import InvalidRecordError, parse_event

GOOD: dict[str, Any] = {
    "transaction_id": 11,
    "tx_datetime": "2018-04-01T12:00:00",
    "customer_id": 7,
    "terminal_id": 42,
    "tx_amount": 57.19,
}


def record(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_wire_transaction_needs_no_event_type() -> None:
    event = parse_event(record())
    assert isinstance(event, TransactionEvent)
    assert event.tx_datetime == datetime(2018, 4, 1, 12)
    assert event.schema_version == 1


def test_wire_label_and_schema_version_one() -> None:
    event = parse_event(record(event_type="label", tx_amount=..., tx_fraud=1, schema_version=1))
    assert isinstance(event, LabelEvent) and event.tx_fraud == 1


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"customer_id": "7"}, "customer_id", "valid integer"),
        ({"tx_amount": True}, "tx_amount", "valid number"),
        ({"terminal_id": ...}, "terminal_id", "Field required"),
        ({"merchant": "x"}, "merchant", "Extra inputs"),
        ({"customer_id": -1}, "customer_id", "greater than or equal to 0"),
        ({"transaction_id": 2**64}, "transaction_id", "less than or equal to"),
        ({"tx_amount": -0.01}, "tx_amount", "greater than or equal to 0"),
        ({"tx_amount": 1e9}, "tx_amount", "above the maximum amount"),
        ({"tx_datetime": "yesterday"}, "tx_datetime", "valid datetime"),
        ({"tx_datetime": "2018-04-01T12:00:00+02:00"}, "tx_datetime", "naive local time"),
        ({"schema_version": 2}, "schema_version", "Input should be 1"),
        ({"event_type": "refund"}, "event_type", "unknown event type"),
        ({"event_type": "label", "tx_fraud": 2}, "tx_fraud", "Input should be 0 or 1"),
    ],
)
def test_wire_refusals_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidRecordError) as refused:
        parse_event(record(**changes))
    assert refused.value.field == field
    assert refused.value.reason.startswith(f"{field}: ")
    assert words in refused.value.reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e999"])
def test_wire_non_finite_amount_is_refused(literal: bytes) -> None:
    with pytest.raises(InvalidRecordError) as refused:
        parse_event(record().replace(b"57.19", literal))
    assert refused.value.field == "tx_amount"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "record"),
        (b"x" * (1_048_576 + 1), "over the 1048576-byte record limit"),
    ],
)
def test_wire_unreadable_records_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(InvalidRecordError, match=words):
        parse_event(data)


def test_wire_future_events_are_refused_when_a_skew_limit_is_set() -> None:
    late = record(tx_datetime="2099-01-01T00:00:00")
    assert parse_event(late).tx_datetime.year == 2099  # replays: no limit
    with pytest.raises(InvalidRecordError, match=r"tx_datetime: .*clock skew"):
        parse_event(late, not_after=datetime(2026, 11, 26, 15, 5))


def test_wire_amount_limit_comes_from_settings() -> None:
    event = parse_event(record(tx_amount=2e6), max_amount=5e6)
    assert isinstance(event, TransactionEvent) and event.tx_amount == 2e6


def test_prediction_record_is_strictly_shaped() -> None:
    from datetime import UTC

    from pydantic import ValidationError

    from models.contracts import Prediction

    fields: dict[str, Any] = {
        "transaction_id": 11,
        "customer_id": 7,
        "terminal_id": 42,
        "tx_datetime": datetime(2018, 4, 1, 12),
        "score": 0.93,
        "decision": "high_risk",
        "threshold": 0.5,
        "model_name": "fraud",
        "model_version": "abc123",
        "features": {"TX_AMOUNT": 57.19},
        "scored_at": datetime(2026, 11, 26, tzinfo=UTC),
        "path": "stream",
    }
    assert Prediction(**fields).challenger_score is None
    with pytest.raises(ValidationError, match="score"):
        Prediction(**{**fields, "score": 1.5})
    with pytest.raises(ValidationError, match="decision"):
        Prediction(**{**fields, "decision": "maybe"})


def test_wire_encode_event_roundtrips_through_parse() -> None:
    from models.features.online import RawEvent
    from models.wire import encode_event

    sale = RawEvent(False, 5, 1_522_584_000, 7, 42, {"TX_AMOUNT": 57.19})
    chargeback = RawEvent(True, 5, 1_522_584_000, 7, 42, {"TX_FRAUD": 1.0})
    assert RawEvent.from_event(parse_event(encode_event(sale))) == sale
    assert RawEvent.from_event(parse_event(encode_event(chargeback))) == chargeback
