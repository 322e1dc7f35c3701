"""Benchmark: the fast simulator against the plain reference loop, in one run.

Both generate the same customers' transactions (asserted equal, bit for bit); the figure
is the ratio of their times, measured back to back on this machine. The full simulation
(profiles + generation + sort + fraud scenarios) is timed for the fast path.

    python -m bench.simulator            # the book's size (reference takes ~1 min)
    python -m bench.simulator --customers 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models import simulator as sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    config = sim.SimulationConfig(
        n_customers=args.customers, n_terminals=args.terminals, nb_days=args.days
    )

    t0 = time.perf_counter()
    customers = sim.customer_profiles(config.n_customers, config.seed)
    terminals = sim.terminal_profiles(config.n_terminals, config.seed + 1)
    available = sim.available_terminals(customers, terminals, config.radius)
    t_profiles = time.perf_counter() - t0

    t0 = time.perf_counter()
    fast = sim.generate_transactions(customers, available, config.nb_days)
    t_fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    reference = sim.generate_transactions_reference(customers, available, config.nb_days)
    t_reference = time.perf_counter() - t0

    for field in ("customer_id", "terminal_id", "time_seconds", "amount"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(reference, field))

    t0 = time.perf_counter()
    tx = sim.simulate(config)
    t_total = time.perf_counter() - t0
    summary = sim.summarize(tx, config)

    print(f"config              {config.model_dump_json()}")
    print(f"transactions        {summary.n_transactions:,} (frauds {summary.n_frauds:,})")
    print(f"profiles+terminals  {t_profiles:6.2f} s")
    print(f"generation, fast    {t_fast:6.2f} s")
    print(f"generation, loop    {t_reference:6.2f} s   (identical output: yes)")
    print(f"speed-up            {t_reference / t_fast:6.1f} x")
    print(f"whole simulate()    {t_total:6.2f} s   (profiles, generation, sort, frauds)")
    if args.out:
        args.out.write_text(json.dumps({
            "transactions": summary.n_transactions, "fast_s": t_fast, "loop_s": t_reference,
            "identical": True, "simulate_s": t_total,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
