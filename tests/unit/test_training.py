"""The handbook's protocol, known-compromised cards, model families and selection."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from models import training
from models.contracts import BASELINE_FEATURES, column_names
from models.datasets import write_dataset
from models.features.offline import compute_features
from models.features.table import FeatureTableSummary, feature_table
from models.simulator import SimulationConfig, simulate
from rtml import cli

SIM_START = date(2018, 6, 1)
# 300 cards, 600 terminals, 63 days: ~35k rows in ~1 s, frauds in every week
SMALL = SimulationConfig(n_customers=300, n_terminals=600, nb_days=63, start_date=SIM_START)
PROTOCOL = training.Protocol(train_start=date(2018, 7, 10))


@pytest.fixture(scope="module")
def frame() -> training.FeatureFrame:
    transactions = simulate(SMALL).to_arrow()
    return training.FeatureFrame.from_table(
        feature_table(transactions, compute_features(transactions))
    )


def _d(n: int) -> np.datetime64:
    return np.datetime64("2018-07-01") + np.timedelta64(n, "D")


def test_split_drops_cards_known_before_each_test_day() -> None:
    # given train days 0-1, delay day 2, test days 3-4 (0-based from 2018-07-01)
    protocol = training.Protocol(
        train_start=date(2018, 7, 1), delta_train=2, delta_delay=1, delta_test=2
    )
    rows = [
        (-1, 9, 1),  # 0: before the training window: in no set; its fraud is not known
        (0, 1, 1),  # 1: card 1 frauds in the training window -> known from test day 0
        (1, 2, 0),  # 2
        (2, 3, 1),  # 3: card 3 frauds on the delay day -> known from test day 1 only
        (3, 1, 0),  # 4: card 1, known: dropped
        (3, 3, 0),  # 5: card 3, not yet known on test day 0 (knowledge up to day 1): kept
        (3, 4, 1),  # 6: card 4 frauds on test day 0: kept
        (3, 9, 0),  # 7: card 9's fraud predates the training window: kept
        (4, 3, 1),  # 8: card 3 is known on test day 1 (knowledge up to day 2): dropped
        (4, 4, 0),  # 9: card 4's fraud is on day 3, known only from day 5: kept
        (4, 2, 0),  # 10: genuine card: kept
        (5, 2, 0),  # 11: after the test window
    ]
    days = np.array([_d(d) for d, _, _ in rows])
    cards = np.array([c for _, c, _ in rows])
    labels = np.array([y for _, _, y in rows])
    # when
    sets = training.split(days, cards, labels, protocol)
    # then
    assert sets.train.tolist() == [1, 2]
    assert sets.test.tolist() == [5, 6, 7, 9, 10]
    assert sets.dropped_known == 2


def test_split_windows_respect_the_delay_and_never_overlap(
    frame: training.FeatureFrame,
) -> None:
    # given the default 7/7/7 protocol on a simulated history
    # when
    sets = training.split(frame.days, frame.cards, frame.labels, PROTOCOL)
    # then training rows sit in the training week, test rows in the test week, a week apart
    train_days = np.unique(frame.days[sets.train]).tolist()
    test_days = np.unique(frame.days[sets.test]).tolist()
    assert train_days == [date(2018, 7, 10) + timedelta(days=i) for i in range(7)]
    assert test_days == [date(2018, 7, 24) + timedelta(days=i) for i in range(7)]
    assert (test_days[0] - train_days[-1]).days == PROTOCOL.delta_delay + 1
    assert not np.intersect1d(sets.train, sets.test).size
    # and no card with a fraud in the training week appears in the test week
    known = np.unique(frame.cards[sets.train][frame.labels[sets.train] == 1])
    assert known.size and not np.isin(frame.cards[sets.test], known).any()


def test_prequential_folds_end_before_the_test_period() -> None:
    # given the default protocol
    # when
    folds = training.prequential_folds(training.Protocol(), n_folds=4)
    # then fold 0 is assessed on the training week, each later fold a week earlier
    assert [f.test_start for f in folds] == [
        date(2018, 7, 25) - timedelta(days=7 * f) for f in range(4)
    ]
    assert all(f.test_end <= training.Protocol().test_start for f in folds)
    assert folds[3].train_start == date(2018, 6, 20)


def test_scaler_standardizes_with_the_training_mean_and_std() -> None:
    # given a column with mean 2, population std 1, and a constant column
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    # when
    scaler = training.fit_scaler(x)
    # then
    assert scaler.mean == [2.0, 5.0] and scaler.scale == [1.0, 1.0]
    assert scaler.apply(x).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    assert all(type(v) is float for v in scaler.mean + scaler.scale)


@pytest.mark.parametrize(
    "name", ["logistic_regression", "decision_tree", "random_forest", "xgboost"]
)
def test_train_each_family_learns_something(frame: training.FeatureFrame, name: str) -> None:
    # given a small simulated feature table and a baseline family
    config = training.resolve_config(name, max_depth=None if name != "decision_tree" else 4)
    # when
    outcome = training.train(frame, config, PROTOCOL, n_jobs=1)
    # then it ranks frauds above chance on the unseen test week
    assert outcome.test_metrics.auc_roc > 0.5
    assert outcome.test_metrics.average_precision > frame.labels.mean()
    assert outcome.feature_names == column_names(BASELINE_FEATURES)
    assert len(outcome.scaler.mean) == len(outcome.feature_names) == outcome.test.x.shape[1]
    assert outcome.test_scores.shape == (len(outcome.test),)


def test_train_result_json_has_the_issue_schema(frame: training.FeatureFrame) -> None:
    # given a trained tree
    outcome = training.train(frame, training.resolve_config("decision_tree_depth2"), PROTOCOL)
    ref = training.ArtifactRef(name="fraud", version="1", path="/tmp/a")
    # when
    result = json.loads(outcome.result(ref).model_dump_json())
    # then
    assert set(result) == {"model", "artifact", "test", "train", "n_train", "n_test", "timings"}
    assert set(result["test"]) == {"auc_roc", "average_precision", "card_precision_at_100"}
    assert set(result["train"]) == set(result["test"])
    assert set(result["timings"]) == {"fit_s", "predict_s"}
    assert result["artifact"] == {"name": "fraud", "version": "1", "path": "/tmp/a"}
    assert result["model"] == "decision_tree_depth2" and outcome.params == {"max_depth": 2}


def test_select_params_chooses_on_validation_folds_only(
    frame: training.FeatureFrame,
) -> None:
    # given a two-point grid on two prequential folds
    config = training.ModelConfig(
        name="tree_tuned",
        family="decision_tree",
        search=training.SearchSpace(grid={"max_depth": [1, 3]}, n_folds=2),
    )
    # when
    fits: list[int] = []
    outcome = training.train(frame, config, PROTOCOL, progress=fits.append)
    # then progress counts every fit: 2 candidates x 2 folds, then the final model
    assert sum(fits) == config.work_units() == 5
    # and the choice is recorded, made on folds that end before the test week
    selection = outcome.selection
    assert selection is not None
    assert [c.params for c in selection.candidates] == [{"max_depth": 1}, {"max_depth": 3}]
    best = max(selection.candidates, key=lambda c: c.mean.average_precision)
    assert selection.selected == best.params and outcome.params == best.params
    assert all(f["test_end"] <= PROTOCOL.test_start.isoformat() for f in selection.folds)
    assert outcome.training_record()["selection"]["selected"] == best.params


def test_resolve_config_max_depth_fixes_trees_and_refuses_linear() -> None:
    # given / when
    tuned = training.resolve_config("xgboost_tuned", max_depth=4)
    # then max_depth leaves the grid and is fixed
    assert tuned.params["max_depth"] == 4
    assert tuned.search is not None and "max_depth" not in tuned.search.grid
    with pytest.raises(ValueError, match="tree models"):
        training.resolve_config("logistic_regression", max_depth=3)
    with pytest.raises(ValueError, match="unknown model"):
        training.resolve_config("svm")


def test_train_refuses_a_protocol_outside_the_data(frame: training.FeatureFrame) -> None:
    # given a protocol after the simulated history ends
    late = training.Protocol(train_start=date(2019, 1, 1))
    # when / then
    with pytest.raises(ValueError, match="no training transactions"):
        training.train(frame, training.resolve_config("decision_tree_depth2"), late)


def test_rtml_train_prints_one_json_object_and_writes_artifact_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a small feature table on disk, as `rtml features` writes it
    transactions = simulate(SMALL).to_arrow()
    features = compute_features(transactions)
    summary = FeatureTableSummary(
        engine="offline",
        source="test",
        n_rows=transactions.num_rows,
        features=list(features),
        seconds=0.0,
    )
    write_dataset(feature_table(transactions, features), tmp_path / "features", summary)
    out = tmp_path / "artifact"
    argv = ["train", "--data", str(tmp_path / "features"), "--model", "decision_tree"]
    argv += ["--max-depth", "3", "--train-start", "2018-07-10", "--out", str(out), "--json"]
    # when
    code = cli.main(argv)
    # then stdout is exactly one JSON object: the TrainResult
    assert code == 0
    result = training.TrainResult.model_validate_json(capsys.readouterr().out)
    assert result.model == "decision_tree" and result.test.auc_roc > 0.5
    assert result.artifact is not None and result.artifact.path == str(out)
    assert (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / "report").iterdir()) == [
        "card_precision_per_day.png",
        "precision_recall_curve.png",
        "roc_curve.png",
        "score_distribution.png",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "svm"], "unknown model 'svm'"),
        (["--max-depth", "0"], "--max-depth: must be >= 1"),
        (["--delta-test", "0"], "--delta-test: must be >= 1"),
    ],
)
def test_rtml_train_bad_arguments_give_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given / when
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", "x", "--out", "y", *argv])
    # then
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def _write_table(root: Path, spec_name: str) -> None:
    from models.features.spec import FEATURE_SETS

    spec = FEATURE_SETS[spec_name]
    transactions = simulate(SMALL).to_arrow()
    features = compute_features(transactions, spec)
    summary = FeatureTableSummary(engine="offline", source="test", n_rows=transactions.num_rows,
                                  features=list(features), seconds=0.0,
                                  spec_hash=spec.spec_hash())  # fmt: skip
    write_dataset(feature_table(transactions, features, spec), root, summary)


def test_rtml_train_defaults_to_the_improved_model_and_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.artifact import read_manifest
    from models.features.spec import BASELINE, IMPROVED

    # given an improved feature table (a superset of the baseline's)
    _write_table(tmp_path / "features", "improved")
    base = ["train", "--data", str(tmp_path / "features"), "--train-start", "2018-07-10"]
    # when rtml train runs with its defaults, and with the chapter 5 model
    assert cli.main([*base, "--out", str(tmp_path / "improved"), "--json"]) == 0
    assert cli.main([*base, "--model", "xgboost_ch5", "--out", str(tmp_path / "ch5")]) == 0
    capsys.readouterr()
    # then the default is XGBoost on the improved features; the previous best reads the
    # baseline columns of the same table
    improved, ch5 = read_manifest(tmp_path / "improved"), read_manifest(tmp_path / "ch5")
    assert improved.training["config"] == "xgboost_improved"
    assert improved.feature_names == IMPROVED.feature_names()
    assert improved.feature_spec_hash == IMPROVED.spec_hash()
    assert improved.training["params"]["n_estimators"] == training.IMPROVED_XGBOOST["n_estimators"]
    assert ch5.feature_names == BASELINE.feature_names()
    assert ch5.feature_spec_hash == BASELINE.spec_hash()


def test_a_baseline_table_cannot_train_the_improved_model(tmp_path: Path) -> None:
    from models.features.spec import IMPROVED

    _write_table(tmp_path / "features", "baseline")
    with pytest.raises(ValueError, match="does not hold the rtml_amount_ratios features"):
        training.load_features(tmp_path / "features", IMPROVED)
    frame = training.load_features(tmp_path / "features")
    with pytest.raises(ValueError, match="trains on the improved features"):
        training.train(frame, training.resolve_config("xgboost_improved"), PROTOCOL)
