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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.artifact import ReferenceProfile
from models.monitoring import (
    Check,
    DailyPerformance,
    MonitorThresholds,
    daily_performance,
    drift_report,
    observed_counts,
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

    def scores_of(self, version: str) -> npt.NDArray[np.float64]:
        """``version``'s score of every row, deciding or in shadow (NaN where it did not
        score): in an A/B split the champion decides some rows and shadows the others."""
        shadow = np.where(self.challenger_version == version, self.challenger_score, np.nan)
        return np.where(self.model_version == version, self.score, shadow)

    def others_of(self, version: str) -> npt.NDArray[np.float64]:
        """The score of the model that is not ``version`` on each row (NaN: none ran)."""
        theirs = np.where(self.challenger_version == version, self.score, np.nan)
        return np.where(self.model_version == version, self.challenger_score, theirs)

    def to_table(self) -> Any:
        """Everything but the model inputs, as Arrow: what the label check needs a week
        later (a few dozen bytes a row, where the archive's JSON line is about a kilobyte)."""
        import pyarrow as pa

        return pa.table({
            "transaction_id": self.transaction_id, "day": self.day, "time": self.time,
            "customer_id": self.customer_id, "score": self.score,
            "model_version": self.model_version.astype(object),
            "challenger_score": self.challenger_score,
            "challenger_version": self.challenger_version.astype(object),
            "path": self.path.astype(object),
        })  # fmt: skip

    @classmethod
    def from_table(cls, table: Any) -> ArchivedPredictions:
        def text(name: str) -> npt.NDArray[np.str_]:
            return np.asarray(table.column(name).to_pylist(), dtype=str)

        def number(name: str, dtype: Any) -> Any:
            return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

        return cls(
            transaction_id=number("transaction_id", np.int64),
            day=number("day", "datetime64[D]"), time=number("time", "datetime64[s]"),
            customer_id=number("customer_id", np.int64), score=number("score", np.float64),
            model_version=text("model_version"),
            challenger_score=number("challenger_score", np.float64),
            challenger_version=text("challenger_version"), path=text("path"),
        )  # fmt: skip


def _first_of_each(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """True at the first occurrence of each id (a retried batch repeats its predictions)."""
    keep = np.zeros(ids.size, dtype=bool)
    keep[np.unique(ids, return_index=True)[1]] = True
    return keep


REQUIRED_FIELDS: Final = ("transaction_id", "customer_id", "tx_datetime", "score", "model_version")
"""Fields every archived prediction has (the stream writes ``Prediction``): a line without
one is a bug upstream, reported by name, never read as a default."""


def _archive_schema(feature_names: Iterable[str]) -> Any:
    import pyarrow as pa

    return pa.schema([
        ("transaction_id", pa.int64()), ("customer_id", pa.int64()),
        ("tx_datetime", pa.string()), ("score", pa.float64()),
        ("model_version", pa.string()), ("challenger_score", pa.float64()),
        ("challenger_version", pa.string()), ("path", pa.string()),
        ("features", pa.struct([(n, pa.float64()) for n in feature_names])),
    ])  # fmt: skip


def parse_archive(
    lines: Iterable[str | bytes] | bytes, feature_names: Iterable[str]
) -> ArchivedPredictions:
    """Archive JSON lines -> arrays, with Arrow's JSON reader (columnar: a day of lines is
    never a list of dicts); a repeated transaction id (a retried batch) is dropped. Fields
    other than the checked ones, and inputs the model does not read, are skipped."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    names = list(feature_names)
    if isinstance(lines, bytes):
        data = lines
    else:
        data = b"\n".join(ln.encode() if isinstance(ln, str) else ln for ln in lines)
    data = b"\n".join(ln for ln in data.splitlines() if ln.strip())
    if not data:
        return ArchivedPredictions(
            np.zeros(0, np.int64), np.zeros(0, "datetime64[D]"), np.zeros(0, "datetime64[s]"),
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0, str), np.zeros(0),
            np.zeros(0, str), np.zeros(0, str), {n: np.zeros(0) for n in names},
        )  # fmt: skip
    import pyarrow as pa

    options = pj.ParseOptions(explicit_schema=_archive_schema(names),
                              unexpected_field_behavior="ignore")  # fmt: skip
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=options)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"archive: a line is not a prediction ({exc})") from None
    for required in REQUIRED_FIELDS:
        if (missing := table.column(required).null_count) > 0:
            raise ValueError(f"archive: {missing} line(s) without {required}")

    def floats(column: Any) -> npt.NDArray[np.float64]:
        # a NaN or infinite input is archived as null: the missing-input check's case
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)

    def text(column: Any, default: str) -> npt.NDArray[np.str_]:
        return np.asarray(pc.fill_null(column, default).to_pylist(), dtype=str)

    times = pc.utf8_slice_codeunits(table.column("tx_datetime"), 0, 19).to_pylist()
    struct = table.column("features").combine_chunks()
    parsed = ArchivedPredictions(
        transaction_id=table.column("transaction_id").to_numpy().astype(np.int64),
        day=np.asarray([t[:10] for t in times], dtype="datetime64[D]"),
        time=np.asarray(times, dtype="datetime64[s]"),
        customer_id=table.column("customer_id").to_numpy().astype(np.int64),
        score=floats(table.column("score")),
        model_version=text(table.column("model_version"), ""),
        challenger_score=floats(table.column("challenger_score")),
        challenger_version=text(table.column("challenger_version"), ""),
        path=text(table.column("path"), "stream"),
        features={n: floats(pc.struct_field(struct, n)) for n in names},
    )
    return parsed.where(_first_of_each(parsed.transaction_id))


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=k) for k in range((end - start).days + 1)]


def read_archive_dir(
    root: Path, start: date, end: date, feature_names: Iterable[str]
) -> ArchivedPredictions:
    """The archive's days [start, end] from a directory (``date=YYYY-MM-DD/*.jsonl``)."""
    data = b"\n".join(
        path.read_bytes()
        for day in _days(start, end)
        for path in sorted((root / f"date={day.isoformat()}").glob("*.jsonl"))
    )
    return parse_archive(data, feature_names)


def archive_listing(s3: Any, bucket: str, prefix: str, day: date) -> list[tuple[str, datetime]]:
    """(key, LastModified) of a day's archive files, in key order (one listing)."""
    found = []
    listing = f"{prefix.strip('/')}/date={day.isoformat()}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listing):
        found += [(o["Key"], o["LastModified"]) for o in page.get("Contents", [])
                  if o["Key"].endswith(".jsonl")]  # fmt: skip
    return sorted(found)


def listing_fingerprint(listing: list[tuple[str, datetime]]) -> str:
    """What a day's archive was when it was read: a file added or rewritten changes it."""
    latest = max((written for _, written in listing), default=None)
    return f"{len(listing)}:{'' if latest is None else latest.isoformat()}"


def read_archive_s3(
    s3: Any,
    bucket: str,
    prefix: str,
    *,
    days: Iterable[date],
    feature_names: Iterable[str],
    written_since: Mapping[date, datetime] | None = None,
    listings: Mapping[date, list[tuple[str, datetime]]] | None = None,
) -> ArchivedPredictions:
    """The archive's ``days`` from S3 (one listing a day, unless ``listings`` has the day's
    already; GETs ``READ_WORKERS`` at a time). For a day in ``written_since``, only the
    files written from then on: a file written earlier cannot hold a transaction after it
    (the hourly check's last 24 hours)."""
    from concurrent.futures import ThreadPoolExecutor

    from models.s3_datasets import READ_WORKERS

    since, listed = written_since or {}, listings or {}
    keys = [
        key
        for day in days
        for key, written in (listed[day] if day in listed
                             else archive_listing(s3, bucket, prefix, day))
        if day not in since or written >= since[day]
    ]  # fmt: skip

    def body(key: str) -> bytes:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        return parse_archive(b"\n".join(pool.map(body, sorted(keys))), feature_names)


class DayReport(BaseModel):
    """One day of the period: its drift figures and every check's verdict. The monitor job
    keeps each day's as a summary, so the next runs need not read that day's archive again."""

    model_config = ConfigDict(frozen=True)

    day: str
    rows: int
    transactions_in: int
    psi: dict[str, float]
    score_psi: float
    high_risk_share: float | None
    mean_score: float | None
    checks: list[Check]
    score_counts: list[int] = Field(
        default_factory=list, description="The model's scores per reference score bin."
    )

    @property
    def alarms(self) -> list[Check]:
        return [c for c in self.checks if c.status == "alarm"]

    @property
    def looked_stuck(self) -> bool:
        """The scores alarmed as stuck: such a day stays out of the high-risk baseline."""
        return any(c.detector in STUCK_DETECTORS for c in self.alarms)


STUCK_DETECTORS: Final = frozenset({"high_risk_share", "mean_score"})


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


def check_day(
    profile: ReferenceProfile,
    window: ArchivedPredictions,
    *,
    day: date,
    transactions_in: int,
    threshold: float,
    limits: MonitorThresholds,
    baseline_high_risk_share: float | None,
    path: str = "stream",
    check_volume: bool = True,
    other_paths: Mapping[str, int] | None = None,
    model_version: str | None = None,
) -> DayReport:
    """One day's drift, silent-failure and volume checks. With ``model_version`` (the
    profile's model), the score checks take that version's score of every row, deciding or
    in shadow (a day with a promote or an A/B split holds two models' scores; each has its
    own reference), and the disagreement check the other model's; the input checks use
    every prediction."""
    on_path = int((window.path == path).sum())
    checks = [volume_check(transactions_in, on_path, path, limits)] if check_volume else []
    for other, rows in (other_paths or {}).items():
        if check_volume:
            checks.append(volume_check(transactions_in, int(rows), other, limits))
    psi: dict[str, float] = {}
    score_psi, share, mean, counts = 0.0, None, None, []
    if len(window):
        if model_version is None:
            own, others = window.score, window.challenger_score
        else:
            own, others = window.scores_of(model_version), window.others_of(model_version)
        scored = np.isfinite(own)
        own_scores, others = own[scored], others[scored]
        drift = drift_report(profile, window.features, own_scores, threshold=threshold,
                             thresholds=limits, not_alarmed=NOT_ALARMED_DAILY)  # fmt: skip
        psi = {n: round(c.psi, 4) for n, c in drift.features.items()}
        score_psi, share = round(drift.score.psi, 4), drift.high_risk_share
        mean = float(own_scores.mean()) if own_scores.size else None
        counts = observed_counts(profile.score, own_scores)[0].tolist()
        checks += silent_failure_checks(
            profile, drift, own_scores, threshold=threshold,
            challenger_scores=others if np.isfinite(others).any() else None,
            thresholds=limits, baseline_high_risk_share=baseline_high_risk_share,
        )  # fmt: skip
    return DayReport(day=day.isoformat(), rows=len(window), transactions_in=transactions_in,
                     psi=psi, score_psi=score_psi, high_risk_share=share, mean_score=mean,
                     checks=checks, score_counts=counts)  # fmt: skip


def high_risk_baseline(earlier: Iterable[DayReport]) -> float | None:
    """The median high-risk share of the last week's quiet days (None: fewer than 3)."""
    shares = [d.high_risk_share for d in earlier
              if d.high_risk_share is not None and not d.looked_stuck]  # fmt: skip
    recent = shares[-BASELINE_DAYS:]
    return float(np.median(recent)) if len(recent) >= MIN_BASELINE_DAYS else None


def labelled_performance(
    predictions: ArchivedPredictions,
    labels: Mapping[int, int],
    *,
    known_by: date,
    model_version: str | None = None,
) -> list[DailyPerformance]:
    """AUC, AP and CP@100 per day and model version, for the days whose labels are known by
    ``known_by``. Every model that scored a row is judged on it, deciding or in shadow; the
    role is the version's (``model_version`` is the champion), so an A/B split's challenger
    is never reported as the champion. Without ``model_version``: the deciding column is
    the champion's, the shadow column the challenger's."""
    labelled = predictions.where(
        (predictions.day <= np.datetime64((known_by - timedelta(LABEL_DELAY_DAYS)).isoformat()))
        & np.isin(predictions.transaction_id, np.fromiter(labels, dtype=np.int64))
    )
    y = np.array([labels[int(t)] for t in labelled.transaction_id], dtype=np.int64)
    shadow = np.isfinite(labelled.challenger_score)
    day = np.concatenate([labelled.day, labelled.day[shadow]])
    fraud = np.concatenate([y, y[shadow]])
    card = np.concatenate([labelled.customer_id, labelled.customer_id[shadow]])
    score = np.concatenate([labelled.score, labelled.challenger_score[shadow]])
    version = np.concatenate([labelled.model_version, labelled.challenger_version[shadow]])
    deciding = np.arange(day.size) < len(labelled)
    if model_version is None:
        champion = deciding
    else:
        # a day the champion did not score at all (before a promote without a shadow period,
        # or a rollback) keeps the roles the rows had: the deciding model was the champion
        judged = np.isin(day, np.unique(day[version == model_version]))
        champion = np.where(judged, version == model_version, deciding)
    return daily_performance(
        day[champion], fraud[champion], card[champion], score[champion], version[champion]
    ) + daily_performance(day[~champion], fraud[~champion], card[~champion], score[~champion],
                          version[~champion], role="challenger")  # fmt: skip


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
    known_days: Mapping[str, DayReport] | None = None,
    labelled: ArchivedPredictions | None = None,
    earlier_performance: Iterable[DailyPerformance] = (),
) -> MonitorReport:
    """Every day of [start, end]: :func:`check_day` (a day in ``known_days``, a summary
    kept by an earlier run, is taken as it is); every day whose labels are known by
    ``as_of`` (default: the end): each model's AUC, AP and CP@100 from ``labelled`` (default:
    ``predictions``), and the AP floor check on the newest. ``check_volume=False`` for a day
    still under way (its transactions are not all in the dataset yet). ``other_paths`` (path
    -> day -> predictions, e.g. a batch run's rows) get a volume check each on those days.
    ``earlier_performance`` (kept by earlier runs) joins the report's performance series."""
    limits = thresholds or MonitorThresholds()
    known_by = as_of or end
    known = known_days or {}
    days: list[DayReport] = []
    for day in _days(start, end):
        if day.isoformat() in known:
            days.append(known[day.isoformat()])
            continue
        others = {name: per_day[day.isoformat()] for name, per_day in (other_paths or {}).items()
                  if day.isoformat() in per_day}  # fmt: skip
        days.append(check_day(
            profile, predictions.where(predictions.day == np.datetime64(day.isoformat())),
            day=day, transactions_in=int(transactions_in.get(day.isoformat(), 0)),
            threshold=threshold, limits=limits, baseline_high_risk_share=high_risk_baseline(days),
            path=path, check_volume=check_volume, other_paths=others,
            model_version=model_version,
        ))  # fmt: skip
    fresh = labelled_performance(predictions if labelled is None else labelled, labels,
                                 known_by=known_by, model_version=model_version)  # fmt: skip
    fresh_days = {p.day for p in fresh}
    performance = sorted([*(p for p in earlier_performance if p.day not in fresh_days), *fresh],
                         key=lambda p: (p.day, p.role, p.model_version))  # fmt: skip
    performance_checks = [
        performance_check([p for p in fresh if p.day == day], limits) for day in sorted(fresh_days)
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
