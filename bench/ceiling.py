"""What Card Precision@100 any model can reach on the chapter 5 test folds.

A compromised terminal (the simulator's scenario 2) makes every transaction on it a fraud
for 28 days, with ordinary amounts and ordinary cards: until its first frauds are labelled,
a week later, nothing a model sees tells them apart. So the ceiling of CP@100 is not the
perfect score's (every fraud ranked first) but that of a model that finds every fraud
except those at a terminal in the first 7 days of its compromise. The compromise's start
is taken as the first scenario-2 fraud on the terminal (a new compromise after 28 days).

    python -m bench.ceiling --data data/simulated
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models import datasets, evaluation
from models.contracts import TRANSACTIONS_COLUMNS
from models.features.spec import LABEL_DELAY_DAYS
from models.selection import HandbookProtocol
from models.training import split

COMPROMISE_DAYS = 28
"""How long the simulator keeps a terminal compromised (the handbook's scenario 2)."""


def unseen_frauds(
    days: npt.NDArray[np.datetime64],
    terminals: npt.NDArray[np.int64],
    scenario: npt.NDArray[np.int8],
) -> npt.NDArray[np.bool_]:
    """Scenario-2 frauds less than the label delay after their terminal's compromise began."""
    day = days.astype("datetime64[D]").astype(np.int64)
    unseen = np.zeros(len(day), dtype=bool)
    rows = np.flatnonzero(scenario == 2)
    rows = rows[np.lexsort((day[rows], terminals[rows]))]
    start: dict[int, int] = {}
    for i in rows:
        k = int(terminals[i])
        if k not in start or day[i] - start[k] >= COMPROMISE_DAYS:
            start[k] = int(day[i])
        unseen[i] = day[i] - start[k] < LABEL_DELAY_DAYS
    return unseen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/simulated"))
    parser.add_argument("--out", type=Path, default=Path("bench/ceiling_results.json"))
    args = parser.parse_args()
    t = datasets.read_dataset(args.data, TRANSACTIONS_COLUMNS)
    days = t.column("TX_DATETIME").to_numpy().astype("datetime64[D]")
    cards = t.column("CUSTOMER_ID").to_numpy().astype(np.int64)
    labels = t.column("TX_FRAUD").to_numpy().astype(np.int8)
    unseen = unseen_frauds(
        days,
        t.column("TERMINAL_ID").to_numpy().astype(np.int64),
        t.column("TX_FRAUD_SCENARIO").to_numpy().astype(np.int8),
    )
    folds = []
    for fold in HandbookProtocol().test_folds():
        rows = split(days, cards, labels, fold).test
        y, d, c = labels[rows], days[rows], cards[rows]
        perfect = evaluation.evaluate(y, y.astype(float), d, c).card_precision_at_100
        seen = (y == 1) & ~unseen[rows]
        ceiling = evaluation.evaluate(y, seen.astype(float), d, c).card_precision_at_100
        folds.append({"test_start": fold.test_start.isoformat(), "perfect": perfect,
                      "ceiling": ceiling, "unseen_share_of_frauds": float(
                          unseen[rows].sum() / max(1, y.sum()))})  # fmt: skip
    means = {
        f"{key}_mean": round(float(np.mean([f[key] for f in folds])), 4)
        for key in ("perfect", "ceiling", "unseen_share_of_frauds")
    }
    args.out.write_text(json.dumps({"folds": folds, **means}, indent=2))
    print(json.dumps(means))


if __name__ == "__main__":
    main()
