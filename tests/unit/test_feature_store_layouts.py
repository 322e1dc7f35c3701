"""Randomized: the DynamoDB store's layouts (flat, tiled at any tile length, any part size,
mid-batch writes) give exactly what the memory store gives, event by event.

Short windows (seconds) so that random streams cross tiles, horizons and window edges:
ties, late and expired events, redeliveries, labels before their transaction, relabels,
lookups. On an in-memory DynamoDB stand-in (bench.state_store.FakeDynamoDB) for speed;
the functional tests run the same store on moto.
"""

from __future__ import annotations

import random

import pytest

from bench.state_store import FakeDynamoDB
from models.features import dynamodb_store as ddb
from models.features.online import MemoryStore, OnlineFeatures, RawEvent
from models.features.spec import Aggregation, EntitySpec, FeatureSpec, Ratio, Window

SMALL = FeatureSpec(
    name="small",
    passthrough=("TX_AMOUNT",),
    calendar=(),
    entities=(
        EntitySpec(
            key="CUSTOMER_ID",
            # and a delayed one, as the improved spec's: (t - 3 - 6, t - 3]
            windows=(Window(5, "5S"), Window(17, "17S"), Window(6, "6S_3S_DELAY", 3)),
            aggregations=(
                Aggregation("NB_TX", "count"),
                Aggregation("AVG", "mean", "TX_AMOUNT"),
                Aggregation("MAX", "max", "TX_AMOUNT"),
                Aggregation("MIN", "min", "TX_AMOUNT"),
            ),
        ),
        EntitySpec(
            key="TERMINAL_ID",
            windows=(Window(4, "4S"), Window(9, "9S")),
            aggregations=(Aggregation("NB_TX", "count"), Aggregation("RISK", "ratio", "TX_FRAUD")),
            delay_seconds=6,
            label_fields=("TX_FRAUD",),
        ),
    ),
    ratios=(Ratio("AMOUNT_RATIO", "TX_AMOUNT", "CUSTOMER_ID_AVG_6S_3S_DELAY"),),
)


def random_stream(rng: random.Random) -> list[list[RawEvent]]:
    """Batches of transactions (some late, some repeated) and labels (some early)."""
    events: list[RawEvent] = []
    sent: list[RawEvent] = []
    t = rng.randint(-50, 50)
    for tx_id in range(rng.randint(20, 160)):
        t += rng.choice([0, 0, 1, 1, 2, 3, 5, 8])
        at = t - rng.randint(1, 20) if rng.random() < 0.15 else t
        amount = rng.choice([1.0, 2.5, 7.0, 13.25, 0.01, 99.99])
        event = RawEvent(
            False, tx_id, at, rng.randint(1, 3), rng.randint(1, 2), {"TX_AMOUNT": amount}
        )
        events.append(event)
        sent.append(event)
        if rng.random() < 0.1:
            events.append(rng.choice(sent))  # a redelivery
        if rng.random() < 0.5:
            old = rng.choice(sent)
            fraud = float(rng.random() < 0.3)
            label = RawEvent(True, old.transaction_id, old.time, old.customer_id, old.terminal_id,
                             {"TX_FRAUD": fraud})  # fmt: skip
            events.insert(max(0, len(events) - rng.randint(0, 6)), label)  # maybe early
    batches, i = [], 0
    while i < len(events):
        n = rng.randint(1, 12)
        batches.append(events[i : i + n])
        i += n
    return batches


def random_store(rng: random.Random) -> ddb.DynamoDBStateStore:
    return ddb.DynamoDBStateStore(
        FakeDynamoDB(),  # type: ignore[arg-type]
        "t",
        item_bytes=rng.choice([0, 0, 200, 1024]),
        seal_bytes=rng.choice([0, 1, 8, 40]),
        tile_seconds=rng.choice([1, 2, 3, 5, 7, 13, None]),
        max_part_events=rng.choice([1, 2, 5, 100]),
        clock=lambda: 0,
    )


@pytest.mark.parametrize("seed", range(150))
def test_every_layout_gives_the_memory_store_results(seed: int) -> None:
    rng = random.Random(seed)
    memory = OnlineFeatures(MemoryStore(), SMALL)
    dynamo = OnlineFeatures(random_store(rng), SMALL, flush_parts=rng.choice([1, 2, 5, 90]))
    for batch in random_stream(rng):
        expected, got = memory.process_raw(batch), dynamo.process_raw(batch)
        for e, g in zip(expected, got, strict=True):
            assert g.outcomes == e.outcomes, (seed, g.event)
            if e.features is None:
                continue
            assert g.features is not None
            assert g.features == pytest.approx(e.features, abs=1e-9, rel=0), (seed, g.event)
        probe = [e for e in batch if not e.is_label][:3]
        if probe:  # read-only lookups, on copies of (tiled) states
            for g_row, e_row in zip(dynamo.lookup(probe), memory.lookup(probe), strict=True):
                assert g_row == pytest.approx(e_row, abs=1e-9, rel=0), (seed, probe)
