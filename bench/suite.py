"""Every benchmark in one run: each figure against its reference and its target, one table,
``bench/results.json``, and a non-zero exit when a target is missed (``make bench``).

Each benchmark runs in a process of its own (``python -m bench.<name>``, which also works
alone), one after another, so none measures the others' memory or threads. Absolute times
vary from run to run on this machine; the targets are ratios against a reference measured in
the same run wherever the issue names one.

    python -m bench.suite                     # the book's data (made first when missing)
    python -m bench.suite --small             # a 500-customer world, to try the suite: its
                                              # figures are not the book-size targets' own
    python -m bench.suite --only score_single,cold_start
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = ROOT / "bench" / "results.json"
SMALL_WORLD: Final = ("--customers", "500", "--terminals", "1000")


@dataclass(frozen=True)
class Figure:
    """One measured figure: what it is, its value, what it is compared with, its target."""

    name: str
    what: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    """None: reported, no target."""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Paths:
    data: Path
    simulated: Path
    features: Path
    artifact: Path


def _run(module: str, *args: str | Path) -> None:
    command = [sys.executable, "-m", module, *map(str, args)]
    print(f"  $ {' '.join(command[1:])}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def prepare(data: Path, *, small: bool) -> Paths:
    """The dataset, feature table and XGBoost artifact the figures need, made if missing."""
    paths = Paths(data, data / "simulated", data / "features", data / "artifacts" / "xgboost")
    if not (paths.simulated / "_rtml_dataset.json").exists():
        _run("rtml.cli", "simulate", *(SMALL_WORLD if small else ()), "--out", paths.simulated)
    if not paths.features.exists():
        _run("rtml.cli", "features", "--in", paths.simulated, "--out", paths.features)
    if not (paths.artifact / "manifest.json").exists():
        _run("rtml.cli", "train", "--data", paths.features, "--model", "xgboost",
             "--out", paths.artifact)  # fmt: skip
    if not list((ROOT / "build" / "lambda").glob("*.json")):
        _run("infra.bundle")
    return paths


def _ratio_figure(
    name: str, what: str, *, value: float, reference: str, reference_value: float, unit: str,
    at_least: float, higher_is_better: bool = False,
) -> Figure:  # fmt: skip
    """``ratio`` is how many times better rtml is than the reference."""
    ratio = value / reference_value if higher_is_better else reference_value / value
    return Figure(name, what, value, unit, reference, reference_value, ratio,
                  f">= {at_least:g}x", ratio >= at_least)  # fmt: skip


# --- the figures ---------------------------------------------------------------------------


def simulate(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "simulate.json"
    world = SMALL_WORLD if small else ()
    _run("bench.simulator", *world, "--out", out)
    r = _json(out)
    return [_ratio_figure("simulate", f"{r['transactions']:,} transactions, identical output",
                          value=r["fast_s"], reference="per-transaction loop",
                          reference_value=r["loop_s"], unit="s", at_least=5)]  # fmt: skip


def features_offline(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "features.json"
    _run("bench.features", "--in", p.simulated, "--out", out)
    r = _json(out)
    figure = _ratio_figure("features_offline", f"{r['rows']:,} rows, max diff "
                           f"{r['max_abs_diff']:.1e}", value=r["offline_s"],
                           reference="pandas rolling('Nd') per entity",
                           reference_value=r["pandas_s"], unit="s", at_least=30)  # fmt: skip
    equal = r["max_abs_diff"] <= 1e-9
    return [Figure(**{**figure.as_dict(), "met": bool(figure.met and equal)})]


def features_online(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "online.json"
    _run("bench.online", "--data", p.simulated, "--days", "30", "--out", out)
    r = _json(out)
    rate = r["events_per_s"]
    return [Figure("features_online", f"{r['events']:,} events of 30 days, in-process, 1 core",
                   rate, "events/s", target=">= 50,000", met=rate >= 50_000)]  # fmt: skip


def score_single(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "scorer.json"
    _run("bench.scorer", "--data", p.features, "--families", "xgboost", "--cold-runs", "1",
         "--out", out)  # fmt: skip
    r = _json(out)["xgboost"]
    ratio = r["library_p50_us"] / r["lean_p50_us"]
    met = r["lean_p99_us"] <= 20 and ratio >= 15 and r["max_diff"] <= 1e-6
    return [
        Figure("score_single", f"one row, p50 (p99 {r['lean_p99_us']:.1f} us), max diff "
               f"{r['max_diff']:.1e}", r["lean_p50_us"], "us p50",
               "xgboost inplace_predict p50", r["library_p50_us"], ratio,
               "p99 <= 20 us, >= 15x, diff <= 1e-6", met),
    ]  # fmt: skip


def score_batch(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "score_batch.json"
    _run("bench.score_batch", "--artifact", p.artifact, "--data", p.features, "--out", out)
    r = _json(out)
    timings = r["timings"]

    def best(prefix: str) -> tuple[str, float]:
        return max(((k, v["rows_per_s"]) for k, v in timings.items() if k.startswith(prefix)),
                   key=lambda kv: kv[1])  # fmt: skip

    (ours_label, ours), (library_label, library) = best("batch scorer"), best("xgboost")
    one = timings["batch scorer, 1 thread"]["rows_per_s"]
    library_one = timings["xgboost inplace_predict, 1 thread(s)"]["rows_per_s"]
    lean = best("lean")[1]
    return [
        _ratio_figure("score_batch", f"{r['rows']:,} rows, {ours_label} (1 thread each: "
                      f"{one / library_one:.2f}x)", value=ours, reference=library_label,
                      reference_value=library, unit="rows/s", at_least=1.0,
                      higher_is_better=True),
        Figure("score_batch_lean", "the serving (lean) scorer on the same rows", lean,
               "rows/s", library_label, library, lean / library),
    ]  # fmt: skip


def cold_start_and_api(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    _run("bench.api", "--data", p.simulated, "--artifact", p.artifact)
    r = _json(ROOT / "bench" / "api_results.json")
    cold = r["cold_start"]
    ours = cold["rtml_import_s"] + cold["rtml_model_load_s"]
    theirs = cold["xgboost_import_s"] + cold["xgboost_model_load_s"]
    ratio = theirs / ours
    return [
        Figure("cold_start", f"API handler import {cold['rtml_import_s']:.2f} s (Powertools, "
               f"clients) + model {cold['rtml_model_load_s']:.2f} s", ours, "s",
               "import xgboost + load the model", theirs, ratio, "<= 0.5 s, >= 4x",
               ours <= 0.5 and ratio >= 4),
        Figure("api_handler", f"one prediction in-process, p50 {r['in_process']['p50_us']:.0f}"
               f" us; on moto p99 {r['moto']['p99_us']:.0f} us", r["in_process"]["p99_us"],
               "us p99", target="<= 1000 us", met=r["in_process"]["p99_us"] <= 1000),
    ]  # fmt: skip


def stream_batch(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    day = "2018-05-15"
    _run("bench.stream", "--data", p.simulated, "--artifact", p.artifact, "--day", day)
    r = _json(ROOT / "bench" / "stream_results.json")
    slow, fast = r["latency"], r["no_latency"]
    return [
        Figure("stream_batch", f"100 records through the handler, 10 ms a call; "
               f"{100 * 1000 / slow['wall_ms_p50']:.0f} records/s a shard", slow["wall_ms_p50"],
               "ms p50", target="<= 150 ms", met=slow["wall_ms_p50"] <= 150),
        Figure("stream_requests", "AWS requests a record (counted)",
               slow["requests_per_record"], "requests", target="<= 3",
               met=slow["requests_per_record"] <= 3),
        Figure("stream_cpu", "in-process work a record (no latency)",
               fast["cpu_us_per_record"] - fast["fake_cpu_us_per_record"], "us"),
    ]  # fmt: skip


def batch_chunk(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    _run("bench.batch", "--data", p.simulated, "--artifact", p.artifact)
    r = _json(ROOT / "bench" / "batch_results.json")
    split = r["customer_chunk_split_seconds"]
    total = sum(split.values()) or 1.0
    where = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in split.items())
    rate = r["customer_chunk_rows_per_s"]
    return [Figure("batch_chunk", f"a customer chunk end to end ({where})", rate, "rows/s",
                   "score_batch on the same rows", r["batch_scorer_rows_per_s"],
                   rate / r["batch_scorer_rows_per_s"])]  # fmt: skip


def local_stack(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    out = tmp / "local.json"
    _run("bench.local_stack", "--artifact", p.artifact, "--out", out)
    r = _json(out)
    t = r["up_timings_s"]
    return [
        Figure("local_stack_up", f"rtml local up (synth {t['synth']:.1f} s, deploy "
               f"{t['deploy']:.1f} s)", r["up_s"], "s"),
        Figure("local_stack_trip", f"put_records to a stored prediction, {r['records']} "
               f"records, p95 {r['trip_ms_p95']:.0f} ms", r["trip_ms_p50"], "ms p50"),
    ]  # fmt: skip


def asset_sizes(p: Paths, small: bool, tmp: Path) -> list[Figure]:
    from infra.app import cdk_json_context
    from infra.settings import ENVIRONMENTS_CONTEXT_KEY, parse_environments

    environments = parse_environments(cdk_json_context()[ENVIRONMENTS_CONTEXT_KEY]).values()
    settings = next(iter(environments))
    deployed = {env.functions.architecture for env in environments}
    budgets = {"serving": settings.functions.bundle_budget_mb,
               "batch": settings.batch.bundle_budget_mb}  # fmt: skip
    figures = []
    for manifest in sorted((ROOT / "build" / "lambda").glob("*.json")):
        m = _json(manifest)
        if m["architecture"] not in deployed:  # a zip no stage deploys (maybe stale)
            continue
        size = m["unzipped_bytes"] / 1e6
        budget = budgets[m["kind"]]
        what = f"{m['files']:,} files, {m['zipped_bytes'] / 1e6:.1f} MB zipped"
        name = f"asset_{m['kind']}_{m['architecture']}"
        figures.append(Figure(name, what, size, "MB unzipped", target=f"<= {budget} MB",
                              met=size <= budget))  # fmt: skip
    return figures


BENCHMARKS: Final[dict[str, Callable[[Paths, bool, Path], list[Figure]]]] = {
    "simulate": simulate,
    "features_offline": features_offline,
    "features_online": features_online,
    "score_single": score_single,
    "score_batch": score_batch,
    "cold_start": cold_start_and_api,
    "stream_batch": stream_batch,
    "batch_chunk": batch_chunk,
    "local_stack": local_stack,
    "asset_sizes": asset_sizes,
}


BENCHMARK_ORDER: Final = (
    "simulate", "features_offline", "features_online", "score_single", "score_batch",
    "score_batch_lean", "cold_start", "api_handler", "stream_batch", "stream_requests",
    "stream_cpu", "batch_chunk", "local_stack_up", "local_stack_trip",
)  # fmt: skip
"""The table's order (asset sizes follow, by name)."""


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(figures: list[Figure]) -> str:
    rows = [["figure", "value", "unit", "reference", "ref value", "x better", "target", "met"]]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append([f.name, _fmt(f.value), f.unit, f.reference, _fmt(f.reference_value),
                     "" if f.ratio is None else f"{f.ratio:.3g}", f.target, met])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="default data/ (data/bench-small with --small)")  # fmt: skip
    parser.add_argument("--small", action="store_true", help="a 500-customer world")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results.json, or results-small.json")  # fmt: skip
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown {unknown} (known: {', '.join(BENCHMARKS)})")
    data = args.data or (ROOT / "data" / ("bench-small" if args.small else ""))
    args.out = args.out or (RESULTS.with_name("results-small.json") if args.small else RESULTS)
    started = time.perf_counter()
    paths = prepare(data, small=args.small)
    figures: list[Figure] = []
    # the benchmarks write bench/<name>_results.json; a small world's must not stand for the
    # book's (rtml cost's figures come from them), so a --small run puts the book's back
    book_results = {p: p.read_bytes() for p in (ROOT / "bench").glob("*_results.json")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k, name in enumerate(chosen, 1):
                print(f"[{k}/{len(chosen)}] {name}", file=sys.stderr, flush=True)
                figures += BENCHMARKS[name](paths, args.small, Path(tmp))
    finally:
        if args.small:
            for path, body in book_results.items():
                path.write_bytes(body)
    from infra.cost import Measured

    if not args.small:  # what rtml cost prices: the book's figures only
        Measured.from_results(base=Measured.load()).save()
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
               "processor": platform.machine()}  # fmt: skip
    earlier = _json(args.out) if args.only and args.out.exists() else None
    if earlier and earlier.get("small") == args.small:  # a partial run keeps the rest
        fresh = {f.name for f in figures}
        kept = [Figure(**f) for f in earlier["figures"] if f["name"] not in fresh]
        order = {name: k for k, name in enumerate(BENCHMARK_ORDER)}
        figures = sorted([*kept, *figures], key=lambda f: order.get(f.name, len(order)))
    missed = [f.name for f in figures if f.met is False]
    args.out.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
        "data": str(paths.data), "small": args.small, "seconds": time.perf_counter() - started,
        "figures": [f.as_dict() for f in figures], "missed": missed,
    }, indent=2) + "\n")  # fmt: skip
    print(table(figures))
    print(f"\n{len(figures)} figures, {len(missed)} targets missed"
          f"{': ' + ', '.join(missed) if missed else ''}; wrote {args.out}")  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
