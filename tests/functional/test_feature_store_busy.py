"""A busy terminal (a large merchant) on the DynamoDB store: exact, bounded, never refused.

The stream path's hot key: thousands of transactions a day at one terminal. Its state
must stay exact (against the offline engine), every item far below DynamoDB's 400 KB,
and its main item (what every write rewrites) small whatever the rate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from bench.state_store import busy_terminal_table
from models.features import dynamodb_store as ddb
from models.features.offline import compute_features
from models.features.online import OnlineFeatures
from models.features.replay import LabelFeed, history_events

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.functional
TABLE = "busy-feature-state"


def stream_busy_terminal(
    dynamodb: DynamoDBClient, per_day: int, days: int, labels: LabelFeed, batch: int
) -> tuple[ddb.DynamoDBStateStore, float]:
    """Stream the terminal's history through the store; the worst |online - offline|.

    Its customers are few (20), so that they are busy too: the card side (no delay, the
    window ends at the transaction itself) is tiled as well.
    """
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE)
    table = busy_terminal_table(per_day, days, customers=20)
    expected = compute_features(table)
    events, rows = history_events(table, timedelta(days=7), labels)
    engine = OnlineFeatures(store)
    worst = 0.0
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        for scored, row in zip(engine.process_raw(chunk), rows[start : start + batch], strict=True):
            if scored.features is None:
                continue
            for name, value in scored.features.items():
                want = expected[name][row]
                if np.issubdtype(expected[name].dtype, np.integer):
                    assert value == want, (name, row)
                worst = max(worst, abs(float(value) - float(want)))
    return store, worst


def entity_items(dynamodb: DynamoDBClient, pk: str = "TERMINAL_ID#0") -> list[dict[str, Any]]:
    pages = dynamodb.get_paginator("query").paginate(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
    )
    return [item for page in pages for item in page["Items"]]


@pytest.mark.parametrize("labels", ["chargebacks", "all"])
def test_busy_terminal_is_exact_and_bounded(dynamodb: DynamoDBClient, labels: LabelFeed) -> None:
    # given a terminal at 1,000 transactions a day for 10 days (labels into sealed tiles)
    store, worst = stream_busy_terminal(dynamodb, 1000, 10, labels, batch=500)
    # then every feature equals the offline engine's
    assert worst <= 1e-9
    # and the terminal and its cards are tiled: small main items plus parts
    for pk in ("TERMINAL_ID#0", "CUSTOMER_ID#0"):
        items = entity_items(dynamodb, pk)
        main = next(i for i in items if i["sk"]["S"] == ddb.MAIN_SK)
        assert len(items) > 1, pk
        assert ddb.item_size(main) <= 4096
        assert max(ddb.item_size(i) for i in items) <= 16_384
    assert store.usage.write_units_by_entity["TERMINAL_ID"] > 0


@pytest.mark.slow
def test_busy_terminal_at_ten_thousand_a_day_for_37_days(
    dynamodb: DynamoDBClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the terminal of a large merchant: 10,000 transactions a day, a whole horizon
    store, worst = stream_busy_terminal(dynamodb, 10_000, 37, "chargebacks", batch=1000)
    # then exact, and no item anywhere near DynamoDB's 400 KB
    assert worst <= 1e-9
    items = entity_items(dynamodb)
    main = next(i for i in items if i["sk"]["S"] == ddb.MAIN_SK)
    largest = max(ddb.item_size(i) for i in items)
    assert ddb.item_size(main) <= 4096
    assert largest <= 16_384
    events = 370_000 + int(0.01 * 370_000)
    with capsys.disabled():
        print(
            f"\nbusy terminal 10k/day x 37 days: max diff {worst:.1e}, largest item {largest} B,"
            f" main item {ddb.item_size(main)} B, {len(items)} items;"
            f" terminal WU/event {store.usage.write_units_by_entity['TERMINAL_ID'] / events:.3f},"
            f" RU/event {store.usage.read_units_by_entity['TERMINAL_ID'] / events:.3f}"
        )
