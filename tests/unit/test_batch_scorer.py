"""The numpy batch scorer returns the lean scorer's numbers, row for row.

The lean scorer is the oracle (it is itself checked against the libraries in
test_scorer.py). Every family is trained small with a scaler, saved and loaded as an
artifact, and both scorers see rows on and one ulp below every folded split bound, NaN,
infinities and huge values. Branches and leaf sums must be bit-identical: with the
sigmoid swapped for the lean one, the results are compared with ``==``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models import batch_scorer
from models.artifact import (
    MODEL_FILE,
    ArtifactError,
    ArtifactIntegrityError,
    LoadedModel,
    load_artifact,
    save_artifact,
)
from models.batch_scorer import (
    BLOCK_ROWS,
    BatchScorer,
    build_batch_scorer,
    load_batch_scorer,
)
from models.features.spec import BASELINE
from models.scorer import (
    LinearModel,
    ScorerError,
    Tree,
    TreeEnsemble,
    build_scorer,
    fold_scaler,
    sigmoid,
    sklearn_bounds,
    xgboost_bounds,
)
from tests.unit.test_scorer import FAMILIES, N_FEATURES, _data, save, thresholds

F64 = npt.NDArray[np.float64]
SHALLOW = "shallow_forest"
"""A random forest of depth 5: scikit-learn trees (mean of leaves) on the bitvector path."""
CASES = (*FAMILIES, SHALLOW)


def _lean_sigmoid(margin: F64, out: F64) -> None:
    out[:] = [sigmoid(float(m)) for m in margin]


@pytest.fixture
def lean_sigmoid(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The batch scorer with ``math.exp`` instead of numpy's: then every result is exact."""
    monkeypatch.setattr(batch_scorer, "_sigmoid", _lean_sigmoid)
    yield


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[LoadedModel, F64]]:
    """Each family trained on scaled inputs (XGBoost with NaN), and rows that probe it.

    (scikit-learn trees fitted on NaN may split at threshold inf, which an artifact cannot
    hold: they are trained without, and still see NaN when scored.)
    """
    out = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(family)
        nan = 0.05 if family == "xgboost" else 0.0
        _, mean, scale, loaded = save(path, family, seed=1, nan_fraction=nan)
        out[family] = (loaded, _probe_rows(path, family, mean, scale))
    path = tmp_path_factory.mktemp(SHALLOW)
    mean, scale = _save_shallow_forest(path)
    out[SHALLOW] = (load_artifact(path), _probe_rows(path, "random_forest", mean, scale))
    return out


def _save_shallow_forest(path: Path) -> tuple[F64, F64]:
    from sklearn.ensemble import RandomForestClassifier

    x, y = _data(2)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / scale
    model = RandomForestClassifier(n_estimators=12, max_depth=5, random_state=0, n_jobs=1)
    model.fit(z, y)
    save_artifact(
        path,
        name="shallow",
        model=model,
        family="random_forest",
        feature_names=BASELINE.feature_names(),
        scaler_mean=mean.tolist(),
        scaler_scale=scale.tolist(),
        training={},
        metrics={},
        reference_features=x,
        reference_scores=model.predict_proba(z)[:, 1],
    )
    return mean, scale


def _probe_rows(path: Path, family: str, mean: F64, scale: F64) -> F64:
    """Ordinary rows; rows on and one ulp below folded bounds; NaN, +-inf, huge, signed 0."""
    x, _ = _data(7, n=300)
    rows = [*x]
    for f, ts in thresholds(path, family).items():
        bounds = xgboost_bounds(ts) if family == "xgboost" else sklearn_bounds(ts)
        for b in bounds[:30]:
            raw = fold_scaler(b, float(mean[f]), float(scale[f]))
            for value in (raw, math.nextafter(raw, -math.inf)):
                row = x[len(rows) % len(x)].copy()
                row[f] = value
                rows.append(row)
    rng = np.random.default_rng(3)
    for value in (math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0):
        odd = x[:60].copy()
        odd[rng.random(odd.shape) < 0.3] = value
        rows += [*odd]
    rows.append(np.full(N_FEATURES, math.nan))
    return np.array(rows)


def _same(a: F64, b: F64) -> bool:
    """Equal, NaN equal to NaN."""
    return bool(np.array_equal(a, b, equal_nan=True))


# --- equality with the lean scorer -------------------------------------------------------------


@pytest.mark.parametrize("family", CASES)
@pytest.mark.parametrize("method", ["auto", "bitvector", "walk"])
def test_batch_equals_lean_bit_for_bit(
    family: str,
    method: batch_scorer.Method,
    artifacts: dict[str, tuple[LoadedModel, F64]],
    lean_sigmoid: None,
) -> None:
    # given an artifact, its lean scorers (generated code and array walker) and probe rows
    loaded, rows = artifacts[family]
    if method == "bitvector" and family in ("decision_tree", "random_forest"):
        pytest.skip("unpruned trees have more than 64 leaves (see the refusal test)")
    lean = np.array(loaded.score_batch(rows.tolist()))
    walker = load_artifact(loaded.path, codegen_max_nodes=0)
    # when the batch scorer scores the same rows
    scorer = load_batch_scorer(loaded, method=method)
    ours = scorer.score_matrix(rows)
    # then every probability is the lean one, exactly (same branches, same sum order)
    assert ours.dtype == np.float64 and ours.shape == (len(rows),)
    assert _same(ours, lean)
    assert _same(ours, np.array(walker.score_batch(rows.tolist())))


@pytest.mark.parametrize("family", CASES)
def test_batch_with_numpy_exp_is_within_an_ulp(
    family: str, artifacts: dict[str, tuple[LoadedModel, F64]]
) -> None:
    # given the real (numpy) sigmoid, the only step that may differ from the lean scorer
    loaded, rows = artifacts[family]
    lean = np.array(loaded.score_batch(rows.tolist()))
    ours = load_batch_scorer(loaded).score_matrix(rows)
    # then the difference is at most ~1 ulp of a probability, NaN where the lean has NaN
    assert _same(np.isnan(ours), np.isnan(lean))
    assert np.nanmax(np.abs(ours - lean)) <= 1e-15


def test_batch_kind_follows_tree_size(artifacts: dict[str, tuple[LoadedModel, F64]]) -> None:
    scorers: dict[str, BatchScorer] = {f: load_batch_scorer(artifacts[f][0]) for f in CASES}
    kinds = {f: s.kind for f, s in scorers.items()}
    assert all(s.n_features == N_FEATURES for s in scorers.values())
    assert kinds == {
        "xgboost": "bitvector",
        SHALLOW: "bitvector",
        "random_forest": "walk",  # grown to purity: hundreds of leaves a tree
        "decision_tree": "walk",
        "logistic_regression": "linear",
    }
    with pytest.raises(ArtifactError, match="leaves, more than 64"):
        load_batch_scorer(artifacts["decision_tree"][0], method="bitvector")


# --- shapes, threads, refusal ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression", "decision_tree"])
def test_batch_empty_input_and_wrong_shape(
    family: str, artifacts: dict[str, tuple[LoadedModel, F64]]
) -> None:
    scorer = load_batch_scorer(artifacts[family][0])
    # zero rows: zero probabilities
    empty = scorer.score_matrix(np.empty((0, N_FEATURES)))
    assert empty.shape == (0,) and empty.dtype == np.float64
    # a wrong column count, or a single row as a vector: a ValueError naming the count
    for bad in (np.zeros((3, N_FEATURES - 1)), np.zeros((3, N_FEATURES + 1)), np.zeros(15)):
        with pytest.raises(ValueError, match=f"{N_FEATURES} feature columns"):
            scorer.score_matrix(bad)
    with pytest.raises(ValueError, match="threads"):
        scorer.score_matrix(np.zeros((1, N_FEATURES)), threads=0)


@pytest.mark.parametrize("family", ["xgboost", "random_forest", "logistic_regression"])
def test_batch_threads_and_blocks_change_nothing(
    family: str, artifacts: dict[str, tuple[LoadedModel, F64]]
) -> None:
    # given more rows than one block, in Python lists (any array-like is accepted)
    loaded, rows = artifacts[family]
    many = np.resize(rows, (2 * BLOCK_ROWS + 123, N_FEATURES))
    scorer = load_batch_scorer(loaded)
    one = scorer.score_matrix(many)
    # then blocks and threads give the same numbers as row-by-row scoring
    assert _same(scorer.score_matrix(many, threads=3), one)
    assert _same(scorer.score_matrix(many[:5].tolist()), one[:5])
    assert _same(scorer.score_matrix(many[2:3]), one[2:3])


def test_batch_without_numpy_bitwise_count(
    artifacts: dict[str, tuple[LoadedModel, F64]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given numpy 1.26 (pyproject allows it): no np.bitwise_count
    loaded, rows = artifacts["xgboost"]
    scorer = load_batch_scorer(loaded)
    expected = scorer.score_matrix(rows)
    monkeypatch.delattr(np, "bitwise_count")
    # then the float-exponent fallback finds the same leaves
    assert _same(scorer.score_matrix(rows), expected)


def test_batch_load_refuses_a_model_file_changed_after_loading(
    artifacts: dict[str, tuple[LoadedModel, F64]], tmp_path: Path
) -> None:
    loaded, _ = artifacts["xgboost"]
    for item in loaded.path.iterdir():
        if item.is_file():
            (tmp_path / item.name).write_bytes(item.read_bytes())
    copy = load_artifact(tmp_path)
    (tmp_path / MODEL_FILE).write_text((tmp_path / MODEL_FILE).read_text() + " ")
    with pytest.raises(ArtifactIntegrityError, match="changed"):
        load_batch_scorer(copy)


def test_batch_import_does_not_import_numpy() -> None:
    # numpy loads on first use: importing the module from a light path costs nothing
    code = "import sys, models.batch_scorer\nprint('numpy' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stderr


# --- hand-built trees: the corners of both tree paths -------------------------------------------


def _tree(**arrays: Any) -> Tree:
    return Tree.of(**arrays)


def _corner_ensemble() -> TreeEnsemble:
    """Bounds at +-inf, NaN both ways, a lone leaf, an unreachable node, signed zeros."""
    inf = math.inf
    trees = (
        _tree(  # left iff NaN: nothing is below -inf
            left=[1, -1, -1],
            right=[2, -1, -1],
            feature=[0, 0, 0],
            bound=[-inf, 0.0, 0.0],
            missing_left=[True, False, False],
            value=[0.0, 5.0, -3.0],
        ),
        _tree(  # left unless +inf or NaN
            left=[1, -1, -1],
            right=[2, -1, -1],
            feature=[1, 0, 0],
            bound=[inf, 0.0, 0.0],
            missing_left=[False, False, False],
            value=[0.0, 0.25, -0.0],
        ),
        _tree(left=[-1], right=[-1], feature=[0], bound=[0.0], missing_left=[False], value=[0.5]),
        _tree(  # node 3 is unreachable (XGBoost keeps pruned nodes)
            left=[1, -1, -1, 4, -1, -1],
            right=[2, -1, -1, 5, -1, -1],
            feature=[1, 0, 0, 0, 0, 0],
            bound=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            missing_left=[True, False, False, False, False, False],
            value=[0.0, -0.0, 1.5, 0.0, 99.0, 99.0],
        ),
        _tree(  # a chain three deep on both features
            left=[1, -1, 3, -1, 5, -1, -1],
            right=[2, -1, 4, -1, 6, -1, -1],
            feature=[0, 0, 1, 0, 0, 0, 0],
            bound=[-1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 0.0],
            missing_left=[False, False, True, False, False, False, False],
            value=[0.0, 1.0, 0.0, 2.0, 0.0, 4.0, 8.0],
        ),
    )
    return TreeEnsemble(trees=trees, aggregation="sum_sigmoid", base_margin=-0.5)


def _corner_rows() -> F64:
    values = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 2.0, 3.0, 1e308, -1e308, 2.5]
    values += [math.nextafter(v, -math.inf) for v in (-1.0, 2.0, 3.0)]
    return np.array([[a, b] for a in values for b in values])


@pytest.mark.parametrize("method", ["bitvector", "walk"])
@pytest.mark.parametrize("aggregation", ["sum_sigmoid", "mean"])
@pytest.mark.parametrize("scaler", [(0.0, 1.0), (0.3, 1.7)])
def test_batch_corner_trees_equal_lean(
    method: batch_scorer.Method,
    aggregation: str,
    scaler: tuple[float, float],
    lean_sigmoid: None,
) -> None:
    corner = _corner_ensemble()
    ensemble = TreeEnsemble(corner.trees, aggregation, corner.base_margin)  # type: ignore[arg-type]
    mean, scale = [scaler[0]] * 2, [scaler[1]] * 2
    rows = _corner_rows()
    ours = build_batch_scorer(
        ensemble, scaler_mean=mean, scaler_scale=scale, method=method
    ).score_matrix(rows)
    walker = build_scorer(ensemble, scaler_mean=mean, scaler_scale=scale, codegen_max_nodes=0)
    assert _same(ours, np.array(walker.score_batch(rows.tolist())))
    # the generated code folds the bound -inf into -max, so sends x = -inf left where the
    # walker (and z < -inf) sends it right: compare it on the other rows only
    code = build_scorer(ensemble, scaler_mean=mean, scaler_scale=scale)
    assert code.kind == "codegen"
    finite = rows[rows[:, 0] != -math.inf]
    assert _same(ours[rows[:, 0] != -math.inf], np.array(code.score_batch(finite.tolist())))


@pytest.mark.parametrize("method", ["bitvector", "walk"])
def test_batch_sums_trees_in_the_lean_order(method: batch_scorer.Method) -> None:
    # given stumps whose leaves cancel: any other summation order (pairwise, numpy's own
    # reductions) loses or keeps different low bits
    values = [1e16, 1.0, -1e16, 3.0, 1e-3, 7e15, -7e15, 1.0, 5e-17, 2.0, -1.0, 1e16] * 3
    trees = tuple(
        _tree(
            left=[1, -1, -1],
            right=[2, -1, -1],
            feature=[i % 2, 0, 0],
            bound=[0.0, 0.0, 0.0],
            missing_left=[True, False, False],
            value=[0.0, v, -v / 3.0],
        )
        for i, v in enumerate(values)
    )
    ensemble = TreeEnsemble(trees, "mean")
    rows = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [math.nan, 0.5]] * 5)
    lean = build_scorer(ensemble, scaler_mean=[0.0, 0.0], scaler_scale=[1.0, 1.0])
    ours = build_batch_scorer(
        ensemble, scaler_mean=[0.0, 0.0], scaler_scale=[1.0, 1.0], method=method
    ).score_matrix(rows)
    # then the means are exactly the lean scorer's
    assert ours.tolist() == lean.score_batch(rows.tolist())


def test_batch_linear_matches_formula_and_lean(lean_sigmoid: None) -> None:
    model = LinearModel(coef=(2.0, -1.0, 0.0), intercept=0.5)
    mean, scale = [1.0, 0.0, 0.0], [2.0, 1.0, 3.0]
    rows = np.array([[3.0, 4.0, 1.0], [1e6, -1e6, 0.0], [math.inf, 0.0, 0.0], [0.0, 0.0, math.nan]])
    ours = build_batch_scorer(model, scaler_mean=mean, scaler_scale=scale).score_matrix(rows)
    lean = build_scorer(model, scaler_mean=mean, scaler_scale=scale)
    assert _same(ours, np.array(lean.score_batch(rows.tolist())))
    assert ours[0] == pytest.approx(1 / (1 + math.exp(-(2.0 - 4.0 + 0.5))), abs=1e-15)
    assert math.isnan(ours[3])  # 0 * NaN: NaN, as the lean scorer


@pytest.mark.parametrize(
    ("model", "mean", "scale"),
    [
        (TreeEnsemble((), "mean"), [0.0], [1.0]),
        (TreeEnsemble((_corner_ensemble().trees[0],), "sum_sigmoid", math.nan), [0.0], [1.0]),
        (TreeEnsemble((_corner_ensemble().trees[0],), "mean"), [0.0], [0.0]),
        (LinearModel(coef=(math.inf,), intercept=0.0), [0.0], [1.0]),
        (LinearModel(coef=(1.0, 2.0), intercept=0.0), [0.0], [1.0]),
    ],
    ids=["no-trees", "nan-margin", "zero-scale", "inf-coef", "short-scaler"],
)
def test_batch_refuses_what_the_lean_scorer_refuses(
    model: TreeEnsemble | LinearModel, mean: list[float], scale: list[float]
) -> None:
    with pytest.raises(ScorerError):
        build_scorer(model, scaler_mean=mean, scaler_scale=scale)
    with pytest.raises(ScorerError):
        build_batch_scorer(model, scaler_mean=mean, scaler_scale=scale)
