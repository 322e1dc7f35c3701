"""The Fraud Detection Handbook's model selection (chapter 5), on its own protocol.

Prequential validation, implemented from the book's description: blocks of a week; each
fold trains on ``delta_train`` days, skips ``delta_delay`` days (labels not yet known) and
assesses the next ``delta_assessment`` days, with the cards known to be compromised removed
as in chapter 3 (:func:`models.training.split`). Validation folds end before the test
period: the first one starts ``delta_delay + delta_assessment`` days before the training
start (2018-07-25), each next one a week earlier. Test folds start ``(n_folds - 1)`` weeks
after the training start and go back a week each, so the four test weeks are 2018-08-08 to
2018-09-04. Every grid point of every model is fitted on every fold; for each metric (AUC,
AP, CP@100) the parameters with the best validation mean are chosen, and reported by their
test mean and standard deviation.

The grids are the book's: decision tree ``max_depth``; logistic regression ``C``; random
forest ``n_estimators`` x ``max_depth``; XGBoost ``max_depth`` x ``n_estimators`` x
``learning_rate``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import date
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.evaluation import Metrics
from models.training import (
    Family,
    FeatureFrame,
    Protocol,
    _fit_and_score,
    prequential_folds,
    split,
)

MetricName = Literal["auc", "ap", "cp100"]
METRICS: Final[dict[MetricName, str]] = {
    "auc": "auc_roc", "ap": "average_precision", "cp100": "card_precision_at_100",
}  # fmt: skip

HANDBOOK_GRIDS: Final[dict[Family, dict[str, list[Any]]]] = {
    "decision_tree": {"max_depth": [2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50]},
    "logistic_regression": {"C": [0.1, 1, 10, 100]},
    "random_forest": {"n_estimators": [25, 50, 100], "max_depth": [5, 10, 20, 50]},
    "xgboost": {"max_depth": [3, 6, 9], "n_estimators": [25, 50, 100],
                "learning_rate": [0.1, 0.3]},
}  # fmt: skip
"""The book's grids (chapter 5, "Model selection")."""

HANDBOOK_FIXED: Final[dict[Family, dict[str, Any]]] = {
    "xgboost": {"verbosity": 0, "tree_method": "exact", "base_score": 0.5},
}
"""What the book's runs had by default: XGBoost 1.x split exactly and started every model
from a base score of 0.5 (2.x and later default to histograms and an estimated base score,
which moves its AP by 0.05 on this protocol)."""

HANDBOOK_TABLE: Final[dict[Family, dict[MetricName, float]]] = {
    "decision_tree": {"auc": 0.797, "ap": 0.579, "cp100": 0.284},
    "logistic_regression": {"auc": 0.868, "ap": 0.623, "cp100": 0.297},
    "random_forest": {"auc": 0.870, "ap": 0.678, "cp100": 0.299},
    "xgboost": {"auc": 0.869, "ap": 0.687, "cp100": 0.303},
}
"""The book's summary: test means at the best validation parameters, per metric."""


class HandbookProtocol(BaseModel):
    """The chapter 5 setup."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_date_training: date = date(2018, 7, 25)
    delta_train: int = 7
    delta_delay: int = 7
    delta_assessment: int = 7
    n_folds: int = Field(4, ge=1)

    def base(self) -> Protocol:
        return Protocol(train_start=self.start_date_training, delta_train=self.delta_train,
                        delta_delay=self.delta_delay, delta_test=self.delta_assessment)  # fmt: skip

    def validation_folds(self) -> list[Protocol]:
        return prequential_folds(self.base(), self.n_folds)

    def test_folds(self) -> list[Protocol]:
        last = self.base().shifted((self.n_folds - 1) * self.delta_assessment)
        return [last.shifted(-f * self.delta_assessment) for f in range(self.n_folds)]


class GridPoint(BaseModel):
    """One parameter set's metrics on every fold."""

    params: dict[str, Any]
    validation: list[Metrics]
    test: list[Metrics]

    def mean(self, which: Literal["validation", "test"], metric: MetricName) -> float:
        return float(np.mean([getattr(m, METRICS[metric]) for m in getattr(self, which)]))

    def std(self, which: Literal["validation", "test"], metric: MetricName) -> float:
        # the population std over the folds, as the book's (scikit-learn's) reports it
        return float(np.std([getattr(m, METRICS[metric]) for m in getattr(self, which)]))


class Chosen(BaseModel):
    """The best validation parameters for one metric, and how they do on test."""

    params: dict[str, Any]
    validation_mean: float
    validation_std: float
    test_mean: float
    test_std: float
    test_folds: list[float]


class FamilySelection(BaseModel):
    family: Family
    grid: dict[str, list[Any]]
    points: list[GridPoint]
    best: dict[MetricName, Chosen]
    book: dict[MetricName, float]
    seconds: float


_WORK: Final[dict[str, Any]] = {}
"""The frame and fold splits of the selection under way, in each worker process."""


def _init(frame: FeatureFrame, splits: list[Any]) -> None:
    _WORK.update(frame=frame, splits=splits)


def _job(job: tuple[Family, dict[str, Any], int]) -> Metrics:
    family, params, k = job
    return _fit_and_score(_WORK["frame"], _WORK["splits"][k], family, params, 1)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[k] for k in keys))]


def choose(points: Sequence[GridPoint], metric: MetricName) -> Chosen:
    """The best validation mean for ``metric`` (the first of equals, in grid order)."""
    best = max(points, key=lambda p: p.mean("validation", metric))
    return Chosen(
        params=best.params,
        validation_mean=best.mean("validation", metric),
        validation_std=best.std("validation", metric),
        test_mean=best.mean("test", metric),
        test_std=best.std("test", metric),
        test_folds=[getattr(m, METRICS[metric]) for m in best.test],
    )


def select_family(
    frame: FeatureFrame,
    family: Family,
    protocol: HandbookProtocol,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FamilySelection:
    """Every grid point on every validation and test fold; fits run ``workers`` at a time
    (processes, one thread each, so a fit's own threads do not fight them)."""
    started = time.perf_counter()
    used = dict(grid or HANDBOOK_GRIDS[family])
    folds = [*protocol.validation_folds(), *protocol.test_folds()]
    splits = [split(frame.days, frame.cards, frame.labels, f) for f in folds]
    for fold, s in zip(folds, splits, strict=True):
        if len(s.train) == 0 or len(s.test) == 0:
            raise ValueError(f"fold {fold.describe()} has no data: the table must cover it")
    params = [{**HANDBOOK_FIXED.get(family, {}), **p} for p in grid_points(used)]
    jobs = [(family, p, k) for p in params for k in range(len(splits))]
    with ExitStack() as stack:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawned workers get the frame once each (forking a threaded process can hang)
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init, initargs=(frame, splits)))  # fmt: skip
            fitted = pool.map(_job, jobs)
        else:
            _init(frame, splits)
            stack.callback(_WORK.clear)
            fitted = map(_job, jobs)
        results = []
        for result in fitted:
            results.append(result)
            if progress:
                progress(1)
    n = protocol.n_folds
    points = []
    for k, p in enumerate(params):
        metrics = results[k * 2 * n : (k + 1) * 2 * n]
        shown = {key: v for key, v in p.items() if key in used}
        points.append(GridPoint(params=shown, validation=metrics[:n], test=metrics[n:]))
    return FamilySelection(
        family=family, grid={k: list(v) for k, v in used.items()}, points=points,
        best={m: choose(points, m) for m in METRICS}, book=HANDBOOK_TABLE[family],
        seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip


class SelectionReport(BaseModel):
    protocol: HandbookProtocol
    validation_folds: list[dict[str, str]]
    test_folds: list[dict[str, str]]
    models: dict[str, FamilySelection]
    seconds: float

    def summary(self) -> list[dict[str, Any]]:
        """Per model and metric: test mean and std at the best validation parameters,
        beside the book's."""
        return [
            {"model": name, "metric": metric, "params": s.best[metric].params,
             "test_mean": round(s.best[metric].test_mean, 3),
             "test_std": round(s.best[metric].test_std, 3), "book": s.book[metric],
             "difference": round(s.best[metric].test_mean - s.book[metric], 3)}
            for name, s in self.models.items() for metric in METRICS
        ]  # fmt: skip
