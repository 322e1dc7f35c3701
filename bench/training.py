"""Benchmark: the handbook's baseline table on our feature table, and the tuned XGBoost.

Trains every named configuration with the book's protocol (7 days from 2018-07-25, a 7-day
delay, 7 test days), prints test AUC ROC / average precision / Card Precision@100 with
fit and predict times next to the book's published figures, then the tuned XGBoost
against the baseline XGBoost. Selection of the tuned model uses validation folds only;
the test week is looked at once, here, after the choice.

    python -m bench.training --data data/features
    python -m bench.training --data data/features --models xgboost xgboost_tuned --report out/
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Final

from models import reports, training

BOOK: Final[dict[str, tuple[float, float, float]]] = {
    # Le Borgne et al., chapter 3.4 "Baseline fraud detection system", test-set table
    "logistic_regression": (0.871, 0.606, 0.291),
    "decision_tree_depth2": (0.763, 0.496, 0.241),
    "decision_tree": (0.788, 0.309, 0.243),
    "random_forest": (0.867, 0.658, 0.287),
    "xgboost_book": (0.862, 0.639, 0.273),
}
DEFAULT_MODELS: Final = (
    "logistic_regression",
    "decision_tree_depth2",
    "decision_tree",
    "random_forest",
    "xgboost",
    "xgboost_book",
    "xgboost_tuned",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/features"))
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--report", type=Path, default=None, help="write comparison PNGs here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    started = time.perf_counter()
    frame = training.load_features(args.data)
    print(f"loaded {len(frame):,} rows in {time.perf_counter() - started:.1f} s")
    protocol = training.Protocol()
    outcomes: dict[str, training.TrainOutcome] = {}
    for name in args.models:
        started = time.perf_counter()
        outcomes[name] = training.train(frame, training.resolve_config(name), protocol)
        print(f"{name}: done in {time.perf_counter() - started:.1f} s", flush=True)

    print(f"\ntest week {protocol.test_start}..{protocol.test_end} (end exclusive)")
    print("| model | AUC ROC | AP | CP@100 | fit s | predict s | book AUC / AP / CP@100 |")
    print("|---|---|---|---|---|---|---|")
    for name, o in outcomes.items():
        m, t = o.test_metrics, o.timings
        book = " / ".join(f"{v:.3f}" for v in BOOK[name]) if name in BOOK else ""
        print(
            f"| {name} | {m.auc_roc:.3f} | {m.average_precision:.3f} "
            f"| {m.card_precision_at_100:.3f} | {t.fit_s:.2f} | {t.predict_s:.3f} | {book} |"
        )
    first = next(iter(outcomes.values()))
    print(f"n_train {first.n_train:,}, n_test {len(first.test):,}")

    tuned, base = outcomes.get("xgboost_tuned"), outcomes.get("xgboost")
    if tuned is not None and tuned.selection is not None and base is not None:
        sel = tuned.selection
        print(f"\ntuned XGBoost: {sel.selected} ({sel.criterion} over {len(sel.folds)} folds,")
        print(f"  {len(sel.candidates)} candidates, {sel.seconds:.0f} s; folds {sel.folds})")
        for metric in ("auc_roc", "average_precision", "card_precision_at_100"):
            b, u = getattr(base.test_metrics, metric), getattr(tuned.test_metrics, metric)
            verdict = "beats" if u > b else "does not beat"
            print(f"  {metric}: tuned {u:.4f} vs baseline {b:.4f} -> {verdict} the baseline")

    if args.report is not None:
        sets = {
            name: reports.Scored(
                labels=o.test.labels, scores=o.test_scores, days=o.test.days, cards=o.test.cards
            )
            for name, o in outcomes.items()
        }
        title = f"test week {protocol.test_start}..{protocol.test_end}"
        for path in reports.write_comparison(args.report, sets, title=title):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
