"""Each silent-failure detector fires on its injected fault and stays quiet on clean data."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pytest

from models.artifact import Histogram, ReferenceProfile, _histogram
from models.monitoring import (
    Check,
    DailyPerformance,
    MonitorThresholds,
    drift_report,
    performance_check,
    reference_share_at_least,
    silent_failure_checks,
    volume_check,
)

N = 4_000
THRESHOLD = 0.5


def _hist(values: np.ndarray) -> Histogram:
    return Histogram.model_validate(_histogram(values))


def _world(rng: np.random.Generator, n: int = N) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and scores of one population: a few percent high-risk, varied inputs."""
    features = {
        "AMOUNT": rng.gamma(2.0, 25.0, n),
        "COUNT": rng.poisson(3.0, n).astype(np.float64),
        "RISK": rng.beta(0.5, 20.0, n),
    }
    scores = np.where(rng.random(n) < 0.03, rng.uniform(0.5, 1.0, n), rng.beta(0.3, 30.0, n))
    return features, scores


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    features, scores = _world(np.random.default_rng(0), 20_000)
    return ReferenceProfile(
        features={name: _hist(values) for name, values in features.items()},
        score=_hist(scores),
    )


def _checks(
    profile: ReferenceProfile,
    features: dict[str, np.ndarray],
    scores: np.ndarray,
    **kwargs: Any,
) -> dict[str, Check]:
    drift = drift_report(profile, features, scores, threshold=THRESHOLD)
    found = silent_failure_checks(profile, drift, scores, threshold=THRESHOLD, **kwargs)
    return {c.detector: c for c in found}


def _alarms(checks: dict[str, Check]) -> set[str]:
    return {name for name, check in checks.items() if check.status == "alarm"}


def test_clean_windows_raise_no_alarm(profile: ReferenceProfile) -> None:
    for seed in range(1, 6):
        features, scores = _world(np.random.default_rng(seed))
        challenger = np.clip(scores + np.random.default_rng(seed).normal(0, 0.01, N), 0, 1)
        checks = _checks(profile, features, scores, challenger_scores=challenger,
                         baseline_high_risk_share=0.03)  # fmt: skip
        assert _alarms(checks) == set(), (seed, checks)


@pytest.mark.parametrize("stuck", [0.0, 0.999])
def test_scores_stuck_at_a_value_alarm(profile: ReferenceProfile, stuck: float) -> None:
    features, _ = _world(np.random.default_rng(7))
    checks = _checks(profile, features, np.full(N, stuck), baseline_high_risk_share=0.03)
    assert {"mean_score", "high_risk_share"} <= _alarms(checks)


def test_a_constant_input_alarms_but_one_constant_in_the_reference_does_not(
    profile: ReferenceProfile,
) -> None:
    features, scores = _world(np.random.default_rng(8))
    features["AMOUNT"] = np.zeros(N)  # a broken source defaulting to 0
    assert "constant:AMOUNT" in _alarms(_checks(profile, features, scores))
    # an input that never varied in the reference either is not a failure
    flat = ReferenceProfile(features={**profile.features, "AMOUNT": _hist(np.zeros(100))},
                            score=profile.score)  # fmt: skip
    assert "constant:AMOUNT" not in _alarms(_checks(flat, features, scores))


def test_a_missing_input_alarms(profile: ReferenceProfile) -> None:
    features, scores = _world(np.random.default_rng(9))
    features["COUNT"][: N // 20] = np.nan
    checks = _checks(profile, features, scores)
    assert "missing:COUNT" in _alarms(checks)
    assert checks["missing:COUNT"].value == pytest.approx(0.05)


def test_a_shifted_input_alarms_as_drift(profile: ReferenceProfile) -> None:
    features, scores = _world(np.random.default_rng(10))
    features["AMOUNT"] = features["AMOUNT"] * 1.8
    checks = _checks(profile, features, scores)
    assert "drift:AMOUNT" in _alarms(checks)
    assert checks["drift:AMOUNT"].value is not None and checks["drift:AMOUNT"].value > 0.2


def test_champion_and_challenger_disagreeing_alarms(profile: ReferenceProfile) -> None:
    features, scores = _world(np.random.default_rng(11))
    rng = np.random.default_rng(12)
    challenger = np.where(rng.random(N) < 0.1, 1.0 - scores, scores)  # flips 10% of decisions
    checks = _checks(profile, features, scores, challenger_scores=challenger)
    assert "disagreement" in _alarms(checks)
    # and a challenger with NaN where it did not run is judged on the rows it scored
    partial = np.where(rng.random(N) < 0.5, np.nan, scores)
    assert _checks(profile, features, scores, challenger_scores=partial)["disagreement"].value == 0


def test_too_few_rows_are_insufficient_not_an_alarm(profile: ReferenceProfile) -> None:
    features, _ = _world(np.random.default_rng(13), 50)
    drift = drift_report(profile, features, np.zeros(50), threshold=THRESHOLD)
    (check,) = silent_failure_checks(profile, drift, np.zeros(50), threshold=THRESHOLD)
    assert check.status == "insufficient"


def test_high_risk_share_without_reference_or_baseline_is_insufficient() -> None:
    # a quantile histogram of fraud scores ends far below the threshold
    scores = np.random.default_rng(14).beta(0.3, 60.0, 20_000)
    histogram = _hist(scores)
    assert histogram.edges[-1] < THRESHOLD
    assert reference_share_at_least(histogram, THRESHOLD) is None
    profile = ReferenceProfile(features={}, score=histogram)
    drift = drift_report(profile, {}, scores[:N], threshold=THRESHOLD)
    checks = {c.detector: c for c in silent_failure_checks(profile, drift, scores[:N],
                                                            threshold=THRESHOLD)}  # fmt: skip
    assert checks["high_risk_share"].status == "insufficient"


def test_reference_share_interpolates_within_the_bin() -> None:
    histogram = _hist(np.linspace(0.0, 1.0, 10_001))
    assert reference_share_at_least(histogram, 0.25) == pytest.approx(0.75, abs=0.01)
    assert reference_share_at_least(histogram, -1.0) == pytest.approx(1.0)


def test_volume_check_catches_lost_records_and_silence() -> None:
    assert volume_check(1_000, 1_000, "stream").status == "ok"
    assert volume_check(1_000, 950, "stream").status == "alarm"
    silent = volume_check(1_000, 0, "stream")
    assert silent.status == "alarm" and silent.value == 0
    assert volume_check(0, 0, "stream").status == "ok"
    assert volume_check(0, 5, "stream").status == "warn"


def _day(
    day: str,
    ap: float | None,
    role: Literal["champion", "challenger"] = "champion",
    frauds: int = 40,
) -> DailyPerformance:
    return DailyPerformance(
        day=day, model_version="v", role=role, rows=1000, frauds=frauds, auc_roc=0.9,
        average_precision=ap, card_precision_at_100=0.3,
    )  # fmt: skip


def test_ap_below_the_floor_alarms_on_the_latest_labelled_day() -> None:
    limits = MonitorThresholds(ap_floor=0.3)
    assert performance_check([_day("2018-09-01", 0.6)], limits).status == "ok"
    low = performance_check([_day("2018-09-01", 0.6), _day("2018-09-02", 0.2)], limits)
    assert low.status == "alarm" and "2018-09-02" in low.detail
    # the challenger's AP never alarms for the champion; no labelled day is insufficient
    assert performance_check([_day("2018-09-02", 0.1, "challenger")]).status == "insufficient"
    assert performance_check([_day("2018-09-02", None)]).status == "insufficient"
    # nor does a day with a handful of frauds, whose AP is mostly noise
    few = performance_check([_day("2018-09-02", 0.1, frauds=6)], limits)
    assert few.status == "insufficient" and "too few frauds" in few.detail


def test_monitor_period_checks_the_volume_of_every_path(profile: ReferenceProfile) -> None:
    from datetime import date

    from models.monitor import monitor_period, parse_archive

    features, scores = _world(np.random.default_rng(15), 600)
    lines = [
        json.dumps({"transaction_id": i, "tx_datetime": "2018-09-01T10:00:00", "customer_id": i,
                    "score": float(scores[i]), "model_version": "v", "path": "stream",
                    "features": {n: float(v[i]) for n, v in features.items()}})
        for i in range(600)
    ]  # fmt: skip
    archive = parse_archive([*lines, lines[0]], list(features))  # a retried batch repeats one
    assert len(archive) == 600
    day = date(2018, 9, 1)
    report = monitor_period(profile, archive, start=day, end=day,
                            transactions_in={"2018-09-01": 600}, labels={}, threshold=THRESHOLD,
                            other_paths={"batch": {"2018-09-01": 500}})  # fmt: skip
    checks = {c.detector: c for c in report.days[0].checks}
    assert checks["volume:stream"].status == "ok"
    assert checks["volume:batch"].status == "alarm"
    assert report.first_alarm["volume:batch"] == "2018-09-01"


def test_score_checks_judge_only_the_profiles_model_on_a_day_with_a_promote(
    profile: ReferenceProfile,
) -> None:
    from datetime import date

    from models.monitor import monitor_period, parse_archive

    features, scores = _world(np.random.default_rng(16), 1200)
    # the morning scored by the old champion, whose scores sit far above this profile's
    old = np.clip(scores[:600] * 10, 0, 1)
    both = np.concatenate([old, scores[600:]])
    lines = [
        json.dumps({"transaction_id": i, "tx_datetime": "2018-09-01T10:00:00", "customer_id": i,
                    "score": float(both[i]), "model_version": "old" if i < 600 else "new",
                    "features": {n: float(v[i]) for n, v in features.items()}})
        for i in range(1200)
    ]  # fmt: skip
    archive = parse_archive(lines, list(features))
    day = date(2018, 9, 1)

    def alarms(version: str | None) -> set[str]:
        report = monitor_period(profile, archive, start=day, end=day, labels={},
                                transactions_in={"2018-09-01": 1200}, threshold=THRESHOLD,
                                model_version=version)  # fmt: skip
        return {c.detector for c in report.days[0].alarms}

    assert alarms("new") == set()
    assert {"mean_score", "drift:score"} & alarms(None)


def test_an_input_archived_as_null_is_missing_not_a_crash(profile: ReferenceProfile) -> None:
    from models.monitor import parse_archive

    line = {"transaction_id": 1, "tx_datetime": "2018-09-01T10:00:00", "customer_id": 1,
            "score": 0.1, "model_version": "v",
            "features": {"AMOUNT": None, "COUNT": 2.0}}  # fmt: skip
    archive = parse_archive([json.dumps(line)], ["AMOUNT", "COUNT", "RISK"])
    assert np.isnan(archive.features["AMOUNT"][0]) and np.isnan(archive.features["RISK"][0])
    assert archive.features["COUNT"][0] == 2.0


def test_a_challenger_stuck_at_zero_is_caught_though_few_decisions_differ(
    profile: ReferenceProfile,
) -> None:
    features, scores = _world(np.random.default_rng(17))
    checks = _checks(profile, features, scores, challenger_scores=np.zeros(N))
    assert checks["disagreement"].status == "alarm"
    assert checks["disagreement"].value == 1.0


def test_an_input_mostly_one_value_in_the_reference_may_be_constant_in_a_small_window() -> None:
    rng = np.random.default_rng(18)
    sparse = (rng.random(20_000) < 0.01).astype(np.float64)  # a flag, 0 for 99% of rows
    _, scores = _world(rng, 20_000)
    profile = ReferenceProfile(features={"FLAG": _hist(sparse)}, score=_hist(scores))
    assert max(profile.features["FLAG"].counts) / 20_000 == pytest.approx(0.99, abs=0.005)
    window = {"FLAG": np.zeros(300)}  # 0.99**300 = 0.05: a constant window is ordinary
    assert "constant:FLAG" not in _alarms(_checks(profile, window, scores[:300]))
    window = {"FLAG": np.zeros(4_000)}  # 0.99**4000 ~ 4e-18: it is not
    assert "constant:FLAG" in _alarms(_checks(profile, window, scores[:4_000]))


def test_the_mean_score_alarms_on_its_confidence_interval_not_on_a_small_windows_mean(
    profile: ReferenceProfile,
) -> None:
    # 250 rows without one of the rare high scores: the mean is a third of the reference's,
    # which is how a clean small window often looks (40% of the book's 250-row windows)
    rng = np.random.default_rng(20)
    features, _ = _world(rng, 250)
    quiet = rng.beta(0.3, 30.0, 250)
    assert quiet.mean() < (profile.score.mean or 0) / 2
    bare = MonitorThresholds(mean_score_z=0, min_rows=100)
    assert _checks(profile, features, quiet, thresholds=bare)["mean_score"].status == "alarm"
    judged = _checks(profile, features, quiet, thresholds=MonitorThresholds(min_rows=100))
    assert judged["mean_score"].status == "ok"
    assert "standard errors" in judged["mean_score"].detail
    # a stuck score has no spread of its own: it still alarms at once, high or at 0
    for value in (0.9, 0.0):
        stuck = _checks(profile, features, np.full(250, value),
                        thresholds=MonitorThresholds(min_rows=100))  # fmt: skip
        assert stuck["mean_score"].status == "alarm", value


def _ab_archive(n: int, rng: np.random.Generator) -> tuple[Any, dict[int, int]]:
    """An A/B day: the champion "v" decides even rows and shadows the odd ones, which the
    challenger "ch" (stuck at 0.9) decides."""
    from models.monitor import parse_archive

    features, scores = _world(rng, n)
    lines = []
    for i in range(n):
        mine, theirs = float(scores[i]), 0.9
        decides = i % 2 == 0
        lines.append(json.dumps({
            "transaction_id": i, "tx_datetime": "2018-09-01T10:00:00", "customer_id": i,
            "score": mine if decides else theirs, "model_version": "v" if decides else "ch",
            "challenger_score": theirs if decides else mine,
            "challenger_version": "ch" if decides else "v",
            "features": {k: float(v[i]) for k, v in features.items()},
        }))  # fmt: skip
    labels = {i: int(scores[i] >= 0.5) for i in range(n)}
    return parse_archive(lines, list(features)), labels


def test_an_ab_split_judges_each_model_on_every_row_in_its_own_role(
    profile: ReferenceProfile,
) -> None:
    from datetime import date

    from models.monitor import labelled_performance, monitor_period

    archive, labels = _ab_archive(1000, np.random.default_rng(21))
    performance = labelled_performance(archive, labels, known_by=date(2018, 9, 8),
                                       model_version="v")  # fmt: skip
    roles = {(p.role, p.model_version): p.rows for p in performance}
    assert roles == {("champion", "v"): 1000, ("challenger", "ch"): 1000}
    day = date(2018, 9, 1)
    report = monitor_period(profile, archive, start=day, end=day, labels={},
                            transactions_in={"2018-09-01": 1000}, threshold=THRESHOLD,
                            model_version="v")  # fmt: skip
    alarms = {c.detector for c in report.days[0].alarms}
    # the champion's scores (deciding or not) are clean; the challenger's disagree with them
    assert "mean_score" not in alarms and "drift:score" not in alarms
    assert "disagreement" in alarms
    assert report.days[0].mean_score == pytest.approx(
        float(np.nanmean(archive.scores_of("v"))), rel=1e-12
    )


def test_the_archive_reader_takes_what_the_checks_need_and_skips_the_rest() -> None:
    from models.monitor import parse_archive

    assert len(parse_archive([], ["AMOUNT"])) == 0
    assert len(parse_archive(b"\n\n", ["AMOUNT"])) == 0
    line = {"transaction_id": 7, "tx_datetime": "2018-09-01T23:59:59.250000", "customer_id": 3,
            "terminal_id": 9, "score": 0.2, "model_version": "v", "decision": "low_risk",
            "features": {"AMOUNT": 5.0, "NOT_AN_INPUT": 1.0}}  # fmt: skip
    archive = parse_archive([json.dumps(line)], ["AMOUNT"])
    assert archive.day[0] == np.datetime64("2018-09-01")
    assert archive.time[0] == np.datetime64("2018-09-01T23:59:59")
    assert archive.path[0] == "stream" and archive.challenger_version[0] == ""
    assert np.isnan(archive.challenger_score[0])
    assert set(archive.features) == {"AMOUNT"} and archive.features["AMOUNT"][0] == 5.0
    # and what a week later needs is kept compact, and read back equal
    back = type(archive).from_table(archive.to_table())
    assert back.time[0] == archive.time[0] and back.model_version[0] == "v"
    assert np.isnan(back.challenger_score[0]) and back.path[0] == "stream"


def test_a_day_the_champion_never_scored_keeps_the_roles_its_rows_had(
    profile: ReferenceProfile,
) -> None:
    """Promoted without a shadow period: the labelled day was decided by the old champion,
    which is then judged as the champion (else the AP floor would be blind for a week)."""
    from datetime import date

    from models.monitor import labelled_performance, parse_archive

    features, scores = _world(np.random.default_rng(22), 600)
    lines = [json.dumps({"transaction_id": i, "tx_datetime": "2018-09-01T10:00:00",
                         "customer_id": i, "score": float(scores[i]), "model_version": "old",
                         "features": {k: float(v[i]) for k, v in features.items()}})
             for i in range(600)]  # fmt: skip
    archive = parse_archive(lines, list(features))
    labels = {i: int(scores[i] >= 0.5) for i in range(600)}
    performance = labelled_performance(archive, labels, known_by=date(2018, 9, 8),
                                       model_version="new")  # fmt: skip
    assert [(p.role, p.model_version, p.rows) for p in performance] == [("champion", "old", 600)]


def test_an_archive_line_without_a_required_field_is_named_not_defaulted() -> None:
    from models.monitor import parse_archive

    good = {"transaction_id": 1, "tx_datetime": "2018-09-01T10:00:00", "customer_id": 1,
            "score": 0.1, "model_version": "v", "features": {}}  # fmt: skip
    for field in ("transaction_id", "customer_id", "tx_datetime", "score", "model_version"):
        line = {k: v for k, v in good.items() if k != field}
        with pytest.raises(ValueError, match=rf"1 line\(s\) without {field}"):
            parse_archive([json.dumps(good), json.dumps(line)], [])
    with pytest.raises(ValueError, match="archive: a line is not a prediction"):
        parse_archive([json.dumps({**good, "score": "high"})], [])
