"""The handbook's chapter 5 selection: its folds, the choice per metric, and the same
results whether the fits run in one process or several."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest

from models.evaluation import Metrics
from models.selection import GridPoint, HandbookProtocol, choose, select_family
from models.training import FeatureFrame


def test_the_folds_are_the_books() -> None:
    protocol = HandbookProtocol()
    starts = [f.train_start for f in protocol.validation_folds()]
    assert starts == [date(2018, 7, 11), date(2018, 7, 4), date(2018, 6, 27), date(2018, 6, 20)]
    tests = protocol.test_folds()
    assert [f.train_start for f in tests] == [
        date(2018, 8, 15), date(2018, 8, 8), date(2018, 8, 1), date(2018, 7, 25)
    ]  # fmt: skip
    # every validation week is assessed before the first test fold trains on it... and ends
    # before the test period of the base protocol starts
    assert max(f.test_end for f in protocol.validation_folds()) <= date(2018, 8, 8)
    assert [f.test_start for f in tests][-1] == date(2018, 8, 8)


def _metrics(auc: float, ap: float, cp: float) -> Metrics:
    return Metrics(auc_roc=auc, average_precision=ap, card_precision_at_100=cp)


def test_each_metric_chooses_by_its_validation_mean_and_reports_its_test_folds() -> None:
    a = GridPoint(params={"C": 1}, validation=[_metrics(0.9, 0.5, 0.2)] * 2,
                  test=[_metrics(0.8, 0.4, 0.1), _metrics(0.6, 0.2, 0.3)])  # fmt: skip
    b = GridPoint(params={"C": 10}, validation=[_metrics(0.8, 0.6, 0.2)] * 2,
                  test=[_metrics(0.7, 0.7, 0.2)] * 2)  # fmt: skip
    assert choose([a, b], "auc").params == {"C": 1}
    chosen = choose([a, b], "ap")
    assert chosen.params == {"C": 10} and chosen.test_mean == pytest.approx(0.7)
    first = choose([a, b], "auc")
    assert first.test_mean == pytest.approx(0.7) and first.test_folds == [0.8, 0.6]
    assert first.test_std == pytest.approx(0.1)  # the population std, as the book reports
    assert choose([a, b], "cp100").params == {"C": 1}  # a tie keeps the first


def _frame(seed: int = 0) -> FeatureFrame:
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64("2018-06-10"), np.datetime64("2018-09-10"))
    day = np.repeat(days, 300)
    x = rng.normal(size=(day.size, 3))
    labels = (x[:, 0] + rng.normal(scale=1.5, size=day.size) > 3.0).astype(np.int8)
    return FeatureFrame(x=x, labels=labels, days=day, cards=rng.integers(0, 2000, day.size),
                        feature_names=("a", "b", "c"))  # fmt: skip


def test_a_family_is_selected_alike_in_one_process_or_several() -> None:
    frame = _frame()
    grid = {"C": [0.01, 1.0]}
    one = select_family(frame, "logistic_regression", HandbookProtocol(), grid=grid)
    two = select_family(frame, "logistic_regression", HandbookProtocol(), grid=grid, workers=2)
    assert [p.model_dump() for p in one.points] == [p.model_dump() for p in two.points]
    assert len(one.points) == 2 and all(len(p.test) == 4 for p in one.points)
    assert set(one.best) == {"auc", "ap", "cp100"}
    assert one.best["ap"].test_mean > 0.1  # the label follows x[0]: the model finds it


def test_a_table_missing_a_fold_is_refused_naming_it() -> None:
    frame = _frame()
    late = frame.take(np.flatnonzero(frame.days >= np.datetime64("2018-07-01")))
    with pytest.raises(ValueError, match="has no data"):
        select_family(late, "logistic_regression", HandbookProtocol(), grid={"C": [1.0]})


def test_the_report_page_holds_the_summary_and_a_curve_per_model_and_metric() -> None:
    from models.selection import SelectionReport
    from models.selection_html import render

    protocol = HandbookProtocol()
    family = select_family(_frame(1), "logistic_regression", protocol, grid={"C": [0.1, 1.0]})
    report = SelectionReport(protocol=protocol, models={"logistic_regression": family},
                             seconds=1.0, validation_folds=[f.describe() for f in
                             protocol.validation_folds()], test_folds=[f.describe() for f
                             in protocol.test_folds()])  # fmt: skip
    page = render(report)
    assert page.count("<svg") == 3 and "0.623" in page  # the book's AP for the model
    assert len(report.summary()) == 3


def _improved_frame() -> FeatureFrame:
    """A frame with the improved spec's columns; the label follows one added feature."""
    from models.features.spec import IMPROVED

    names = tuple(IMPROVED.feature_names())
    rng = np.random.default_rng(3)
    days = np.repeat(np.arange(np.datetime64("2018-06-10"), np.datetime64("2018-09-10")), 200)
    x = rng.normal(size=(days.size, len(names)))
    signal = names.index("CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW_7DAY_DELAY")
    labels = (x[:, signal] + 0.3 * rng.normal(size=days.size) > 2.2).astype(np.int8)
    return FeatureFrame(x=x, labels=labels, days=days, cards=rng.integers(0, 3000, days.size),
                        feature_names=names)  # fmt: skip


def test_the_improved_model_is_chosen_on_validation_scored_lean_and_ablated() -> None:
    from models.features.spec import BASELINE, IMPROVED
    from models.selection import SelectionReport, improve, improve_fits
    from models.selection_html import render

    protocol = HandbookProtocol()
    grid: dict[str, list[Any]] = {"max_depth": [2], "n_estimators": [10], "learning_rate": [0.3],
            "scale_pos_weight": [1, 5]}  # fmt: skip
    ticks: list[int] = []
    best = improve(_improved_frame(), protocol, spec=IMPROVED, grid=grid,
                   previous=("xgboost_ch5", BASELINE, {"max_depth": 2, "n_estimators": 10}),
                   progress=ticks.append)  # fmt: skip
    assert sum(ticks) == improve_fits(protocol, IMPROVED, grid)
    # the pick is the best validation AP of the grid, and both weightings are reported
    chosen = max(best.grid.points, key=lambda p: p.mean("validation", "ap"))
    assert best.params == {"verbosity": 0, "tree_method": "exact", "base_score": 0.5,
                           **chosen.params}  # fmt: skip
    assert [w.scale_pos_weight for w in best.weighting] == [1, 5]
    # the test figures are the lean scorer's, and equal XGBoost's own to float rounding
    assert best.lean_scorer_max_abs_diff < 1e-6
    assert best.test.mean["ap"] == pytest.approx(chosen.mean("test", "ap"), abs=1e-6)
    # one ablation row per added feature, after the row with all of them; removing the
    # feature the label follows costs the most, and the baseline alone knows nothing of it
    assert [a.removed for a in best.ablation] == ["", *best.added] and len(best.added) == 6
    worst = min(best.ablation[1:], key=lambda a: a.test.mean["ap"])
    assert worst.removed == "CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW_7DAY_DELAY"
    assert best.previous.test.mean["ap"] < best.test.mean["ap"] - 0.3
    assert best.met == {m: best.test.mean[m] >= g for m, g in best.goal.items()}
    # and the page shows it
    report = SelectionReport(protocol=protocol, models={}, seconds=1.0, validation_folds=[],
                             test_folds=[], best=best)  # fmt: skip
    page = render(report)
    assert "Ablation" in page and page.count("<svg") == 2 and "scale_pos_weight" in page


def test_the_default_model_is_the_committed_selections_best() -> None:
    # rtml train's xgboost_improved and xgboost_ch5 are what docs/selection chose
    import json
    from pathlib import Path

    from models.features.spec import IMPROVED
    from models.training import CH5_XGBOOST, IMPROVED_XGBOOST, MODEL_CONFIGS

    report = json.loads((Path(__file__).parents[2] / "docs/selection/selection.json").read_text())
    best = report["best"]
    fixed = {"verbosity", "tree_method", "base_score"}
    chosen = {k: v for k, v in best["params"].items() if k not in fixed}
    assert chosen == IMPROVED_XGBOOST
    assert (
        best["features"] == IMPROVED.feature_names() and best["spec_hash"] == IMPROVED.spec_hash()
    )
    assert report["models"]["xgboost"]["best"]["ap"]["params"] == CH5_XGBOOST
    assert best["previous"]["params"] == MODEL_CONFIGS["xgboost_ch5"].params
