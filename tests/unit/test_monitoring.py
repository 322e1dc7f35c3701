"""PSI and the drift report against an artifact's reference profile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.artifact import Histogram, ReferenceProfile, _histogram
from models.monitoring import DriftThresholds, drift_report, observed_counts, psi


def _hist(values: np.ndarray) -> Histogram:
    return Histogram.model_validate(_histogram(values))


def test_psi_is_zero_for_the_same_shares_and_matches_the_formula() -> None:
    assert psi([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0, abs=1e-12)
    expected = (0.5 - 0.2) * math.log(0.5 / 0.2) + (0.5 - 0.8) * math.log(0.5 / 0.8)
    assert psi([20, 80], [50, 50]) == pytest.approx(expected, rel=1e-12)


def test_psi_floors_empty_bins_and_handles_empty_sides() -> None:
    assert math.isfinite(psi([100, 0], [0, 100]))
    assert psi([0, 0], [1, 2]) == 0.0 and psi([1, 2], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="bins differ"):
        psi([1, 2], [1, 2, 3])


def test_observed_counts_use_the_reference_convention_and_count_missing() -> None:
    # given the artifact's own histogram of a reference sample
    reference = np.arange(100, dtype=np.float64)
    histogram = _hist(reference)
    # when the same values are binned again (plus missing ones)
    counts, missing = observed_counts(histogram, np.concatenate([reference, [np.nan, np.inf]]))
    # then the counts are the reference's exactly
    assert counts.tolist() == histogram.counts
    assert missing == 2


def _profile(
    rng: np.random.Generator,
) -> tuple[ReferenceProfile, dict[str, np.ndarray], np.ndarray]:
    features = {
        "amount": rng.lognormal(3, 1, 20_000),
        "count": rng.poisson(3, 20_000).astype(float),
    }
    scores = rng.beta(1, 20, 20_000)
    profile = ReferenceProfile(
        features={k: _hist(v) for k, v in features.items()}, score=_hist(scores)
    )
    return profile, features, scores


def test_drift_report_is_quiet_on_a_sample_of_the_reference_population() -> None:
    rng = np.random.default_rng(0)
    profile, _, _ = _profile(rng)
    fresh = {"amount": rng.lognormal(3, 1, 5_000), "count": rng.poisson(3, 5_000).astype(float)}
    report = drift_report(profile, fresh, rng.beta(1, 20, 5_000))
    assert report.alarms == [] and report.warnings == []
    assert all(d.psi < 0.02 for d in report.features.values())


def test_drift_report_alarms_on_shift_missing_values_constant_inputs_and_stuck_scores() -> None:
    rng = np.random.default_rng(1)
    profile, _, _ = _profile(rng)
    amounts = rng.lognormal(4, 1, 5_000)  # e^1 times larger amounts
    counts = np.full(5_000, 3.0)  # a feature stuck at one value
    amounts[:200] = np.nan  # 4% missing
    report = drift_report(profile, {"amount": amounts, "count": counts}, np.full(5_000, 0.97))
    assert report.features["amount"].status == "alarm"
    assert report.features["amount"].missing_rate == pytest.approx(0.04)
    assert report.features["count"].constant
    assert set(report.alarms) == {"amount", "count", "score"}
    assert report.high_risk_share == 1.0


def test_drift_report_refuses_a_missing_model_input() -> None:
    rng = np.random.default_rng(2)
    profile, features, scores = _profile(rng)
    with pytest.raises(ValueError, match=r"no values for model inputs \['count'\]"):
        drift_report(profile, {"amount": features["amount"]}, scores)


def test_thresholds_classify_psi() -> None:
    limits = DriftThresholds(warn=0.1, alarm=0.2)
    assert [limits.status(v) for v in (0.05, 0.15, 0.25)] == ["ok", "warn", "alarm"]


def test_inputs_not_alarmed_are_reported_but_neither_alarm_nor_count_in_max_psi() -> None:
    from models.monitoring import drift_report

    x = [0.2] * 72 + [0.8] * 28
    flag = _hist(np.array([0.0] * 72 + [1.0] * 28))
    profile = ReferenceProfile(features={"TX_DURING_WEEKEND": flag, "X": _hist(np.array(x))},
                               score=_hist(np.array(x)))  # fmt: skip
    # a weekday: the weekend flag is 0 for every row (a huge PSI), X is as in the reference
    report = drift_report(profile, {"TX_DURING_WEEKEND": [0.0] * 100, "X": x}, x,
                          not_alarmed=("TX_DURING_WEEKEND",))  # fmt: skip
    assert report.features["TX_DURING_WEEKEND"].psi > 1.0
    assert report.alarms == [] and report.not_alarmed == ["TX_DURING_WEEKEND"]
    assert report.max_psi < 0.01
    # and without the exemption it alarms, as before
    plain = drift_report(profile, {"TX_DURING_WEEKEND": [0.0] * 100, "X": x}, x)
    assert "TX_DURING_WEEKEND" in plain.alarms and plain.max_psi > 1.0
