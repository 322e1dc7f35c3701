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
from models.contracts import (
    PSI_ALARM,
    PSI_WARN,
    DriftThresholds,
    MonitorThresholds,
    Status,
)

__all__ = ["PSI_ALARM", "PSI_WARN", "DriftThresholds", "MonitorThresholds", "Status"]

PSI_FLOOR: Final = 1e-4
"""Smallest share a bin is given (an empty bin would make PSI infinite)."""


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


# --- silent failure, decay and volume: the monitor's checks ------------------------------------

CheckStatus = Literal["ok", "warn", "alarm", "insufficient"]


class Check(BaseModel):
    """One detector's verdict on one window."""

    model_config = ConfigDict(frozen=True)

    detector: str
    status: CheckStatus
    value: float | None = None
    bound: float | None = None
    detail: str = ""


def reference_share_at_least(histogram: Histogram, threshold: float) -> float | None:
    """Share of the reference at or above ``threshold`` (linear within its bin), or None
    when the threshold falls in the open-ended top bin (quantile bins of a fraud score end
    far below 0.5: the histogram cannot tell how much of its top bin is above it)."""
    counts = np.asarray(histogram.counts, dtype=np.float64)
    total = counts.sum()
    edges = histogram.edges
    if total == 0 or not edges or threshold >= edges[-1]:
        return None
    i = int(np.searchsorted(edges, threshold, side="right"))  # the bin holding the threshold
    above = counts[i + 1 :].sum()
    if i == 0:
        above += counts[0]
    else:
        low, high = edges[i - 1], edges[i]
        above += counts[i] * (high - threshold) / (high - low)
    return float(above / total)


def _ratio_check(
    detector: str, observed: float, reference: float, factor: float, what: str
) -> Check:
    if reference <= 0:
        return Check(detector=detector, status="ok" if observed <= 0 else "warn",
                     value=observed, detail=f"{what}: reference is 0")  # fmt: skip
    ratio = observed / reference
    status: CheckStatus = "alarm" if ratio > factor or ratio < 1 / factor else "ok"
    return Check(detector=detector, status=status, value=round(ratio, 4), bound=factor,
                 detail=f"{what} {observed:.4g} vs reference {reference:.4g}")  # fmt: skip


def _mean_check(
    values: npt.NDArray[np.float64], histogram: Histogram, limits: MonitorThresholds
) -> Check:
    """The mean score against the reference's, beyond the factor with ``mean_score_z``
    standard errors to spare, so a small window's spread alone never alarms. The spread is
    the window's or the reference's, the larger: a few hundred rows without one of the rare
    high scores look tight and low, which is how the reference looks by chance. A window of
    one value (a stuck score, at 0 or anywhere) gets no margin."""
    mean, reference = float(values.mean()), float(histogram.mean or 0.0)
    if float(np.ptp(values)) == 0.0:  # stuck: no spread to give it the benefit of the doubt
        margin = 0.0
    else:
        spread = max(float(values.std(ddof=1)), histogram.std or 0.0)
        margin = limits.mean_score_z * spread / np.sqrt(values.size)
    check = _ratio_check("mean_score", mean, reference, limits.mean_score_factor, "mean score")
    if check.status != "alarm" or reference <= 0:
        return check
    beyond = (mean - margin > reference * limits.mean_score_factor
              or mean + margin < reference / limits.mean_score_factor)  # fmt: skip
    detail = f"{check.detail} (±{margin:.2g} at {limits.mean_score_z:g} standard errors)"
    return check.model_copy(update={"status": "alarm" if beyond else "ok", "detail": detail})


def _score_checks(
    profile: ReferenceProfile,
    drift: DriftReport,
    values: npt.NDArray[np.float64],
    *,
    threshold: float,
    limits: MonitorThresholds,
    baseline_high_risk_share: float | None,
) -> list[Check]:
    """Scores stuck (high-risk share, mean) and the score's drift."""
    share = float((values >= threshold).mean())
    reference_share = reference_share_at_least(profile.score, threshold)
    what = "share of high-risk decisions"
    # the recent baseline first: it is the serving population's share, while the reference's
    # comes from a test set (without the cards already known compromised) and the fraud rate
    # moves with the world; the reference's serves until a week of quiet days exists
    expected_share = (
        baseline_high_risk_share if baseline_high_risk_share is not None else reference_share
    )
    if expected_share is not None and expected_share * values.size < limits.min_flagged:
        few = f"fewer than {limits.min_flagged} high-risk decisions expected in the window"
        share_check = Check(detector="high_risk_share", status="insufficient", value=share,
                            detail=few)  # fmt: skip
    elif baseline_high_risk_share is not None:
        share_check = _ratio_check(
            "high_risk_share", share, baseline_high_risk_share, limits.high_risk_factor,
            f"{what} (vs the recent baseline)",
        )  # fmt: skip
    elif reference_share is not None:
        share_check = _ratio_check("high_risk_share", share, reference_share,
                                   limits.high_risk_factor, what)  # fmt: skip
    else:
        no_baseline = "no reference share at this threshold, no baseline yet"
        share_check = Check(detector="high_risk_share", status="insufficient", value=share,
                            detail=no_baseline)  # fmt: skip
    checks = [share_check, _mean_check(values, profile.score, limits)]
    if drift.score.status != "ok":
        checks.append(Check(detector="drift:score", status=drift.score.status,
                            value=round(drift.score.psi, 4), bound=limits.alarm))  # fmt: skip
    return checks


def _input_checks(
    profile: ReferenceProfile, drift: DriftReport, limits: MonitorThresholds
) -> list[Check]:
    """Missing, constant and drifting model inputs."""
    checks: list[Check] = []
    for name, column in drift.features.items():
        if name in drift.not_alarmed:
            continue
        if column.missing_rate > limits.missing_rate_alarm:
            checks.append(Check(detector=f"missing:{name}", status="alarm",
                                value=column.missing_rate, bound=limits.missing_rate_alarm,
                                detail="share of NaN or infinite values"))  # fmt: skip
        reference = profile.features[name]
        largest = max(reference.counts) / max(sum(reference.counts), 1)
        if column.constant and largest**column.n < limits.constant_probability:
            detail = "one value for every transaction; the reference would almost never be"
            checks.append(Check(detector=f"constant:{name}", status="alarm", value=column.mean,
                                detail=detail))  # fmt: skip
        if column.status != "ok":
            checks.append(Check(detector=f"drift:{name}", status=column.status,
                                value=round(column.psi, 4), bound=limits.alarm,
                                detail="population stability index"))  # fmt: skip
    return checks


def silent_failure_checks(
    profile: ReferenceProfile,
    drift: DriftReport,
    scores: npt.ArrayLike,
    *,
    threshold: float,
    challenger_scores: npt.ArrayLike | None = None,
    thresholds: MonitorThresholds | None = None,
    baseline_high_risk_share: float | None = None,
) -> list[Check]:
    """The checks a window of predictions answers without labels: scores stuck (high-risk
    share, mean), a constant or missing input, drift beyond the bound, champion and
    challenger disagreeing. Each is one alarm of the monitor.

    The high-risk share is compared with ``baseline_high_risk_share`` (e.g. the previous
    week's median of quiet days), else with the reference's when its histogram resolves the
    threshold, else it is ``insufficient``."""
    limits = thresholds or MonitorThresholds()
    values = np.asarray(scores, dtype=np.float64)
    n = int(values.size)
    # inputs may cover more rows than the scores (every version's rows vs the champion's)
    n_inputs = max((column.n for column in drift.features.values()), default=n)
    if max(n, n_inputs) < limits.min_rows:
        too_few = "too few predictions to judge"
        return [Check(detector="window", status="insufficient", value=float(max(n, n_inputs)),
                      bound=float(limits.min_rows), detail=too_few)]  # fmt: skip
    checks: list[Check] = []
    if n >= limits.min_rows:
        checks += _score_checks(profile, drift, values, threshold=threshold, limits=limits,
                                baseline_high_risk_share=baseline_high_risk_share)  # fmt: skip
    else:
        few = "too few of the model's scores to judge"
        checks.append(Check(detector="score", status="insufficient", value=float(n),
                            bound=float(limits.min_rows), detail=few))  # fmt: skip
    if n_inputs >= limits.min_rows:
        checks += _input_checks(profile, drift, limits)
    if challenger_scores is not None:
        other = np.asarray(challenger_scores, dtype=np.float64)
        both = np.isfinite(other)
        if both.any():
            mine, theirs = values[both] >= threshold, other[both] >= threshold
            flagged = int((mine | theirs).sum())
            if flagged < limits.min_flagged:
                checks.append(Check(detector="disagreement", status="insufficient",
                                    value=float(flagged), bound=float(limits.min_flagged),
                                    detail="too few high-risk decisions to compare"))  # fmt: skip
            else:
                differ = float((mine ^ theirs).sum() / flagged)
                checks.append(Check(
                    detector="disagreement",
                    status="alarm" if differ > limits.disagreement_alarm else "ok",
                    value=round(differ, 4), bound=limits.disagreement_alarm,
                    detail="of the transactions either model flags, the share only one flags",
                ))  # fmt: skip
    return checks


def volume_check(
    transactions_in: int, predictions: int, path: str, thresholds: MonitorThresholds | None = None
) -> Check:
    """Predictions per transaction that came in on a path: a silent path scores none."""
    limits = thresholds or MonitorThresholds()
    if transactions_in == 0:
        detail = f"{predictions} predictions, no transactions in"
        return Check(detector=f"volume:{path}", status="ok" if predictions == 0 else "warn",
                     detail=detail)  # fmt: skip
    ratio = predictions / transactions_in
    return Check(
        detector=f"volume:{path}",
        status="alarm" if ratio < limits.volume_ratio_alarm else "ok",
        value=round(ratio, 4), bound=limits.volume_ratio_alarm,
        detail=f"{predictions} predictions for {transactions_in} transactions in",
    )  # fmt: skip


class DailyPerformance(BaseModel):
    """Label-based quality of one model version on one day (labels known a week later)."""

    model_config = ConfigDict(frozen=True)

    day: str
    model_version: str
    role: Literal["champion", "challenger"]
    rows: int
    frauds: int
    auc_roc: float | None
    average_precision: float | None
    card_precision_at_100: float | None


def daily_performance(
    days: npt.ArrayLike,
    labels: npt.ArrayLike,
    cards: npt.ArrayLike,
    scores: npt.ArrayLike,
    versions: npt.ArrayLike,
    *,
    role: Literal["champion", "challenger"] = "champion",
) -> list[DailyPerformance]:
    """AUC, AP and CP@100 per day and model version (None where a day has one class)."""
    from models.evaluation import auc_roc, average_precision, card_precision_at_k

    d = np.asarray(days).astype("datetime64[D]")
    y = np.asarray(labels, dtype=np.int64)
    c = np.asarray(cards, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    v = np.asarray(versions).astype(str)
    out = []
    for day in np.unique(d):
        for version in np.unique(v[d == day]):
            rows = (d == day) & (v == version) & np.isfinite(s)
            frauds = int(y[rows].sum())
            both = 0 < frauds < int(rows.sum())
            out.append(DailyPerformance(
                day=str(day), model_version=str(version), role=role, rows=int(rows.sum()),
                frauds=frauds,
                auc_roc=auc_roc(y[rows], s[rows]) if both else None,
                average_precision=average_precision(y[rows], s[rows]) if both else None,
                card_precision_at_100=card_precision_at_k(d[rows], c[rows], y[rows], s[rows],
                                                          100).mean if both else None,
            ))  # fmt: skip
    return out


def performance_check(
    performance: list[DailyPerformance], thresholds: MonitorThresholds | None = None
) -> Check:
    """The champion's AP on the latest labelled day against the floor."""
    limits = thresholds or MonitorThresholds()
    champion = [p for p in performance if p.role == "champion" and p.average_precision is not None]
    if not champion:
        return Check(detector="ap_floor", status="insufficient", detail="no labelled day yet")
    latest = max(champion, key=lambda p: (p.day, p.rows))
    assert latest.average_precision is not None
    if latest.frauds < limits.min_frauds:  # AP over a handful of frauds is mostly noise
        return Check(detector="ap_floor", status="insufficient", value=float(latest.frauds),
                     bound=float(limits.min_frauds),
                     detail=f"too few frauds on {latest.day} to judge")  # fmt: skip
    return Check(
        detector="ap_floor",
        status="alarm" if latest.average_precision < limits.ap_floor else "ok",
        value=round(latest.average_precision, 4), bound=limits.ap_floor,
        detail=f"champion {latest.model_version} on {latest.day}",
    )  # fmt: skip
