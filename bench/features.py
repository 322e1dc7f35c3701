"""Benchmark: offline features (numpy) against the obvious pandas rolling reference.

The reference is the per-entity ``rolling('Nd')`` approach the handbook describes; it is
also the oracle of the offline engine's tests. Both run here, on the same data, in one
process; the figure is the ratio of their times, and the outputs are asserted equal.

    python -m bench.features --in data/simulated
    python -m bench.features --customers 1000      # simulate a smaller set first
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.features.spec import BASELINE, FeatureSpec


def pandas_reference(df: pd.DataFrame, spec: FeatureSpec = BASELINE) -> pd.DataFrame:
    """The book's way: per entity, time-indexed rolling windows; delays by difference."""
    df = df.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    out = pd.DataFrame(index=df.index)
    out["TX_AMOUNT"] = df["TX_AMOUNT"]
    out["TX_DURING_WEEKEND"] = (df["TX_DATETIME"].dt.day_of_week >= 5).astype(float)
    out["TX_DURING_NIGHT"] = (df["TX_DATETIME"].dt.hour <= spec.night_last_hour).astype(float)

    def per_entity(group: pd.DataFrame, key: str) -> pd.DataFrame:
        entity = spec.entity(key)
        g = group.set_index("TX_DATETIME")
        res: dict[str, Any] = {}
        delay = f"{entity.delay_seconds}s"
        for window in entity.windows:
            span = f"{entity.delay_seconds + window.seconds}s"
            for agg in entity.aggregations:
                name = f"{key}_{agg.name}_{window.suffix}"
                col = g[agg.field or "TX_AMOUNT"]
                count = col.rolling(span).count()
                total = col.rolling(span).sum()
                if entity.delay_seconds:
                    count = count - col.rolling(delay).count()
                    total = total - col.rolling(delay).sum()
                if agg.kind == "count":
                    res[name] = count.to_numpy().astype(np.int64)
                else:
                    res[name] = np.where(count > 0, total / count.where(count > 0, 1), 0.0)
        return pd.DataFrame(res, index=group.index)

    for entity in spec.entities:
        parts = [per_entity(g, entity.key) for _, g in df.groupby(entity.key, sort=False)]
        out = out.join(pd.concat(parts))
    return out[spec.feature_names()]


def main() -> None:
    from models import datasets, simulator
    from models.contracts import TRANSACTIONS_COLUMNS
    from models.features.offline import compute_features

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="src", type=Path, help="a simulated dataset directory")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    if args.src:
        table = datasets.read_dataset(args.src, TRANSACTIONS_COLUMNS)
    else:
        config = simulator.SimulationConfig(
            n_customers=args.customers, n_terminals=2 * args.customers
        )
        table = simulator.simulate(config).to_arrow()

    t0 = time.perf_counter()
    ours = compute_features(table)
    t_ours = time.perf_counter() - t0

    df = table.to_pandas()
    t0 = time.perf_counter()
    ref = pandas_reference(df).loc[df.index]
    t_ref = time.perf_counter() - t0

    worst = 0.0
    for name, values in ours.items():
        expected = ref[name].to_numpy()
        if values.dtype == np.int64:
            np.testing.assert_array_equal(values, expected, err_msg=name)
        else:
            worst = max(worst, float(np.max(np.abs(values - expected), initial=0.0)))
    print(f"rows                 {table.num_rows:,}")
    print(f"offline (numpy)      {t_ours:7.2f} s")
    print(f"pandas rolling ref   {t_ref:7.2f} s")
    print(f"speed-up             {t_ref / t_ours:7.1f} x")
    print(f"agreement            counts equal; floats max |diff| {worst:.2e}")
    assert worst <= 1e-9
    if args.out:
        figures = {"rows": table.num_rows, "offline_s": t_ours, "pandas_s": t_ref,
                   "max_abs_diff": worst}  # fmt: skip
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
