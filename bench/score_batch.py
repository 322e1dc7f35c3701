"""Benchmark: the numpy batch scorer against the lean scorer and XGBoost, rows per second.

Real feature rows (an ``rtml features`` table, tiled up to ``--rows``), raw as the batch job
holds them, scored by:

(a) the batch scorer (``models.batch_scorer``), one thread and ``--threads``;
(b) the lean scorer's ``score_batch`` (what the batch job called before): on a subsample
    of ``--lean-rows`` rows, extrapolated to ``--rows``, since it is ~8x slower;
(c) XGBoost's own ``inplace_predict`` on the same rows (``model.json`` loaded with
    ``xgboost.Booster``), one thread and all cores; the model was trained on standardized
    inputs, so its time includes ``(x - mean) / scale``, as the other two do theirs.

Prints the table with ratios to the lean scorer, and the max |difference| of the batch
scorer against XGBoost (XGBoost sums in float32: ~1e-7) and against the lean scorer (its
contract: same branches and sums, an ulp of ``exp`` apart). Writes
``bench/score_batch_results.json``.

    python -m bench.score_batch --artifact data/artifacts/xgboost --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.scorer import _table, load_features
from models.artifact import MODEL_FILE, LoadedModel, load_artifact
from models.batch_scorer import load_batch_scorer

F64 = npt.NDArray[np.float64]


def feature_rows(data: Path, rows: int) -> F64:
    """``rows`` real feature rows in the manifest's order: the table, tiled when shorter."""
    x, _ = load_features(data, 0, 0)
    return np.ascontiguousarray(np.resize(x, (rows, x.shape[1])))


def best_seconds(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The fastest of ``repeat`` runs (after one warm-up), and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def xgboost_predict(loaded: LoadedModel, x: F64, threads: int) -> Callable[[], F64]:
    """``inplace_predict`` of the artifact's model on scaled rows, up to its best iteration."""
    import xgboost

    booster = xgboost.Booster(model_file=str(loaded.path / MODEL_FILE))
    booster.set_param({"nthread": threads})
    best = booster.attr("best_iteration")
    iterations = (0, int(best) + 1) if best is not None else (0, 0)
    mean = np.asarray(loaded.manifest.scaler.mean)
    scale = np.asarray(loaded.manifest.scaler.scale)

    def predict() -> F64:
        z = (x - mean) / scale
        return np.asarray(booster.inplace_predict(z, iteration_range=iterations), np.float64)

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--data", type=Path, default=Path("data/features"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lean-rows", type=int, default=50_000, help="lean subsample")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="runs timed, best kept")
    parser.add_argument("--out", type=Path, default=Path("bench/score_batch_results.json"))
    args = parser.parse_args()

    loaded = load_artifact(args.artifact)
    started = time.perf_counter()
    scorer = load_batch_scorer(loaded)
    build_s = time.perf_counter() - started
    x = feature_rows(args.data, args.rows)
    n = len(x)
    print(
        f"{loaded.manifest.ref} ({loaded.manifest.family}, batch scorer {scorer.kind}, "
        f"built in {build_s * 1e3:.0f} ms): {n:,} rows of {args.data}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}"
    )

    timings: dict[str, dict[str, Any]] = {}
    seconds, ours = best_seconds(lambda: scorer.score_matrix(x), args.repeat)
    timings["batch scorer, 1 thread"] = {"seconds": seconds}
    if args.threads > 1:
        seconds, _ = best_seconds(lambda: scorer.score_matrix(x, threads=args.threads), args.repeat)
        timings[f"batch scorer, {args.threads} threads"] = {"seconds": seconds}

    sample = x[: args.lean_rows]
    sample_rows = sample.tolist()  # the lean scorer takes sequences; not timed
    started = time.perf_counter()
    lean = np.asarray(loaded.score_batch(sample_rows), dtype=np.float64)
    lean_s = time.perf_counter() - started
    lean_label = f"lean score_batch ({len(sample):,} rows, extrapolated)"
    timings[lean_label] = {"seconds": lean_s * n / len(sample), "measured_rows": len(sample)}

    diffs = {"batch_vs_lean": float(np.max(np.abs(ours[: len(sample)] - lean), initial=0.0))}
    if loaded.manifest.family == "xgboost":
        for threads in sorted({1, args.threads}):
            seconds, theirs = best_seconds(xgboost_predict(loaded, x, threads), args.repeat)
            timings[f"xgboost inplace_predict, {threads} thread(s)"] = {"seconds": seconds}
        diffs["batch_vs_xgboost"] = float(np.max(np.abs(ours - theirs), initial=0.0))

    lean_rate = n / timings[lean_label]["seconds"]
    xgb_label = "xgboost inplace_predict, 1 thread(s)"
    xgb_rate = n / timings[xgb_label]["seconds"] if xgb_label in timings else None
    table = [["scorer", "seconds", "rows/s", "x lean", "x xgboost 1 thread"]]
    for label, timing in timings.items():
        timing["rows_per_s"] = n / timing["seconds"]
        timing["x_lean"] = timing["rows_per_s"] / lean_rate
        timing["x_xgboost_1_thread"] = timing["rows_per_s"] / xgb_rate if xgb_rate else None
        table.append(
            [
                label,
                f"{timing['seconds']:.3f}",
                f"{timing['rows_per_s']:,.0f}",
                f"{timing['x_lean']:.2f}",
                f"{timing['x_xgboost_1_thread']:.2f}" if xgb_rate else "",
            ]
        )
    print()
    _table(table)
    print()
    for name, value in diffs.items():
        print(f"max |diff| {name.replace('_', ' ')}: {value:.3g}")

    results = {
        "artifact": str(args.artifact),
        "model": loaded.manifest.ref,
        "family": loaded.manifest.family,
        "batch_kind": scorer.kind,
        "batch_build_s": build_s,
        "rows": n,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "timings": timings,
        "max_abs_diff": diffs,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
