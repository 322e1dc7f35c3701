"""Online == offline: the acceptance test of the feature engines.

(a) a simulated history replayed in event-time order (labels 7 days late) gives, for
every transaction, features computed on arrival equal to the offline ones; (b) a random
small history applied in any order, with duplicates, gives as-of features equal to the
offline ones for every transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.features import pandas_reference
from models import simulator as sim
from models.contracts import TRANSACTIONS_COLUMNS, LabelEvent, TransactionEvent, arrow_schema
from models.features.offline import compute_features
from models.features.online import MemoryStore, OnlineFeatures, RawEvent
from models.features.replay import replay_history
from models.features.spec import BASELINE, IMPROVED, SERVED, FeatureSpec

T0 = datetime(2018, 4, 1)


def assert_features_equal(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, values in expected.items():
        if values.dtype == np.int64:
            np.testing.assert_array_equal(got[name], values, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], values, rtol=0, atol=1e-9, err_msg=name)


@pytest.fixture(scope="module")
def simulated() -> pa.Table:
    config = sim.SimulationConfig(n_customers=150, n_terminals=300, nb_days=75, radius=8.0)
    return sim.simulate(config).to_arrow()


def test_offline_equals_the_pandas_rolling_reference(simulated: pa.Table) -> None:
    ours = compute_features(simulated)
    df = simulated.to_pandas()
    ref = pandas_reference(df).loc[df.index]
    assert_features_equal(ours, {n: ref[n].to_numpy() for n in ref.columns})


@pytest.mark.parametrize("spec", [BASELINE, IMPROVED], ids=lambda s: s.name)
def test_parity_replay_features_on_arrival_equal_offline(
    simulated: pa.Table, spec: FeatureSpec
) -> None:
    # when the history is replayed as the stream would deliver it
    result = replay_history(simulated, spec, batch_size=97)
    # then every transaction's on-arrival features equal the offline ones
    assert_features_equal(result.features, compute_features(simulated, spec))
    assert result.counters["late"] == 0 and result.counters["expired"] == 0
    assert result.counters["labels"] == simulated.num_rows


@st.composite
def histories(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    """A small history (< 30 days, so nothing is trimmed) and a delivery order with repeats."""
    n = draw(st.integers(1, 30))
    # coarse times on a few days so that same-second ties and window edges are common
    seconds = draw(
        st.lists(st.integers(0, 20 * 24).map(lambda h: h * 3600), min_size=n, max_size=n)
    )
    ids = draw(st.permutations(range(1000, 1000 + n)))
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.int64()),
            pa.array([T0 + timedelta(seconds=s) for s in seconds], pa.timestamp("s")),
            pa.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), pa.int64()),
            pa.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), pa.int64()),
            pa.array(
                draw(
                    st.lists(st.integers(0, 50000).map(lambda c: c / 100), min_size=n, max_size=n)
                ),
                pa.float64(),
            ),
            pa.array(seconds, pa.int64()),
            pa.array([s // 86400 for s in seconds], pa.int64()),
            pa.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), pa.int8()),
            pa.array([0] * n, pa.int8()),
        ],
        schema=arrow_schema(TRANSACTIONS_COLUMNS),
    )
    # 2n events (transaction i = 2i, label i = 2i+1), shuffled, some delivered twice
    order = draw(st.permutations(range(2 * n)))
    repeats = draw(st.lists(st.integers(0, 2 * n - 1), max_size=n))
    return table, [*order, *repeats]


@settings(max_examples=150, deadline=None)
@given(histories())
def test_parity_any_order_with_duplicates_as_of_equals_offline(
    history: tuple[pa.Table, list[int]],
) -> None:
    # given
    table, delivery = history
    rows = table.to_pylist()
    events: list[TransactionEvent | LabelEvent] = []
    for r in rows:
        common = {
            "transaction_id": r["TRANSACTION_ID"],
            "tx_datetime": r["TX_DATETIME"],
            "customer_id": r["CUSTOMER_ID"],
            "terminal_id": r["TERMINAL_ID"],
        }
        events.append(TransactionEvent(tx_amount=r["TX_AMOUNT"], **common))
        events.append(LabelEvent(tx_fraud=r["TX_FRAUD"], **common))
    store = MemoryStore()
    engine = OnlineFeatures(store, IMPROVED)
    # when every event is delivered, in this order, in batches of 3
    ordered = [events[i] for i in delivery]
    for start in range(0, len(ordered), 3):
        engine.process(ordered[start : start + 3])
    # then as-of features equal offline, for every transaction
    expected = compute_features(table, IMPROVED)
    got: dict[str, list[float | int]] = {n: [] for n in IMPROVED.feature_names()}
    for event in events[0::2]:
        for name, value in engine.as_of(store.states, RawEvent.from_event(event)).items():
            got[name].append(value)
    counts = IMPROVED.count_features()
    assert_features_equal(
        {n: np.asarray(v, dtype=np.int64 if n in counts else np.float64) for n, v in got.items()},
        expected,
    )


@pytest.mark.slow
def test_parity_book_size_replay_equals_offline() -> None:
    # the served spec: the baseline's 15 features and the 6 the improved spec adds
    table = sim.simulate(sim.SimulationConfig()).to_arrow()
    result = replay_history(table, SERVED)
    assert_features_equal(result.features, compute_features(table, SERVED))
