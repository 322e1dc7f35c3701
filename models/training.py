"""Training with the Fraud Detection Handbook's protocol, and prequential model selection.

The protocol (Le Borgne et al., chapter 3 "Baseline fraud detection system"): train on
``delta_train`` days from ``train_start``; wait ``delta_delay`` days, the time labels
take to arrive; test on the next ``delta_test`` days. Cards already known to be
compromised when a test day starts are blocked in reality, so their transactions leave
the test set: known are the customers with a fraud in the training window, plus, before
test day k (0-based), those with a fraud on day ``train_start + delta_train + k - 1``
(knowledge lags the test day by the delay period). Inputs are standardized with the
training window's mean and standard deviation, stored as plain floats so that serving
applies the very same ``(x - mean) / scale``.

Model families use random_state 0 and the libraries' default hyperparameters, as the
book's baseline does. Named configurations (``MODEL_CONFIGS``) add variants; one with a
``search`` grid is tuned on prequential validation folds (chapter 5, "Model selection"):
the protocol shifted back by ``delta_delay + delta_test`` days so that its assessment
window ends before the test period starts, then by ``delta_test`` more per fold. The
test week never takes part in the choice.

Example::

    frame = load_features(Path("data/features"))
    outcome = train(frame, resolve_config("xgboost"), Protocol())
    print(outcome.test_metrics)
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models import evaluation
from models.contracts import (
    BASELINE_FEATURES,
    MODEL_FAMILIES,
    Column,
    ModelFamily,
    column_names,
)
from models.evaluation import Metrics

if TYPE_CHECKING:
    import pyarrow as pa

    from models.features.spec import FeatureSpec

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Days = npt.NDArray[np.datetime64]

Family = ModelFamily
FAMILIES: Final = MODEL_FAMILIES
TREE_FAMILIES: Final = frozenset({"decision_tree", "random_forest", "xgboost"})
RANDOM_STATE: Final = 0

LABEL_COLUMN: Final = "TX_FRAUD"
CARD_COLUMN: Final = "CUSTOMER_ID"
TIME_COLUMN: Final = "TX_DATETIME"
_KEY_COLUMNS: Final[tuple[Column, ...]] = (
    (TIME_COLUMN, "timestamp[s]"),
    (CARD_COLUMN, "int64"),
    (LABEL_COLUMN, "int8"),
)


# --- the protocol ---------------------------------------------------------------------


class Protocol(BaseModel):
    """Training, delay and test windows, in whole days (the book's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_start: date = Field(date(2018, 7, 25), description="First day of the training window.")
    delta_train: int = Field(7, ge=1, description="Days of training data.")
    delta_delay: int = Field(7, ge=0, description="Days before labels are known (feedback).")
    delta_test: int = Field(7, ge=1, description="Days of test data.")

    @property
    def train_end(self) -> date:
        """First day after the training window."""
        return self.train_start + timedelta(days=self.delta_train)

    @property
    def test_start(self) -> date:
        """First test day: the delay period separates it from the training window."""
        return self.train_end + timedelta(days=self.delta_delay)

    @property
    def test_end(self) -> date:
        """First day after the test window."""
        return self.test_start + timedelta(days=self.delta_test)

    def shifted(self, days: int) -> Protocol:
        """The same windows, ``days`` later (negative: earlier)."""
        return self.model_copy(update={"train_start": self.train_start + timedelta(days=days)})

    def describe(self) -> dict[str, str]:
        """Windows as ISO dates, end exclusive (recorded in the artifact)."""
        return {
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def _day(d: date) -> np.datetime64:
    return np.datetime64(d.isoformat(), "D")


@dataclass(frozen=True)
class Split:
    """Row indices of the training and test sets of one protocol."""

    train: I64
    test: I64
    dropped_known: int
    """Test-window transactions removed because their card was known to be compromised."""


def split(days: Days, cards: I64, labels: npt.ArrayLike, protocol: Protocol) -> Split:
    """The handbook's training and test sets, known-compromised cards removed from the test.

    ``days`` are calendar days (``datetime64[D]``) of each transaction. The training set is
    every transaction of the training window. Test day k keeps the transactions of cards
    not known to be compromised: known are the cards with a fraud in the training window,
    and those with a fraud on any day up to ``train_start + delta_train + k - 1``.
    """
    d = np.asarray(days).astype("datetime64[D]")
    c = np.asarray(cards).astype(np.int64, copy=False)
    fraud = np.asarray(labels).astype(bool)
    train_mask = (d >= _day(protocol.train_start)) & (d < _day(protocol.train_end))
    known = np.unique(c[train_mask & fraud])
    test_parts: list[I64] = []
    dropped = 0
    for k in range(protocol.delta_test):
        feedback_day = _day(protocol.train_end) + np.timedelta64(k - 1, "D")
        known = np.union1d(known, c[(d == feedback_day) & fraud])
        in_day = d == _day(protocol.test_start) + np.timedelta64(k, "D")
        keep = in_day & ~np.isin(c, known)
        dropped += int(in_day.sum() - keep.sum())
        test_parts.append(np.flatnonzero(keep))
    return Split(
        train=np.flatnonzero(train_mask),
        test=np.concatenate(test_parts) if test_parts else np.zeros(0, np.int64),
        dropped_known=dropped,
    )


def prequential_folds(protocol: Protocol, n_folds: int = 4) -> list[Protocol]:
    """Validation protocols for model selection, each assessed before the test period.

    Fold 0 is the protocol shifted back by ``delta_delay + delta_test`` days: its
    assessment window (``delta_test`` days) then ends at the end of the real training
    window, so its labels are all known before the first test day. Fold f is shifted back
    ``f * delta_test`` days more.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1: {n_folds}")
    base = -(protocol.delta_delay + protocol.delta_test)
    folds = [protocol.shifted(base - f * protocol.delta_test) for f in range(n_folds)]
    for fold in folds:
        assert fold.test_end <= protocol.test_start, "a validation fold overlaps the test period"
    return folds


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureFrame:
    """Model inputs and the keys the protocol and metrics need, as aligned numpy arrays."""

    x: F64
    """Raw (unscaled) features, one row per transaction, columns in ``feature_names`` order."""
    labels: npt.NDArray[np.int8]
    days: Days
    cards: I64
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_table(
        cls, table: pa.Table, feature_names: Sequence[str] | None = None
    ) -> FeatureFrame:
        """From an Arrow feature table (``rtml features`` output, or any superset of it)."""
        names = tuple(feature_names or column_names(BASELINE_FEATURES))
        missing = [
            n
            for n in (*names, LABEL_COLUMN, CARD_COLUMN, TIME_COLUMN)
            if n not in table.column_names
        ]
        if missing or not names:
            raise ValueError(f"feature table lacks columns {missing or 'of features'}")
        x = np.column_stack([table.column(n).to_numpy().astype(np.float64) for n in names])
        return cls(
            x=np.ascontiguousarray(x),
            labels=table.column(LABEL_COLUMN).to_numpy().astype(np.int8),
            days=table.column(TIME_COLUMN).to_numpy().astype("datetime64[D]"),
            cards=table.column(CARD_COLUMN).to_numpy().astype(np.int64),
            feature_names=names,
        )

    def select(self, names: Sequence[str]) -> FeatureFrame:
        """The given feature columns only, in that order (an ablation drops one)."""
        index = [self.feature_names.index(n) for n in names]
        return FeatureFrame(
            x=np.ascontiguousarray(self.x[:, index]),
            labels=self.labels,
            days=self.days,
            cards=self.cards,
            feature_names=tuple(names),
        )

    def take(self, rows: I64) -> FeatureFrame:
        """The given rows, in that order."""
        return FeatureFrame(
            x=self.x[rows],
            labels=self.labels[rows],
            days=self.days[rows],
            cards=self.cards[rows],
            feature_names=self.feature_names,
        )


def load_features(root: Path, spec: FeatureSpec | None = None) -> FeatureFrame:
    """Read the ``spec`` features (default: the baseline's) of a ``rtml features`` table.

    The table's recorded spec must be ``spec`` or extend it (an improved table holds the
    baseline's features unchanged); any other is refused: a model trained on it would be
    served with features computed differently.
    """
    from models import datasets
    from models.features.spec import BASELINE, spec_by_hash
    from models.features.table import feature_columns

    wanted = spec or BASELINE
    recorded = datasets.read_manifest(root).get("spec_hash", BASELINE.spec_hash())
    table_spec = spec_by_hash(recorded)
    if table_spec is None or wanted not in table_spec.lineage():
        name = table_spec.name if table_spec else "an unknown spec"
        raise ValueError(
            f"{root} was computed with feature spec {name} {recorded[:12]}, which does not "
            f"hold the {wanted.name} features: recompute it with rtml features --spec"
        )
    table = datasets.read_dataset(root, _KEY_COLUMNS + feature_columns(wanted))
    if table.num_rows == 0:
        raise ValueError(f"{root} holds no transactions")
    return FeatureFrame.from_table(table, wanted.feature_names())


# --- scaling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalerParams:
    """Standardization fitted on the training window: ``(x - mean) / scale`` per column."""

    mean: list[float]
    scale: list[float]

    def apply(self, x: F64) -> F64:
        """Scale raw features (float64, the same two operations serving performs)."""
        out: F64 = (np.asarray(x, dtype=np.float64) - np.array(self.mean)) / np.array(self.scale)
        return out


def fit_scaler(x: F64) -> ScalerParams:
    """scikit-learn's StandardScaler (population std; constant columns get scale 1)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    return ScalerParams(
        mean=[float(v) for v in scaler.mean_], scale=[float(v) for v in scaler.scale_]
    )


# --- model configurations -----------------------------------------------------------------


class SearchSpace(BaseModel):
    """A hyperparameter grid, chosen on prequential validation folds (never the test week)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: dict[str, list[Any]] = Field(description="Parameter -> candidate values.")
    n_folds: int = Field(4, ge=1, description="Prequential validation folds.")
    criterion: Literal["average_precision", "card_precision_at_100", "auc_roc"] = Field(
        "average_precision", description="Mean over folds of this metric picks the winner."
    )

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the grid, in a fixed order."""
        keys = sorted(self.grid)
        return [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(self.grid[k] for k in keys))
        ]


class ModelConfig(BaseModel):
    """A named model: a family, fixed hyperparameters, and optionally a grid to tune."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: Family
    params: dict[str, Any] = Field(default_factory=dict, description="On top of the defaults.")
    search: SearchSpace | None = None
    features: Literal["baseline", "improved"] = "baseline"
    """The feature set it trains on (models.features.spec.FEATURE_SETS)."""
    description: str = ""

    def work_units(self) -> int:
        """Model fits :func:`train` makes: every candidate on every fold, then the final one."""
        if self.search is None:
            return 1
        return len(self.search.candidates()) * self.search.n_folds + 1


BOOK_XGBOOST: Final[dict[str, Any]] = {"tree_method": "exact", "base_score": 0.5}
"""The XGBoost 1.x defaults the book ran (2.x and later: histogram splits, an estimated base
score); every configuration reproducing or extending the book's figures sets them."""
CH5_XGBOOST: Final[dict[str, Any]] = {"max_depth": 3, "n_estimators": 50, "learning_rate": 0.3}
"""The handbook's chapter 5 selection of XGBoost for AP (docs/selection/selection.json)."""
IMPROVED_XGBOOST: Final[dict[str, Any]] = {
    "max_depth": 3, "n_estimators": 50, "learning_rate": 0.3, "scale_pos_weight": 1,
}  # fmt: skip
"""rtml select's pick on the improved features (docs/selection/selection.json ``best``): on
validation AP, over the book's grid and class weights; unweighted, as chapter 6 found."""
DEFAULT_MODEL: Final = "xgboost_improved"

MODEL_CONFIGS: Final[dict[str, ModelConfig]] = {
    c.name: c
    for c in (
        ModelConfig(
            name="logistic_regression",
            family="logistic_regression",
            description="scikit-learn LogisticRegression, defaults (the book's baseline).",
        ),
        ModelConfig(
            name="decision_tree",
            family="decision_tree",
            description="scikit-learn DecisionTreeClassifier, unlimited depth unless --max-depth.",
        ),
        ModelConfig(
            name="decision_tree_depth2",
            family="decision_tree",
            params={"max_depth": 2},
            description="The book's depth-two tree: readable rules.",
        ),
        ModelConfig(
            name="random_forest",
            family="random_forest",
            description="scikit-learn RandomForestClassifier, defaults (100 full-depth trees).",
        ),
        ModelConfig(
            name="xgboost",
            family="xgboost",
            description="XGBClassifier, defaults (100 trees, depth 6, learning rate 0.3).",
        ),
        ModelConfig(
            name="xgboost_book",
            family="xgboost",
            params=dict(BOOK_XGBOOST),
            description=(
                "XGBoost with the 1.x defaults the book ran (exact splits, base score 0.5): "
                "reproduces its table; slower to fit than the hist default."
            ),
        ),
        ModelConfig(
            name="xgboost_ch5",
            family="xgboost",
            params={**CH5_XGBOOST, **BOOK_XGBOOST},
            description=(
                "The handbook's chapter 5 pick for average precision (depth 3, 50 trees, "
                "learning rate 0.3) on the baseline features: the best before rtml's features."
            ),
        ),
        ModelConfig(
            name="xgboost_improved",
            family="xgboost",
            params={**IMPROVED_XGBOOST, **BOOK_XGBOOST},
            features="improved",
            description=(
                "XGBoost on the improved features (the card's amount against its own "
                "history), parameters chosen on the chapter 5 validation folds "
                "(docs/selection): the default."
            ),
        ),
        ModelConfig(
            name="xgboost_tuned",
            family="xgboost",
            search=SearchSpace(
                grid={
                    "max_depth": [3, 6],
                    "n_estimators": [100, 200],
                    "learning_rate": [0.1, 0.3],
                },
            ),
            description="XGBoost, depth/trees/learning rate chosen on prequential validation.",
        ),
    )
}
"""Every model ``rtml train --model`` knows; the four family names are the baselines."""


def resolve_config(name: str, *, max_depth: int | None = None) -> ModelConfig:
    """A registered configuration, with ``max_depth`` fixed if given (trees only)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    config = MODEL_CONFIGS[name]
    if max_depth is None:
        return config
    if config.family not in TREE_FAMILIES:
        raise ValueError(f"--max-depth applies to tree models, not {config.family}")
    search = config.search
    if search is not None:
        grid = {k: v for k, v in search.grid.items() if k != "max_depth"}
        search = search.model_copy(update={"grid": grid}) if grid else None
    return config.model_copy(
        update={"params": {**config.params, "max_depth": max_depth}, "search": search}
    )


def make_model(family: Family, params: Mapping[str, Any], *, n_jobs: int = -1) -> Any:
    """An unfitted estimator: random_state 0, library defaults, then ``params``."""
    if family == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(random_state=RANDOM_STATE, **params)
    if family == "decision_tree":
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(random_state=RANDOM_STATE, **params)
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=RANDOM_STATE, n_jobs=n_jobs, **params)
    if family == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(random_state=RANDOM_STATE, n_jobs=n_jobs, **params)
    raise ValueError(f"unknown model family {family!r}")


def predict_scores(model: Any, x_scaled: F64) -> F64:
    """Fraud probabilities (class 1) of scaled inputs."""
    proba = np.asarray(model.predict_proba(x_scaled), dtype=np.float64)
    scores: F64 = proba[:, 1]
    return scores


# --- model selection ----------------------------------------------------------------------


class Candidate(BaseModel):
    """One grid point's validation figures."""

    params: dict[str, Any]
    folds: list[Metrics]
    mean: Metrics


class Selection(BaseModel):
    """What prequential validation chose, and on what: recorded in the artifact."""

    criterion: str
    folds: list[dict[str, str]] = Field(description="Each fold's windows (ISO dates).")
    candidates: list[Candidate]
    selected: dict[str, Any]
    seconds: float


def _mean_metrics(folds: Sequence[Metrics]) -> Metrics:
    return Metrics(
        auc_roc=float(np.mean([m.auc_roc for m in folds])),
        average_precision=float(np.mean([m.average_precision for m in folds])),
        card_precision_at_100=float(np.mean([m.card_precision_at_100 for m in folds])),
    )


def fit_fold(
    frame: FeatureFrame, fold: Split, family: Family, params: Mapping[str, Any], n_jobs: int = 1
) -> tuple[ScalerParams, Any, FeatureFrame, F64]:
    """Fit on a fold's training rows: the scaler, the model, the test rows and their scores."""
    train, test = frame.take(fold.train), frame.take(fold.test)
    scaler = fit_scaler(train.x)
    model = make_model(family, params, n_jobs=n_jobs)
    model.fit(scaler.apply(train.x), train.labels)
    return scaler, model, test, predict_scores(model, scaler.apply(test.x))


def _fit_and_score(
    frame: FeatureFrame, fold: Split, family: Family, params: Mapping[str, Any], n_jobs: int
) -> Metrics:
    _, _, test, scores = fit_fold(frame, fold, family, params, n_jobs)
    return evaluation.evaluate(test.labels, scores, test.days, test.cards)


def select_params(
    frame: FeatureFrame,
    config: ModelConfig,
    protocol: Protocol,
    *,
    n_jobs: int = -1,
    progress: Callable[[int], None] | None = None,
) -> Selection:
    """Grid search on prequential folds that end before ``protocol``'s test period."""
    if config.search is None:
        raise ValueError(f"model {config.name} has no search space")
    started = time.perf_counter()
    folds = prequential_folds(protocol, config.search.n_folds)
    splits = [split(frame.days, frame.cards, frame.labels, f) for f in folds]
    for fold, s in zip(folds, splits, strict=True):
        if len(s.train) == 0 or len(s.test) == 0:
            raise ValueError(
                f"validation fold {fold.train_start}..{fold.test_end} has no data: "
                "the feature table must start earlier, or use fewer folds"
            )
    candidates = []
    for params in config.search.candidates():
        merged = {**config.params, **params}
        fold_metrics = []
        for s in splits:
            fold_metrics.append(_fit_and_score(frame, s, config.family, merged, n_jobs))
            if progress:
                progress(1)
        candidate = Candidate(params=params, folds=fold_metrics, mean=_mean_metrics(fold_metrics))
        log.info("validation %s: %s", params, candidate.mean.model_dump())
        candidates.append(candidate)
    criterion = config.search.criterion
    best = max(candidates, key=lambda c: getattr(c.mean, criterion))
    return Selection(
        criterion=criterion,
        folds=[f.describe() for f in folds],
        candidates=candidates,
        selected=best.params,
        seconds=round(time.perf_counter() - started, 3),
    )


# --- training -------------------------------------------------------------------------------


class ArtifactRef(BaseModel):
    """Where the trained model was written."""

    name: str
    version: str
    path: str


class Timings(BaseModel):
    """Wall-clock seconds: fitting on the training set, scoring the test set."""

    fit_s: float
    predict_s: float


class TrainResult(BaseModel):
    """What ``rtml train --json`` prints: one object, this schema."""

    model: str = Field(description="The model configuration (a family name for the baselines).")
    artifact: ArtifactRef | None = Field(description="The written artifact, if one was written.")
    test: Metrics
    train: Metrics
    n_train: int
    n_test: int
    timings: Timings


@dataclass(frozen=True)
class TrainOutcome:
    """Everything a training run produced, for the artifact, the report and the CLI."""

    config: ModelConfig
    params: dict[str, Any]
    """The hyperparameters the model was fitted with (the config's, plus the selection's)."""
    model: Any
    scaler: ScalerParams
    protocol: Protocol
    train_metrics: Metrics
    test_metrics: Metrics
    test_card_precision: evaluation.CardPrecision
    timings: Timings
    test: FeatureFrame
    """The test set (raw features): the reference profile of drift monitoring."""
    test_scores: F64
    n_train: int
    dropped_known: int
    selection: Selection | None

    @property
    def family(self) -> Family:
        """The model family."""
        return self.config.family

    @property
    def feature_names(self) -> list[str]:
        """Model inputs, in order."""
        return list(self.test.feature_names)

    def result(self, artifact: ArtifactRef | None) -> TrainResult:
        """The CLI's JSON result."""
        return TrainResult(
            model=self.config.name,
            artifact=artifact,
            test=self.test_metrics,
            train=self.train_metrics,
            n_train=self.n_train,
            n_test=len(self.test),
            timings=self.timings,
        )

    def training_record(self) -> dict[str, Any]:
        """How the model was trained (the artifact manifest's ``training``)."""
        return {
            "config": self.config.name,
            "family": self.family,
            "params": self.params,
            "random_state": RANDOM_STATE,
            "protocol": self.protocol.model_dump(mode="json"),
            "windows": self.protocol.describe(),
            "n_train": self.n_train,
            "n_test": len(self.test),
            "test_dropped_known_compromised": self.dropped_known,
            "selection": None if self.selection is None else self.selection.model_dump(mode="json"),
        }

    def metrics_record(self) -> dict[str, Any]:
        """Train/test figures and timings (the artifact manifest's ``metrics``)."""
        cp = self.test_card_precision
        return {
            "train": self.train_metrics.model_dump(),
            "test": self.test_metrics.model_dump(),
            "test_card_precision_per_day": {
                str(d): p for d, p in zip(cp.days, cp.per_day, strict=True)
            },
            "timings": self.timings.model_dump(),
        }


def train(
    frame: FeatureFrame,
    config: ModelConfig,
    protocol: Protocol,
    *,
    n_jobs: int = -1,
    progress: Callable[[int], None] | None = None,
) -> TrainOutcome:
    """Select (if the config has a grid), fit on the training window, evaluate on the test.

    Example::

        outcome = train(frame, resolve_config("decision_tree", max_depth=2), Protocol())
    """
    from models.features.spec import FEATURE_SETS

    expected = tuple(FEATURE_SETS[config.features].feature_names())
    if frame.feature_names != expected:
        raise ValueError(
            f"{config.name} trains on the {config.features} features; the frame holds "
            f"{len(frame.feature_names)} others (load_features(root, spec) reads them)"
        )
    selection = None
    params = dict(config.params)
    if config.search is not None:
        selection = select_params(frame, config, protocol, n_jobs=n_jobs, progress=progress)
        params.update(selection.selected)
        log.info("selected %s on %d validation folds", selection.selected, len(selection.folds))
    sets = split(frame.days, frame.cards, frame.labels, protocol)
    if len(sets.train) == 0 or len(sets.test) == 0:
        raise ValueError(
            f"no {'training' if len(sets.train) == 0 else 'test'} transactions for "
            f"{protocol.train_start}..{protocol.test_end} in the feature table"
        )
    train_set, test_set = frame.take(sets.train), frame.take(sets.test)
    log.info(
        "%s: %d training rows (%d frauds), %d test rows (%d frauds, %d known-card rows dropped)",
        config.name,
        len(train_set),
        int(train_set.labels.sum()),
        len(test_set),
        int(test_set.labels.sum()),
        sets.dropped_known,
    )
    scaler = fit_scaler(train_set.x)
    x_train, x_test = scaler.apply(train_set.x), scaler.apply(test_set.x)
    model = make_model(config.family, params, n_jobs=n_jobs)
    started = time.perf_counter()
    model.fit(x_train, train_set.labels)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    test_scores = predict_scores(model, x_test)
    predict_s = time.perf_counter() - started
    train_scores = predict_scores(model, x_train)
    test_metrics, cp = evaluation.evaluate_detailed(
        test_set.labels, test_scores, test_set.days, test_set.cards
    )
    if progress:
        progress(1)
    return TrainOutcome(
        config=config,
        params=params,
        model=model,
        scaler=scaler,
        protocol=protocol,
        train_metrics=evaluation.evaluate(
            train_set.labels, train_scores, train_set.days, train_set.cards
        ),
        test_metrics=test_metrics,
        test_card_precision=cp,
        timings=Timings(fit_s=round(fit_s, 4), predict_s=round(predict_s, 4)),
        test=test_set,
        test_scores=test_scores,
        n_train=len(train_set),
        dropped_known=sets.dropped_known,
        selection=selection,
    )


def save_outcome(outcome: TrainOutcome, out: Path, *, name: str, data: Path) -> ArtifactRef:
    """Save a training outcome as a model artifact; return where it went.

    The reference profile for drift monitoring is the test week: its raw inputs and the
    model's out-of-sample scores, i.e. what serving will see (training-set scores of a
    forest or a deep tree are near 0/1, an over-fitted picture of the score).
    """
    from models.artifact import save_artifact
    from models.features.spec import FEATURE_SETS

    manifest = save_artifact(
        out,
        spec=FEATURE_SETS[outcome.config.features],
        name=name,
        model=outcome.model,
        family=outcome.family,
        feature_names=outcome.feature_names,
        scaler_mean=outcome.scaler.mean,
        scaler_scale=outcome.scaler.scale,
        training={**outcome.training_record(), "data": str(data)},
        metrics=outcome.metrics_record(),
        reference_features=outcome.test.x,
        reference_scores=outcome.test_scores,
    )
    return ArtifactRef(name=manifest.name, version=manifest.version, path=str(out))
