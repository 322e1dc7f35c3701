"""Benchmark: the online feature engine's event rate in-process (no I/O), on one core.

Replays the first ``--days`` of a simulated dataset through ``OnlineFeatures`` on an
in-memory store (the state updates and the feature reads the stream does, without DynamoDB),
with the stream's label feed (chargebacks), and reports events (transactions plus labels) a
second, with the split between building the events and the engine's own work.

    python -m bench.online --data data/simulated --days 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def measure(table: pa.Table, *, days: int) -> dict[str, Any]:
    from datetime import timedelta

    from models.features.online import MemoryStore, OnlineFeatures
    from models.features.replay import history_events
    from models.features.spec import BASELINE

    stamps = table.column("TX_DATETIME").to_numpy()
    first = stamps.min()
    chosen = table.filter(pa.array(stamps < first + np.timedelta64(days, "D")))
    delay = max(e.delay_seconds for e in BASELINE.entities)
    started = time.perf_counter()
    events, _ = history_events(chosen, timedelta(seconds=delay), "chargebacks")
    build_s = time.perf_counter() - started
    engine = OnlineFeatures(MemoryStore(), BASELINE)
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(events), 2000):
        for _ in engine.process_raw(events[start : start + 2000]):
            pass
    engine_s, engine_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "days": days, "transactions": chosen.num_rows, "events": len(events),
        "build_events_s": build_s, "engine_s": engine_s, "engine_cpu_s": engine_cpu,
        "events_per_s": len(events) / engine_s,
    }  # fmt: skip


def main() -> None:
    from models import datasets
    from models.contracts import TRANSACTIONS_COLUMNS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/simulated"))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = measure(datasets.read_dataset(args.data, TRANSACTIONS_COLUMNS), days=args.days)
    for key, value in figures.items():
        print(f"{key:<16} {value:,.3f}" if isinstance(value, float) else f"{key:<16} {value:,}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
