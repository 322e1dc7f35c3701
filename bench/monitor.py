"""Benchmark: the monitor's mean-score check on small clean windows, and its archive reader.

False alarms: windows of N rows drawn from the book's clean test period (after the training
weeks), scored by the artifact, checked with ``mean_score_z`` 0 (the bare 2x bound) and with
the default (3 standard errors); a window of one value (a stuck score) must still alarm.
Reader: one day of the archive (the stream's JSON lines) parsed by ``parse_archive`` (Arrow's
JSON reader) against a per-line ``json.loads`` of the same bytes.

    python -m bench.monitor --data data/features --artifact data/artifacts/xgboost
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def false_alarms(data: Path, artifact: Path, *, sizes: list[int], trials: int) -> dict[str, Any]:
    import pyarrow.dataset as ds

    from models.artifact import load_artifact
    from models.batch_scorer import load_batch_scorer
    from models.monitoring import MonitorThresholds, drift_report, silent_failure_checks

    model = load_artifact(artifact)
    names = list(model.manifest.feature_names)
    table = ds.dataset(data, format="parquet").to_table(columns=[*names, "TX_DATETIME"])
    days = table.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    clean = days >= np.datetime64("2018-08-15")
    matrix = np.column_stack([table.column(n).to_numpy().astype(np.float64) for n in names])
    matrix = matrix[clean]
    scores = load_batch_scorer(model).score_matrix(matrix)
    profile = model.manifest.reference
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"reference_mean": profile.score.mean,
                           "reference_std": profile.score.std, "windows": {}}  # fmt: skip

    def mean_check(values: np.ndarray, inputs: np.ndarray, z: float | None) -> str:
        limits = MonitorThresholds(min_rows=100) if z is None else MonitorThresholds(
            min_rows=100, mean_score_z=z)  # fmt: skip
        columns = {n: inputs[:, k] for k, n in enumerate(names)}
        drift = drift_report(profile, columns, values, threshold=0.5)
        checks = silent_failure_checks(profile, drift, values, threshold=0.5, thresholds=limits)
        return next(c.status for c in checks if c.detector == "mean_score")

    for n in sizes:
        picks = [rng.choice(scores.size, n, replace=False) for _ in range(trials)]
        row: dict[str, Any] = {}
        for label, z in (("bare_bound", 0.0), ("default", None)):
            alarms = sum(mean_check(scores[i], matrix[i], z) == "alarm" for i in picks)
            row[f"false_alarm_rate_{label}"] = alarms / trials
        row["stuck_alarms"] = {str(v): mean_check(np.full(n, v), matrix[:n], None) == "alarm"
                               for v in (0.0, 0.5, 1.0)}  # fmt: skip
        out["windows"][str(n)] = row
    return out


def reader(data: Path, artifact: Path, day: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from models.artifact import load_artifact
    from models.monitor import parse_archive, replay_lines

    model = load_artifact(artifact)
    names = list(model.manifest.feature_names)
    table = ds.dataset(data, format="parquet").to_table()
    days = table.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    lines = replay_lines(table.filter(pa.array(days == np.datetime64(day))), model)[day]
    body = ("\n".join(lines) + "\n").encode()
    started = time.perf_counter()
    rows = [json.loads(line) for line in body.splitlines()]
    {n: np.array([r["features"].get(n) for r in rows], dtype=float) for n in names}
    per_line = time.perf_counter() - started
    started = time.perf_counter()
    parsed = parse_archive(body, names)
    arrow = time.perf_counter() - started
    return {"day": day, "rows": len(parsed), "bytes_per_line": len(body) / len(lines),
            "json_loads_s": per_line, "arrow_s": arrow, "speedup": per_line / arrow}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/features"))
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--sizes", default="250,500,2000")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--day", default="2018-09-03")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = {
        "mean_score": false_alarms(args.data, args.artifact, trials=args.trials,
                                   sizes=[int(s) for s in args.sizes.split(",")]),
        "archive_reader": reader(args.data, args.artifact, args.day),
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
