"""The improved feature spec: it extends the baseline without changing it, its delayed
window and ratios mean what they say, and models of either spec are served."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from models import simulator as sim
from models.artifact import FeatureSpecMismatchError, load_artifact, read_manifest
from models.contracts import TRANSACTIONS_COLUMNS, arrow_schema
from models.features.offline import compute_features
from models.features.online import MemoryStore, OnlineFeatures, RawEvent
from models.features.spec import (
    BASELINE,
    IMPROVED,
    SERVED,
    Aggregation,
    EntitySpec,
    FeatureSpec,
    Ratio,
    Window,
)
from tests.unit.test_scorer import save

BASELINE_HASH = "7a0b9cbd94d84d99bbbe256f6a8e1f1dbe2b739e59c3db14658f9373a4f01af3"
"""The baseline's hash as recorded in every artifact and feature table written before."""


def test_the_baseline_hash_did_not_move_with_the_new_spec_fields() -> None:
    assert BASELINE.spec_hash() == BASELINE_HASH
    assert IMPROVED.spec_hash() != BASELINE_HASH
    assert IMPROVED.lineage() == [IMPROVED, BASELINE]


def test_the_improved_spec_holds_the_baseline_features_unchanged() -> None:
    table = sim.simulate(
        sim.SimulationConfig(n_customers=60, n_terminals=120, nb_days=50)
    ).to_arrow()
    base, improved = compute_features(table, BASELINE), compute_features(table, IMPROVED)
    for name, values in base.items():
        np.testing.assert_array_equal(improved[name], values, err_msg=name)
    added = [n for n in IMPROVED.feature_names() if n not in base]
    assert len(added) == 6 and len(IMPROVED.feature_names()) == 21
    # a card's first transactions have no week-old month: the ratio to it is 0, not inf
    delayed = improved["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW_7DAY_DELAY"]
    ratio = improved["CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW_7DAY_DELAY"]
    assert np.any(delayed == 0) and np.all(ratio[delayed == 0] == 0)
    assert np.all(np.isfinite(ratio))


def _history(days_and_amounts: list[tuple[float, float]]) -> pa.Table:
    t0 = datetime(2018, 4, 1)
    n = len(days_and_amounts)
    times = [t0 + timedelta(days=d) for d, _ in days_and_amounts]
    columns = {
        "TRANSACTION_ID": list(range(n)), "TX_DATETIME": times, "CUSTOMER_ID": [1] * n,
        "TERMINAL_ID": list(range(n)), "TX_AMOUNT": [a for _, a in days_and_amounts],
        "TX_TIME_SECONDS": [0] * n, "TX_TIME_DAYS": [0] * n, "TX_FRAUD": [0] * n,
        "TX_FRAUD_SCENARIO": [0] * n,
    }  # fmt: skip
    return pa.table(columns, schema=arrow_schema(TRANSACTIONS_COLUMNS))


def test_the_delayed_window_is_the_month_that_ended_a_week_before() -> None:
    # given a card's spending: 10 on days 0 and 20, then 50 (five times as much) on days
    # 30, 31 and 32, the last one the transaction scored
    table = _history([(0, 10.0), (20, 10.0), (30, 50.0), (31, 50.0), (32, 50.0)])
    features = compute_features(table, IMPROVED)
    last = {name: float(values[-1]) for name, values in features.items()}
    # then the delayed window (day -5, day 25] holds days 0 and 20 only: the usual spending
    assert last["CUSTOMER_ID_NB_TX_30DAY_WINDOW_7DAY_DELAY"] == 2
    assert last["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW_7DAY_DELAY"] == 10.0
    assert last["CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW_7DAY_DELAY"] == 5.0
    # while the undelayed month is pulled up by the spree itself: (10 + 50 * 3) / 4
    assert last["CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW"] == pytest.approx(50 / 40)
    # and the online engine computes the same on arrival
    engine = OnlineFeatures(MemoryStore(), IMPROVED)
    rows = table.to_pylist()
    events = [RawEvent(False, r["TRANSACTION_ID"], int(r["TX_DATETIME"].timestamp()), 1,
                       r["TERMINAL_ID"], {"TX_AMOUNT": r["TX_AMOUNT"]}) for r in rows]  # fmt: skip
    online = engine.process_raw(events)[-1].features
    assert online is not None and online == pytest.approx(last, abs=1e-12)


def test_a_spec_refuses_a_ratio_of_an_unknown_feature_and_dropping_what_it_extends() -> None:
    entity = EntitySpec("CUSTOMER_ID", (Window.days(1),), (Aggregation("NB_TX", "count"),))
    with pytest.raises(ValueError, match="ratio R: no feature"):
        FeatureSpec("s", ("TX_AMOUNT",), (), (entity,), ratios=(Ratio("R", "TX_AMOUNT", "X"),))
    with pytest.raises(ValueError, match="drops"):
        FeatureSpec("s", ("TX_AMOUNT",), (), (entity,), extends=BASELINE)


def test_the_served_spec_serves_models_of_the_specs_it_extends(tmp_path: Path) -> None:
    save(tmp_path / "baseline", "logistic_regression", seed=1)
    save(tmp_path / "improved", "logistic_regression", seed=1, spec=IMPROVED)
    assert load_artifact(tmp_path / "baseline", spec=SERVED).manifest.feature_names == (
        BASELINE.feature_names()
    )
    assert len(load_artifact(tmp_path / "improved", spec=SERVED).manifest.feature_names) == 21
    # but code that computes only the baseline cannot serve the improved model
    with pytest.raises(FeatureSpecMismatchError, match="rtml_amount_ratios"):
        load_artifact(tmp_path / "improved", spec=BASELINE)
    assert read_manifest(tmp_path / "baseline").feature_spec_hash == BASELINE_HASH
