"""Drift against the model's reference profile: the population stability index (PSI) of every
model input and of the score, plus the share of missing values and of high-risk decisions.

Pure numpy over what the artifact already holds (``ReferenceProfile``: a histogram per input
and for the score, on the training data), so the batch job's finalize step, the monitor job
and ``rtml monitor report`` compute the same numbers.

PSI over the reference's bins: ``sum((a - e) * ln(a / e))`` with ``e`` the reference share
and ``a`` the observed share of each bin, both floored at :data:`PSI_FLOOR` so an empty bin
does not make it infinite. Rules of thumb, as settings: below 0.1 stable, 0.1-0.2 a shift to
watch, above 0.2 an alarm.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.artifact import Histogram, ReferenceProfile

PSI_FLOOR: Final = 1e-4
"""Smallest share a bin is given (an empty bin would make PSI infinite)."""
PSI_WARN: Final = 0.1
PSI_ALARM: Final = 0.2

Status = Literal["ok", "warn", "alarm"]


class DriftThresholds(BaseModel):
    """When a PSI is a warning or an alarm (settings; the defaults are the usual ones)."""

    model_config = ConfigDict(frozen=True)

    warn: float = Field(default=PSI_WARN, gt=0)
    alarm: float = Field(default=PSI_ALARM, gt=0)
    missing_rate_alarm: float = Field(default=0.01, ge=0, le=1)
    """Share of missing (NaN or infinite) values of an input above which it alarms."""

    def status(self, psi: float) -> Status:
        return "alarm" if psi > self.alarm else "warn" if psi > self.warn else "ok"


class ColumnDrift(BaseModel):
    """One model input (or the score) against its reference histogram."""

    model_config = ConfigDict(frozen=True)

    psi: float
    status: Status
    n: int
    missing_rate: float
    mean: float | None
    reference_mean: float | None
    constant: bool = Field(description="Every observed finite value is the same.")


class DriftReport(BaseModel):
    """Every input's drift and the score's, and what stands out."""

    model_config = ConfigDict(frozen=True)

    rows: int
    features: dict[str, ColumnDrift]
    score: ColumnDrift
    high_risk_share: float | None
    threshold: float
    alarms: list[str] = Field(description="Inputs (or 'score') whose drift or missing rate alarms.")
    warnings: list[str]
    not_alarmed: list[str] = Field(
        default_factory=list, description="Inputs reported but not comparable: never alarm."
    )

    @property
    def max_psi(self) -> float:
        """The largest PSI of any input or the score: the one figure an alarm watches."""
        judged = (c.psi for n, c in self.features.items() if n not in self.not_alarmed)
        return max([self.score.psi, *judged])


def observed_counts(
    histogram: Histogram, values: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], int]:
    """Counts of finite values in the reference's bins (same convention: ``bisect_right``),
    and the number of missing (NaN or infinite) values."""
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    bins = np.searchsorted(
        np.asarray(histogram.edges, dtype=np.float64), array[finite], side="right"
    )
    counts = np.bincount(bins, minlength=len(histogram.counts)).astype(np.int64)
    return counts, int((~finite).sum())


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, floor: float = PSI_FLOOR) -> float:
    """PSI of two count vectors over the same bins (0 when either side is empty)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    if e.sum() == 0 or a.sum() == 0:
        return 0.0
    e_share = np.maximum(e / e.sum(), floor)
    a_share = np.maximum(a / a.sum(), floor)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def column_drift(
    histogram: Histogram, values: npt.ArrayLike, thresholds: DriftThresholds
) -> ColumnDrift:
    array = np.asarray(values, dtype=np.float64)
    counts, missing = observed_counts(histogram, array)
    value = psi(histogram.counts, counts)
    finite = array[np.isfinite(array)]
    return ColumnDrift(
        psi=value,
        status=thresholds.status(value),
        n=int(array.size),
        missing_rate=missing / array.size if array.size else 0.0,
        mean=float(finite.mean()) if finite.size else None,
        reference_mean=histogram.mean,
        constant=bool(finite.size > 1 and np.all(finite == finite[0])),
    )


def drift_report(
    profile: ReferenceProfile,
    features: Mapping[str, npt.ArrayLike],
    scores: npt.ArrayLike,
    *,
    threshold: float = 0.5,
    thresholds: DriftThresholds | None = None,
    not_alarmed: Collection[str] = (),
) -> DriftReport:
    """Drift of every model input the profile knows, and of the score.

    An input the profile has but ``features`` lacks is an error: a silently missing
    input is exactly the failure this report exists to catch. ``not_alarmed`` names inputs
    that cannot be compared over this population (over one day, TX_DURING_WEEKEND is the
    same for every row): reported, but they neither alarm nor count in ``max_psi``.
    """
    limits = thresholds or DriftThresholds()
    missing = sorted(set(profile.features) - set(features))
    if missing:
        raise ValueError(f"no values for model inputs {missing}")
    per_feature = {
        name: column_drift(histogram, features[name], limits)
        for name, histogram in profile.features.items()
    }
    score_values = np.asarray(scores, dtype=np.float64)
    score = column_drift(profile.score, score_values, limits)
    judged = {n: d for n, d in per_feature.items() if n not in not_alarmed}
    alarms = [
        name
        for name, d in judged.items()
        if d.status == "alarm" or d.missing_rate > limits.missing_rate_alarm or d.constant
    ]
    warnings = [n for n, d in judged.items() if d.status == "warn"]
    if score.status == "alarm":
        alarms.append("score")
    elif score.status == "warn":
        warnings.append("score")
    return DriftReport(
        rows=int(score_values.size),
        features=per_feature,
        score=score,
        high_risk_share=float((score_values >= threshold).mean()) if score_values.size else None,
        threshold=threshold,
        alarms=alarms,
        warnings=warnings,
        not_alarmed=sorted(set(not_alarmed) & set(per_feature)),
    )
