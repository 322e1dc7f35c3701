"""The lean scorer: float32 split semantics, scaler folding, agreement with the libraries.

The libraries are the oracles: every family is trained on small random data with fixed
seeds, saved as an artifact, loaded by the lean path, and compared with ``predict_proba``
on rows whose values sit exactly on, and one ulp around, the split thresholds (and NaN
for XGBoost), where a float64 comparison would flip a branch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.artifact import LoadedModel, load_artifact, save_artifact
from models.features.spec import BASELINE, FeatureSpec
from models.scorer import (
    LinearModel,
    ScorerError,
    Tree,
    TreeEnsemble,
    build_scorer,
    f32_le_bounds,
    fold_scaler,
    generate_source,
    sklearn_bounds,
    xgboost_bounds,
)

N_FEATURES = len(BASELINE.feature_names())
TOLERANCE = 1e-6
FAMILIES = ("xgboost", "random_forest", "decision_tree", "logistic_regression")
SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

f32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)
f64_values = st.floats(allow_nan=False, allow_infinity=False)


def _neighbours(t: float) -> list[float]:
    """``t``, its float32 neighbours, the rounding midpoints between them, +-1 float64 ulp."""
    with np.errstate(over="ignore"):  # t beyond float32: its neighbours are infinite
        t32 = float(np.float32(t))
        up = float(np.nextafter(np.float32(t32), np.float32(np.inf)))
        down = float(np.nextafter(np.float32(t32), np.float32(-np.inf)))
    points = {t, t32, up, down, (t32 + up) / 2, (t32 + down) / 2}
    for p in list(points):
        points |= {math.nextafter(p, math.inf), math.nextafter(p, -math.inf)}
    return sorted(p for p in points if math.isfinite(p))


# --- float32 semantics ----------------------------------------------------------------------


@given(t=f32_values, x=f64_values)
def test_xgboost_bounds_match_float32_less_than(t: float, x: float) -> None:
    # given XGBoost's rule: left iff float32(x) < t, on x and the critical points near t
    (bound,) = xgboost_bounds([t])
    for value in [x, *_neighbours(t)]:
        # then the float64 bound gives the same branch
        with np.errstate(over="ignore"):
            expected = bool(np.float32(value) < np.float32(t))
        assert (value < bound) == expected, value


@given(t=f64_values, x=f64_values)
def test_sklearn_bounds_match_float32_less_equal_float64_threshold(t: float, x: float) -> None:
    # given scikit-learn's rule: left iff float32(x) <= t, t a float64
    (bound,) = sklearn_bounds([t])
    for value in [x, *_neighbours(t)]:
        with np.errstate(over="ignore"):
            expected = bool(np.float64(np.float32(value)) <= t)
        assert (value < bound) == expected, value


@given(v=f32_values)
def test_f32_le_bounds_is_the_rounding_boundary(v: float) -> None:
    (bound,) = f32_le_bounds(np.array([v], dtype=np.float32).tolist())
    with np.errstate(over="ignore"):
        assert np.float32(math.nextafter(bound, -math.inf)) <= np.float32(v)
        assert np.float32(bound) > np.float32(v)


@given(
    bound=st.floats(-1e6, 1e6),
    mean=st.floats(-1e4, 1e4),
    scale=st.floats(1e-3, 1e4),
    x=st.floats(-1e9, 1e9),
)
def test_fold_scaler_is_exact(bound: float, mean: float, scale: float, x: float) -> None:
    # given the raw bound that folds the scaler into a split
    folded = fold_scaler(bound, mean, scale)
    # then comparing raw inputs equals comparing scaled ones, at the fold and around it
    for value in (x, folded, math.nextafter(folded, -math.inf), math.nextafter(folded, math.inf)):
        if math.isfinite(value):
            assert (value < folded) == ((value - mean) / scale < bound), value


def test_xgboost_bounds_refuse_non_finite_thresholds() -> None:
    with pytest.raises(ScorerError):
        xgboost_bounds([math.inf])
    with pytest.raises(ScorerError):
        sklearn_bounds([math.nan])


# --- agreement with the libraries -------------------------------------------------------------


def _data(
    seed: int, n: int = 1500, n_features: int = N_FEATURES
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)) * rng.uniform(0.5, 50, n_features) + rng.uniform(
        -5, 50, n_features
    )
    x[:, 1] = rng.integers(0, 2, n)  # a 0/1 flag, like TX_DURING_WEEKEND
    x[:, 3] = rng.poisson(3, n)  # a count
    signal = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std() + 0.8 * x[:, 1] + rng.normal(size=n)
    return x, (signal > 1.0).astype(np.int64)


def fit(family: str, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Any:
    """A small fitted model of each family, fixed seeds (small forest: fast tests)."""
    if family == "xgboost":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=30, random_state=0, n_jobs=1).fit(x, y)
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=15, random_state=0, n_jobs=1).fit(x, y)
    if family == "decision_tree":
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(random_state=0).fit(x, y)
    from sklearn.linear_model import LogisticRegression

    # more iterations than the default: unscaled test inputs converge slowly (no warning)
    return LogisticRegression(random_state=0, max_iter=1000).fit(x, y)


def save(
    out: Path,
    family: str,
    *,
    scaled: bool = True,
    seed: int = 0,
    nan_fraction: float = 0.0,
    name: str = "fraud-test",
    spec: FeatureSpec = BASELINE,
) -> tuple[Any, npt.NDArray[np.float64], npt.NDArray[np.float64], LoadedModel]:
    """Train on (scaled) random data, save, load: (model, mean, scale, loaded).

    ``spec``: the feature spec it is trained on (its names; the baseline's by default)."""
    names = spec.feature_names()
    x, y = _data(seed, n_features=len(names))
    if nan_fraction:
        x[np.random.default_rng(seed).random(x.shape) < nan_fraction] = np.nan
    mean = np.nanmean(x, axis=0) if scaled else np.zeros(len(names))
    scale = np.nanstd(x, axis=0) if scaled else np.ones(len(names))
    scale[scale == 0] = 1.0
    model = fit(family, (x - mean) / scale, y)
    save_artifact(
        out,
        name=name,
        model=model,
        family=family,
        feature_names=names,
        scaler_mean=mean.tolist(),
        scaler_scale=scale.tolist(),
        training={"seed": seed},
        metrics={},
        reference_features=x,
        reference_scores=model.predict_proba((x - mean) / scale)[:, 1],
        spec=spec,
    )
    return model, mean, scale, load_artifact(out)


def thresholds(path: Path, family: str) -> dict[int, list[float]]:
    """Split thresholds per feature, read from the saved model file (library semantics)."""
    doc = json.loads((path / "model.json").read_text())
    found: dict[int, list[float]] = {}
    if family == "xgboost":
        for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
            for left, f, t in zip(
                tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
            ):
                if left != -1:
                    found.setdefault(f, []).append(t)
    elif family != "logistic_regression":
        for tree in doc["trees"]:
            for left, f, t in zip(tree["left"], tree["feature"], tree["threshold"], strict=True):
                if left != -1:
                    found.setdefault(f, []).append(t)
    return found


@pytest.fixture(scope="module")
def identity_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Models trained with the identity scaler: raw values then hit thresholds exactly."""
    out = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(family)
        nan = 0.05 if family == "xgboost" else 0.0
        model, _, _, loaded = save(path, family, scaled=False, nan_fraction=nan)
        out[family] = (model, loaded, thresholds(path, family))
    return out


def _row_strategy(
    critical: dict[int, list[float]], allow_nan: bool
) -> st.SearchStrategy[list[float]]:
    def feature(i: int) -> st.SearchStrategy[float]:
        options = [st.floats(-1e3, 1e3)]
        if critical.get(i):
            points = sorted({p for t in critical[i] for p in _neighbours(t)})
            options += [st.sampled_from(points)] * 3
        if allow_nan:
            options.append(st.just(math.nan))
        return st.one_of(*options)

    return st.tuples(*[feature(i) for i in range(N_FEATURES)]).map(list)


@pytest.mark.parametrize("family", FAMILIES)
@SETTINGS
@given(data=st.data())
def test_scorer_agrees_with_library_at_thresholds(
    family: str, identity_models: dict[str, Any], data: st.DataObject
) -> None:
    # given rows whose values sit on and around the model's split thresholds
    model, loaded, critical = identity_models[family]
    rows = data.draw(
        st.lists(_row_strategy(critical, allow_nan=family == "xgboost"), min_size=5, max_size=40)
    )
    # when both score them
    ours = np.array(loaded.score_batch(rows))
    theirs = model.predict_proba(np.array(rows))[:, 1]
    # then they agree to 1e-6, and single-row scoring equals batch scoring
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE
    assert [loaded.score(r) for r in rows] == ours.tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("codegen_max_nodes", [0, 100_000], ids=["array", "codegen"])
def test_scorer_with_scaler_agrees_at_folded_bounds(
    family: str, codegen_max_nodes: int, tmp_path: Path
) -> None:
    # given a model trained on standardized inputs, and raw rows on every folded bound
    model, mean, scale, _ = save(tmp_path, family, seed=1)
    loaded = load_artifact(tmp_path, codegen_max_nodes=codegen_max_nodes)
    x, _ = _data(7, n=400)
    rows = [list(r) for r in x]
    for f, ts in thresholds(tmp_path, family).items():
        z_bounds = xgboost_bounds(ts) if family == "xgboost" else sklearn_bounds(ts)
        for b in z_bounds[:40]:
            raw = fold_scaler(b, float(mean[f]), float(scale[f]))
            for value in (raw, math.nextafter(raw, -math.inf)):
                row = list(x[len(rows) % len(x)])
                row[f] = value
                rows.append(row)
    # when
    ours = np.array(loaded.score_batch(rows))
    theirs = model.predict_proba((np.array(rows) - mean) / scale)[:, 1]
    # then
    assert loaded.scorer.kind == (
        "linear"
        if family == "logistic_regression"
        else "array"
        if codegen_max_nodes == 0
        else "codegen"
    )
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


def test_scorer_xgboost_nan_takes_default_direction(identity_models: dict[str, Any]) -> None:
    model, loaded, _ = identity_models["xgboost"]
    rows = np.full((N_FEATURES + 1, N_FEATURES), 1.0)
    for i in range(N_FEATURES):
        rows[i, i] = np.nan
    rows[-1, :] = np.nan
    ours = np.array(loaded.score_batch(rows.tolist()))
    assert np.max(np.abs(ours - model.predict_proba(rows)[:, 1])) <= TOLERANCE


def test_scorer_xgboost_early_stopping_uses_best_iteration(tmp_path: Path) -> None:
    # given a model trained with early stopping (predict_proba stops at best_iteration)
    import xgboost

    x, y = _data(3)
    model = xgboost.XGBClassifier(
        n_estimators=200, early_stopping_rounds=3, random_state=0, n_jobs=1, learning_rate=0.5
    )
    model.fit(x[:1000], y[:1000], eval_set=[(x[1000:], y[1000:])], verbose=False)
    assert model.best_iteration < 199
    save_artifact(
        tmp_path,
        name="es",
        model=model,
        family="xgboost",
        feature_names=BASELINE.feature_names(),
        scaler_mean=[0.0] * N_FEATURES,
        scaler_scale=[1.0] * N_FEATURES,
        training={},
        metrics={},
        reference_features=x,
        reference_scores=model.predict_proba(x)[:, 1],
    )
    # then the lean scorer agrees (save_artifact checked; check again on other rows)
    loaded = load_artifact(tmp_path)
    ours = np.array(loaded.score_batch(x[::-1].tolist()))
    assert np.max(np.abs(ours - model.predict_proba(x[::-1])[:, 1])) <= TOLERANCE


# --- shape and safety ---------------------------------------------------------------------------


def _stump(feature: int = 0, bound: float = 0.5, value: Any = 1.0) -> Tree:
    return Tree.of(
        left=[1, -1, -1],
        right=[2, -1, -1],
        feature=[feature, 0, 0],
        bound=[bound, 0.0, 0.0],
        missing_left=[True, False, False],
        value=[0.0, value, -1.0],
    )


def test_scorer_wrong_row_length_is_an_error() -> None:
    scorer = build_scorer(
        TreeEnsemble((_stump(),), "sum_sigmoid"), scaler_mean=[0.0] * 2, scaler_scale=[1.0] * 2
    )
    with pytest.raises(ValueError):
        scorer.score([1.0])
    assert scorer.score([0.0, 9.0]) == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert scorer.score([math.nan, 9.0]) == scorer.score([0.0, 9.0])  # NaN goes left here


@pytest.mark.parametrize(
    "bad",
    [
        {"feature": 5},  # feature index out of range
        {"feature": -1},
        {"bound": math.nan},
    ],
)
def test_scorer_refuses_malformed_trees(bad: dict[str, Any]) -> None:
    with pytest.raises(ScorerError):
        build_scorer(
            TreeEnsemble((_stump(**bad),), "mean"), scaler_mean=[0.0] * 2, scaler_scale=[1.0] * 2
        )


def test_scorer_refuses_strings_and_cycles() -> None:
    # a string cannot even enter a tree: the arrays are typed
    with pytest.raises(ScorerError):
        _stump(value="__import__('os').system('true')")
    with pytest.raises(ScorerError):
        Tree.of(
            left=[-1],
            right=[-1],
            feature=["x0"],  # type: ignore[list-item]
            bound=[0.5],
            missing_left=[False],
            value=[0.0],
        )
    cyclic = Tree.of(
        left=[1, 0],
        right=[1, 0],
        feature=[0, 0],
        bound=[0.5, 0.5],
        missing_left=[False, False],
        value=[0.0, 0.0],
    )
    with pytest.raises(ScorerError):
        build_scorer(TreeEnsemble((cyclic,), "mean"), scaler_mean=[0.0], scaler_scale=[1.0])


def test_generated_source_holds_only_numbers_and_names() -> None:
    # given a stump whose constants are extreme but valid floats
    tree = _stump(bound=-1e-300, value=1.7976931348623157e308)
    source = generate_source(TreeEnsemble((tree,), "mean"), 2)
    # then every token is a keyword, one of our names, an operator or a number literal
    import io
    import keyword
    import tokenize

    names = {"score", "score_batch", "x", "rows", "s", "m", "e", "_exp", "x0", "x1"}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME:
            assert keyword.iskeyword(token.string) or token.string in names, token.string
        assert token.type != tokenize.STRING


def test_linear_scorer_matches_formula() -> None:
    scorer = build_scorer(
        LinearModel(coef=(2.0, -1.0), intercept=0.5),
        scaler_mean=[1.0, 0.0],
        scaler_scale=[2.0, 1.0],
    )
    z = 2.0 * ((3.0 - 1.0) / 2.0) - 1.0 * 4.0 + 0.5
    assert scorer.score([3.0, 4.0]) == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-15)
    assert scorer.score([1e6, -1e6]) == pytest.approx(1.0)
    assert scorer.score([-1e6, 1e6]) == pytest.approx(0.0)  # no overflow


def test_code_cache_round_trip(tmp_path: Path, identity_models: dict[str, Any]) -> None:
    # given an artifact loaded once with a code cache
    _, loaded, _ = identity_models["xgboost"]
    cache = tmp_path / "cache"
    first = load_artifact(loaded.path, code_cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    # when loaded again, then the cached code scores identically
    second = load_artifact(loaded.path, code_cache_dir=cache)
    rows = _data(5, n=50)[0].tolist()
    assert second.score_batch(rows) == first.score_batch(rows) == loaded.score_batch(rows)


@pytest.mark.parametrize(("depth", "n_trees"), [(90, 1), (1, 2000)], ids=["deep", "wide"])
def test_codegen_compiles_deepest_and_widest_ensembles(depth: int, n_trees: int) -> None:
    # given a chain-shaped tree as deep as code generation allows, or thousands of stumps
    n = 2 * depth + 1  # node 2k splits into leaf 2k+1 and node 2k+2; node 2*depth is a leaf
    left = [i + 1 if i % 2 == 0 and i < n - 1 else -1 for i in range(n)]
    right = [i + 2 if c != -1 else -1 for i, c in enumerate(left)]
    tree = Tree.of(
        left=left,
        right=right,
        feature=[0] * n,
        bound=[float(i) for i in range(n)],
        missing_left=[False] * n,
        value=[0.0 if c != -1 else float(i) for i, c in enumerate(left)],
    )
    ensemble = TreeEnsemble((tree,) * n_trees, "mean")
    # when
    scorer = build_scorer(ensemble, scaler_mean=[0.0], scaler_scale=[1.0])
    walker = build_scorer(ensemble, scaler_mean=[0.0], scaler_scale=[1.0], codegen_max_nodes=0)
    # then it is generated code, and agrees with the array walker
    assert scorer.kind == "codegen" and walker.kind == "array"
    assert tree.validate(1)[0] == depth
    for x in (-1.0, 0.5, 3.0, 1e9, math.nan):
        assert scorer.score([x]) == walker.score([x])
