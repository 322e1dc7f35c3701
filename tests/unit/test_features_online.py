"""The online state machine: idempotency, late and expired events, labels, trimming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from models.contracts import LabelEvent, TransactionEvent
from models.features.online import MemoryStore, OnlineFeatures, RawEvent
from models.features.spec import BASELINE

T0 = datetime(2018, 4, 1, 12, 0, 0)


def tx(
    tx_id: int, at: datetime, amount: float = 10.0, customer: int = 1, terminal: int = 7
) -> TransactionEvent:
    return TransactionEvent(
        transaction_id=tx_id,
        tx_datetime=at,
        customer_id=customer,
        terminal_id=terminal,
        tx_amount=amount,
    )


def label(event: TransactionEvent, fraud: Literal[0, 1]) -> LabelEvent:
    return LabelEvent(
        transaction_id=event.transaction_id,
        tx_datetime=event.tx_datetime,
        customer_id=event.customer_id,
        terminal_id=event.terminal_id,
        tx_fraud=fraud,
    )


@pytest.fixture
def engine() -> OnlineFeatures:
    return OnlineFeatures(MemoryStore())


def test_online_customer_windows_include_the_transaction_itself(engine: OnlineFeatures) -> None:
    # given two earlier transactions, one 2 days back
    engine.process([tx(1, T0 - timedelta(days=2), 30.0), tx(2, T0 - timedelta(hours=1), 20.0)])
    # when
    (scored,) = engine.process([tx(3, T0, 40.0)])
    # then
    f = scored.features
    assert f is not None
    assert f["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2
    assert f["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(30.0)
    assert f["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 3
    assert list(f) == BASELINE.feature_names()


def test_online_same_second_ties_see_only_smaller_ids(engine: OnlineFeatures) -> None:
    a, b = engine.process([tx(11, T0, 10.0), tx(10, T0, 30.0)])
    assert a.features and b.features
    # id 10 arrives second but must not see id 11; id 11 (as of now) sees both
    assert b.features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    states = engine.store.load({("CUSTOMER_ID", 1): []}, engine.machines)
    again = engine.as_of(states, RawEvent.from_event(tx(11, T0, 10.0)))
    assert again["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2


def test_online_duplicate_transaction_changes_nothing(engine: OnlineFeatures) -> None:
    event = tx(1, T0)
    (first,) = engine.process([event])
    (second,) = engine.process([event])
    assert second.outcomes == {"CUSTOMER_ID": "duplicate", "TERMINAL_ID": "duplicate"}
    assert second.features == first.features


def test_online_terminal_risk_uses_labels_after_the_delay(engine: OnlineFeatures) -> None:
    # given a fraud at the terminal 10 days ago, labelled 7 days after it
    old = tx(1, T0 - timedelta(days=10), customer=2)
    engine.process([old, label(old, 1)])
    # when a transaction arrives now
    (now,) = engine.process([tx(2, T0)])
    # then the old one is in the 7-day window that ends 7 days ago: (t-14d, t-7d]
    assert now.features is not None
    assert now.features["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 1
    assert now.features["TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0
    assert now.features["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 0
    assert now.features["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0


def test_online_label_before_its_transaction_waits_for_it(engine: OnlineFeatures) -> None:
    old = tx(1, T0 - timedelta(days=10))
    (lab,) = engine.process([label(old, 1)])
    assert lab.outcomes == {"TERMINAL_ID": "labels_pending"}
    engine.process([old])
    (now,) = engine.process([tx(2, T0)])
    assert now.features is not None and now.features["TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0


def test_online_repeated_label_is_a_duplicate_and_a_correction_applies(
    engine: OnlineFeatures,
) -> None:
    old = tx(1, T0 - timedelta(days=10))
    engine.process([old])
    assert engine.process([label(old, 0)])[0].outcomes["TERMINAL_ID"] == "labels"
    assert engine.process([label(old, 0)])[0].outcomes["TERMINAL_ID"] == "duplicate"
    assert engine.process([label(old, 1)])[0].outcomes["TERMINAL_ID"] == "labels"
    (now,) = engine.process([tx(2, T0)])
    assert now.features is not None and now.features["TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0


def test_online_late_event_within_horizon_is_applied_and_counted(engine: OnlineFeatures) -> None:
    engine.process([tx(2, T0)])
    (late,) = engine.process([tx(1, T0 - timedelta(hours=3), 50.0)])
    assert late.outcomes["CUSTOMER_ID"] == "late"
    states = engine.store.load({("CUSTOMER_ID", 1): []}, engine.machines)
    as_of = engine.as_of(states, RawEvent.from_event(tx(2, T0)))
    assert as_of["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2


def test_online_events_older_than_the_horizon_are_ignored_and_counted(
    engine: OnlineFeatures,
) -> None:
    engine.process([tx(2, T0)])
    (old,) = engine.process([tx(1, T0 - timedelta(days=30, seconds=1))])
    assert old.outcomes["CUSTOMER_ID"] == "expired"
    # the terminal's horizon is 37 days: the same event is still useful there
    assert old.outcomes["TERMINAL_ID"] == "late"
    store = engine.store
    assert isinstance(store, MemoryStore)
    assert store.states[("CUSTOMER_ID", 1)].counters["expired"] == 1


def test_online_trims_by_event_time_not_wall_clock(engine: OnlineFeatures) -> None:
    # given 2018 events (years before today's wall clock)
    engine.process([tx(i, T0 + timedelta(days=i)) for i in range(40)])
    store = engine.store
    assert isinstance(store, MemoryStore)
    # then the customer keeps the last 30 days of its latest event, the terminal 37
    customer = store.states[("CUSTOMER_ID", 1)]
    terminal = store.states[("TERMINAL_ID", 7)]
    assert [k[1] for k in customer.keys] == list(range(10, 40))
    assert [k[1] for k in terminal.keys] == list(range(3, 40))


def test_online_rejects_bad_events_with_typed_errors() -> None:
    with pytest.raises(ValueError, match="tx_amount"):
        TransactionEvent(
            transaction_id=1, tx_datetime=T0, customer_id=1, terminal_id=1, tx_amount=-1
        )
    with pytest.raises(ValueError, match="naive"):
        TransactionEvent.model_validate_json(
            '{"transaction_id":1,"tx_datetime":"2018-04-01T00:00:00Z","customer_id":1,'
            '"terminal_id":1,"tx_amount":1}'
        )


def test_online_same_id_with_other_values_is_a_conflict_never_applied(
    engine: OnlineFeatures,
) -> None:
    engine.process([tx(1, T0, 10.0)])
    # when the id comes back with another amount, or at another time
    other_amount, other_time = engine.process(
        [tx(1, T0, 99.0), tx(1, T0 + timedelta(minutes=5), 10.0, customer=1, terminal=8)]
    )
    # then both are refused by the card, whose state keeps the first transaction only
    assert other_amount.outcomes["CUSTOMER_ID"] == "conflict"
    assert other_time.outcomes["CUSTOMER_ID"] == "conflict"
    states = engine.store.load({("CUSTOMER_ID", 1): []}, engine.machines)
    card = states[("CUSTOMER_ID", 1)]
    assert card.keys == [(int(T0.replace(tzinfo=UTC).timestamp()), 1)]
    assert card.values == [[10.0]]
    assert card.counters["conflict"] == 2
