"""Evaluation report as PNG: what a person looks at before promoting a model.

ROC and precision-recall curves, the score distribution of each class, and Card
Precision@100 day by day against the best achievable. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot, so no
global state, no display and no backend switch is involved (safe in a batch job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from models import evaluation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROC_PNG: Final = "roc_curve.png"
PR_PNG: Final = "precision_recall_curve.png"
SCORES_PNG: Final = "score_distribution.png"
CARD_PRECISION_PNG: Final = "card_precision_per_day.png"

_SIZE: Final = (6.4, 4.8)
_DPI: Final = 110


@dataclass(frozen=True)
class Scored:
    """A scored evaluation set: one row per transaction."""

    labels: npt.NDArray[np.integer]
    scores: npt.NDArray[np.float64]
    days: npt.NDArray[np.datetime64]
    cards: npt.NDArray[np.int64]


def _figure(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    # No timestamp in the PNG metadata: the same model gives the same bytes.
    fig.savefig(path, metadata={"Software": None})
    return path


def roc_figure(curves: Mapping[str, Scored], title: str) -> Figure:
    """ROC curves, one per named set, with the AUC in the legend."""
    fig, ax = _figure(title)
    for name, s in curves.items():
        fpr, tpr, _ = evaluation.roc_curve(s.labels, s.scores)
        auc = evaluation.auc_roc(s.labels, s.scores)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name}  AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="random  AUC 0.500")
    ax.set_xlabel("False positive rate (genuine transactions flagged)")
    ax.set_ylabel("True positive rate (frauds caught)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def precision_recall_figure(curves: Mapping[str, Scored], title: str) -> Figure:
    """Precision-recall curves with average precision; the fraud rate is the no-skill line."""
    fig, ax = _figure(title)
    rate = 0.0
    for name, s in curves.items():
        precision, recall, _ = evaluation.precision_recall_curve(s.labels, s.scores)
        ap = evaluation.average_precision(s.labels, s.scores)
        ax.step(
            np.r_[0.0, recall],
            np.r_[1.0, precision],
            where="pre",
            lw=1.6,
            label=f"{name}  AP {ap:.3f}",
        )
        rate = float(np.mean(s.labels))
    ax.axhline(rate, ls="--", color="grey", lw=1, label=f"fraud rate {rate:.4f}")
    ax.set_xlabel("Recall (share of frauds caught)")
    ax.set_ylabel("Precision (share of alerts that are frauds)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower left", fontsize=9)  # the curves live in the upper part
    return fig


def score_distribution_figure(s: Scored, title: str) -> Figure:
    """Histograms of the score for genuine and fraudulent transactions (log counts)."""
    fig, ax = _figure(title)
    bins = [i / 50 for i in range(51)]
    y = np.asarray(s.labels).astype(bool)
    for mask, name, color in ((~y, "genuine", "tab:blue"), (y, "fraud", "tab:red")):
        ax.hist(
            s.scores[mask],
            bins=bins,
            alpha=0.55,
            color=color,
            label=f"{name} (n={int(mask.sum()):,})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("Model score (fraud probability)")
    ax.set_ylabel("Transactions (log scale)")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper center", fontsize=9)
    return fig


def card_precision_figure(cp: evaluation.CardPrecision, title: str) -> Figure:
    """CP@k per test day, next to the best achievable (undetected compromised cards / k)."""
    fig, ax = _figure(title)
    x = np.arange(len(cp.days))
    best = [min(n, cp.k) / cp.k for n in cp.compromised_cards]
    ax.bar(x - 0.2, cp.per_day, width=0.4, color="tab:green", label=f"CP@{cp.k}")
    ax.bar(x + 0.2, best, width=0.4, color="lightgrey", label="best achievable")
    ax.axhline(cp.mean, ls="--", color="tab:green", lw=1, label=f"mean {cp.mean:.3f}")
    ax.set_xticks(x, [str(d) for d in cp.days], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"Compromised cards among the top {cp.k} / {cp.k}")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=9)
    return fig


def write_report(out_dir: Path, test: Scored, *, model: str, k: int = 100) -> list[Path]:
    """Write the four PNGs of one model's test set into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cp = evaluation.card_precision_at_k(test.days, test.cards, test.labels, test.scores, k)
    n, frauds = len(test.labels), int(np.sum(test.labels))
    subtitle = f"{model}, test set: {n:,} transactions, {frauds:,} frauds"
    return [
        _save(roc_figure({model: test}, f"ROC curve\n{subtitle}"), out_dir / ROC_PNG),
        _save(
            precision_recall_figure({model: test}, f"Precision-recall curve\n{subtitle}"),
            out_dir / PR_PNG,
        ),
        _save(
            score_distribution_figure(test, f"Score distribution by class\n{subtitle}"),
            out_dir / SCORES_PNG,
        ),
        _save(
            card_precision_figure(cp, f"Card Precision@{k} per test day\n{model}"),
            out_dir / CARD_PRECISION_PNG,
        ),
    ]


def write_comparison(out_dir: Path, sets: Mapping[str, Scored], *, title: str) -> list[Path]:
    """ROC and precision-recall curves of several models on one test set, overlaid."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _save(roc_figure(sets, f"ROC curves\n{title}"), out_dir / f"compare_{ROC_PNG}"),
        _save(
            precision_recall_figure(sets, f"Precision-recall curves\n{title}"),
            out_dir / f"compare_{PR_PNG}",
        ),
    ]
