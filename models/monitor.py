"""The monitor: a period of the prediction archive, checked day by day against the model's
reference profile, the transactions that came in, and the labels known by then.

Input is what the serving paths leave behind: the stream's archive (JSON lines of
``Prediction``, ``<prefix>/date=YYYY-MM-DD/<batch>.jsonl``, in S3 or a directory) and the
transactions dataset (for volumes and the delayed labels). Output is a :class:`MonitorReport`
(JSON) and an HTML page with its plots; the monitor job and ``rtml monitor report`` build the
same one. Each day gets :func:`models.monitoring.silent_failure_checks` and a volume check;
each day whose labels are known by ``as_of`` (a week later) gets its AUC, AP and CP@100 for
the champion and the shadow challenger, and the AP floor check.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from models.artifact import ReferenceProfile
from models.monitoring import (
    Check,
    DailyPerformance,
    MonitorThresholds,
    daily_performance,
    drift_report,
    performance_check,
    silent_failure_checks,
    volume_check,
)

LABEL_DELAY_DAYS: Final = 7
BASELINE_DAYS: Final = 7
"""The high-risk share's baseline: the median of the last week's quiet days (when the
reference histogram cannot resolve the threshold)."""
MIN_BASELINE_DAYS: Final = 3
NOT_ALARMED_DAILY: Final = ("TX_DURING_WEEKEND",)
"""One value for a whole day: a day's PSI of it measures the calendar, not drift."""


@dataclass
class ArchivedPredictions:
    """A period of the archive, one array per field (first prediction of an id wins)."""

    transaction_id: npt.NDArray[np.int64]
    day: npt.NDArray[np.datetime64]
    time: npt.NDArray[np.datetime64]
    customer_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    model_version: npt.NDArray[np.str_]
    challenger_score: npt.NDArray[np.float64]
    challenger_version: npt.NDArray[np.str_]
    path: npt.NDArray[np.str_]
    features: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.transaction_id.size)

    def where(self, mask: npt.NDArray[np.bool_]) -> ArchivedPredictions:
        return ArchivedPredictions(
            self.transaction_id[mask], self.day[mask], self.time[mask], self.customer_id[mask],
            self.score[mask],
            self.model_version[mask], self.challenger_score[mask],
            self.challenger_version[mask], self.path[mask],
            {k: v[mask] for k, v in self.features.items()},
        )  # fmt: skip


def parse_archive(
    lines: Iterable[str | bytes], feature_names: Iterable[str]
) -> ArchivedPredictions:
    """Archive lines -> arrays; a repeated transaction id (a retried batch) is dropped."""
    names = list(feature_names)
    seen: set[int] = set()
    rows: list[dict[str, Any]] = []
    for line in lines:
        if not line or not line.strip():
            continue
        record = json.loads(line)
        tx = int(record["transaction_id"])
        if tx in seen:
            continue
        seen.add(tx)
        rows.append(record)
    features = {
        # a NaN or infinite input is archived as null: the missing-input check's case
        n: np.array([_optional(r["features"].get(n)) for r in rows], dtype=np.float64)
        for n in names
    }
    return ArchivedPredictions(
        transaction_id=np.array([int(r["transaction_id"]) for r in rows], dtype=np.int64),
        day=np.array([str(r["tx_datetime"])[:10] for r in rows], dtype="datetime64[D]"),
        time=np.array([str(r["tx_datetime"])[:19] for r in rows], dtype="datetime64[s]"),
        customer_id=np.array([int(r["customer_id"]) for r in rows], dtype=np.int64),
        score=np.array([float(r["score"]) for r in rows], dtype=np.float64),
        model_version=np.array([str(r["model_version"]) for r in rows], dtype=str),
        challenger_score=np.array([_optional(r.get("challenger_score")) for r in rows]),
        challenger_version=np.array(
            [str(r.get("challenger_version") or "") for r in rows], dtype=str
        ),
        path=np.array([str(r.get("path", "stream")) for r in rows], dtype=str),
        features=features,
    )


def _optional(value: Any) -> float:
    return np.nan if value is None else float(value)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=k) for k in range((end - start).days + 1)]


def read_archive_dir(
    root: Path, start: date, end: date, feature_names: Iterable[str]
) -> ArchivedPredictions:
    """The archive's days [start, end] from a directory (``date=YYYY-MM-DD/*.jsonl``)."""
    lines: list[str] = []
    for day in _days(start, end):
        for path in sorted((root / f"date={day.isoformat()}").glob("*.jsonl")):
            lines += path.read_text().splitlines()
    return parse_archive(lines, feature_names)


def read_archive_s3(
    s3: Any, bucket: str, prefix: str, *, start: date, end: date, feature_names: Iterable[str]
) -> ArchivedPredictions:
    """The archive's days [start, end] from S3 (one listing a day, GETs 10 at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from models.s3_datasets import list_objects

    keys = [
        key
        for day in _days(start, end)
        for key, _ in list_objects(s3, bucket, f"{prefix.strip('/')}/date={day.isoformat()}/")
        if key.endswith(".jsonl")
    ]

    def body(key: str) -> bytes:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    with ThreadPoolExecutor(max_workers=10) as pool:
        bodies = list(pool.map(body, keys))
    return parse_archive(
        (line for data in bodies for line in io.BytesIO(data).read().splitlines()), feature_names
    )


class DayReport(BaseModel):
    """One day of the period: its drift figures and every check's verdict."""

    model_config = ConfigDict(frozen=True)

    day: str
    rows: int
    transactions_in: int
    psi: dict[str, float]
    score_psi: float
    high_risk_share: float | None
    mean_score: float | None
    checks: list[Check]

    @property
    def alarms(self) -> list[Check]:
        return [c for c in self.checks if c.status == "alarm"]


class MonitorReport(BaseModel):
    """The monitor's output for a period (JSON; the HTML page is drawn from it)."""

    model_config = ConfigDict(frozen=True)

    start: str
    end: str
    as_of: str
    threshold: float
    thresholds: MonitorThresholds
    days: list[DayReport]
    performance: list[DailyPerformance]
    performance_checks: list[Check]
    first_alarm: dict[str, str]
    """Detector -> the first day it alarmed in the period."""

    @property
    def alarms(self) -> list[tuple[str, Check]]:
        found = [(d.day, c) for d in self.days for c in d.alarms]
        return found + [(c.detail.rsplit(" ", 1)[-1], c) for c in self.performance_checks
                        if c.status == "alarm"]  # fmt: skip


def monitor_period(
    profile: ReferenceProfile,
    predictions: ArchivedPredictions,
    *,
    start: date,
    end: date,
    transactions_in: Mapping[str, int],
    labels: Mapping[int, int],
    threshold: float,
    as_of: date | None = None,
    thresholds: MonitorThresholds | None = None,
    path: str = "stream",
    check_volume: bool = True,
    other_paths: Mapping[str, Mapping[str, int]] | None = None,
    model_version: str | None = None,
) -> MonitorReport:
    """Every day of [start, end]: drift, silent-failure and volume checks; every day whose
    labels are known by ``as_of`` (default: the end): the champion's and the challenger's
    AUC, AP and CP@100, and the AP floor check on it. ``check_volume=False`` for a day still
    under way (its transactions are not all in the dataset yet). ``other_paths`` (path ->
    day -> predictions, e.g. a batch run's rows) get a volume check each on those days.
    With ``model_version`` (the profile's model), the score checks use only that version's
    predictions (a day with a promote holds two models' scores; each has its own reference);
    the input checks use every prediction."""
    limits = thresholds or MonitorThresholds()
    known_by = as_of or end
    days: list[DayReport] = []
    shares: list[float] = []
    for day in _days(start, end):
        window = predictions.where(predictions.day == np.datetime64(day.isoformat()))
        on_path = int((window.path == path).sum())
        arrived = int(transactions_in.get(day.isoformat(), 0))
        checks = [volume_check(arrived, on_path, path, limits)] if check_volume else []
        for other, per_day in (other_paths or {}).items():
            if check_volume and day.isoformat() in per_day:
                checks.append(volume_check(arrived, int(per_day[day.isoformat()]), other, limits))
        psi: dict[str, float] = {}
        score_psi, share, mean = 0.0, None, None
        if len(window):
            own = (
                window
                if model_version is None
                else window.where(window.model_version == model_version)
            )
            drift = drift_report(profile, window.features, own.score, threshold=threshold,
                                 thresholds=limits, not_alarmed=NOT_ALARMED_DAILY)  # fmt: skip
            psi = {n: round(c.psi, 4) for n, c in drift.features.items()}
            score_psi, share = round(drift.score.psi, 4), drift.high_risk_share
            mean = float(own.score.mean()) if len(own) else None
            challenger = own.challenger_score if np.isfinite(own.challenger_score).any() else None
            recent = shares[-BASELINE_DAYS:]
            baseline = float(np.median(recent)) if len(recent) >= MIN_BASELINE_DAYS else None
            checks += silent_failure_checks(
                profile, drift, own.score, threshold=threshold,
                challenger_scores=challenger, thresholds=limits,
                baseline_high_risk_share=baseline,
            )  # fmt: skip
            stuck = {"high_risk_share", "mean_score"}
            if share is not None and not any(
                c.status == "alarm" and c.detector in stuck for c in checks
            ):
                shares.append(share)  # days whose scores looked stuck stay out of the baseline
        days.append(DayReport(day=day.isoformat(), rows=len(window),
                              transactions_in=int(transactions_in.get(day.isoformat(), 0)),
                              psi=psi, score_psi=score_psi, high_risk_share=share,
                              mean_score=mean, checks=checks))  # fmt: skip
    labelled = predictions.where(
        (predictions.day <= np.datetime64((known_by - timedelta(LABEL_DELAY_DAYS)).isoformat()))
        & np.isin(predictions.transaction_id, np.fromiter(labels, dtype=np.int64))
    )
    y = np.array([labels[int(t)] for t in labelled.transaction_id], dtype=np.int64)
    performance = daily_performance(labelled.day, y, labelled.customer_id, labelled.score,
                                    labelled.model_version)  # fmt: skip
    shadow = np.isfinite(labelled.challenger_score)
    if shadow.any():
        performance += daily_performance(
            labelled.day[shadow], y[shadow], labelled.customer_id[shadow],
            labelled.challenger_score[shadow], labelled.challenger_version[shadow],
            role="challenger",
        )  # fmt: skip
    performance_checks = [
        performance_check([p for p in performance if p.day == day], limits)
        for day in sorted({p.day for p in performance})
    ]
    first: dict[str, str] = {}
    for report in days:
        for check in report.alarms:
            first.setdefault(check.detector, report.day)
    for check in performance_checks:
        if check.status == "alarm":
            first.setdefault(check.detector, check.detail.rsplit(" ", 1)[-1])
    return MonitorReport(
        start=start.isoformat(), end=end.isoformat(), as_of=known_by.isoformat(),
        threshold=threshold, thresholds=limits, days=days, performance=performance,
        performance_checks=performance_checks, first_alarm=first,
    )  # fmt: skip


# --- an archive from files: what the stream would have written ---------------------------------


def replay_lines(
    table: Any,
    model: Any,
    *,
    challenger: Any = None,
    threshold: float = 0.5,
    path: str = "stream",
) -> dict[str, list[str]]:
    """Archive lines per day for a feature table's rows, scored as the stream scores them
    (the same features, proven equal to the online engine's; the same scorer): the period a
    monitor reads, without streaming it. Each line is a ``Prediction``."""
    from datetime import UTC, datetime

    from models.batch_scorer import load_batch_scorer
    from models.contracts import Prediction

    names = list(model.manifest.feature_names)
    matrix = np.column_stack([table.column(n).to_numpy().astype(np.float64) for n in names])
    scores = load_batch_scorer(model).score_matrix(matrix)
    other = None if challenger is None else load_batch_scorer(challenger).score_matrix(
        np.column_stack([table.column(n).to_numpy().astype(np.float64)
                         for n in challenger.manifest.feature_names]))  # fmt: skip
    times = table.column("TX_DATETIME").to_pylist()
    ids = table.column("TRANSACTION_ID").to_pylist()
    customers = table.column("CUSTOMER_ID").to_pylist()
    terminals = table.column("TERMINAL_ID").to_pylist()
    scored_at = datetime.now(UTC)
    out: dict[str, list[str]] = {}
    for i in range(len(ids)):
        score = float(scores[i])
        prediction = Prediction(
            transaction_id=ids[i], customer_id=customers[i], terminal_id=terminals[i],
            tx_datetime=times[i], score=score,
            decision="high_risk" if score >= threshold else "low_risk", threshold=threshold,
            model_name=model.name, model_version=model.version,
            challenger_score=None if other is None else float(other[i]),
            challenger_version=None if challenger is None else challenger.version,
            features={n: float(matrix[i, k]) for k, n in enumerate(names)},
            scored_at=scored_at, path=path,
        )  # fmt: skip
        out.setdefault(times[i].date().isoformat(), []).append(prediction.model_dump_json())
    return out
