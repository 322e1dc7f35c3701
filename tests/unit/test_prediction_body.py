"""A stored prediction's body: deflated against a frozen preset dictionary, read back
whether it names that dictionary or none (bodies written before it)."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime

import pytest

from models.aws_sinks import BODY_DICTIONARY, DynamoDBPredictions, decode_body
from models.contracts import Prediction
from models.features import dynamodb_store as ddb
from models.features.spec import SERVED


def _prediction(seed: int = 0) -> Prediction:
    rng = random.Random(seed)
    return Prediction(transaction_id=1754154, customer_id=4999, terminal_id=9999,
                      tx_datetime=datetime(2018, 9, 30, 23, 59, 59), score=rng.random(),
                      decision="low_risk", threshold=0.5, model_name="fraud",
                      model_version="a" * 12, challenger_score=rng.random(),
                      challenger_version="b" * 12,
                      features={n: rng.random() * 100 for n in SERVED.feature_names()},
                      scored_at=datetime(2026, 11, 27, tzinfo=UTC), path="stream")  # fmt: skip


def test_the_dictionary_is_frozen() -> None:
    # stored bodies name it by its Adler-32: editing it would make them unreadable
    assert zlib.adler32(BODY_DICTIONARY) == 2622178717


def test_a_body_round_trips_and_is_smaller_than_without_the_dictionary() -> None:
    p = _prediction()
    item = DynamoDBPredictions(None, "t")._item(p)  # type: ignore[arg-type]
    assert decode_body(item) == p
    plain = {**item, "body": {"B": zlib.compress(p.model_dump_json().encode(), 1)}}
    assert decode_body(plain) == p  # a body written before the dictionary
    assert ddb.item_size(item) < ddb.item_size(plain) - 200
    assert ddb.item_size(item) <= 1024  # one write unit, even with random 17-digit values


def test_a_body_naming_an_unknown_dictionary_is_refused() -> None:
    deflate = zlib.compressobj(1, zdict=b"another dictionary")
    body = deflate.compress(_prediction().model_dump_json().encode()) + deflate.flush()
    with pytest.raises(ValueError, match="unknown zlib dictionary"):
        decode_body({"body": {"B": body}})
