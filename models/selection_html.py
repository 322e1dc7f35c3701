"""The model selection report as one HTML page: the summary beside the book's table, and the
validation curves per model and metric (validation and test means over the grid), as the
handbook draws them. Inline SVG (``models.monitor_html.line_chart``), no plotting library."""

from __future__ import annotations

import html
from pathlib import Path

from models.monitor_html import PALETTE, Series, line_chart
from models.selection import (
    HANDBOOK_TABLE,
    METRICS,
    Best,
    Figures,
    MetricName,
    SelectionReport,
)

LABELS = {"auc": "AUC ROC", "ap": "Average precision", "cp100": "Card Precision@100"}


def _params(params: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def render(report: SelectionReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{LABELS[r['metric']]}</td>"
        f"<td>{r['test_mean']:.3f} ± {r['test_std']:.3f}</td><td>{r['book']:.3f}</td>"
        f"<td>{r['difference']:+.3f}</td><td>{html.escape(_params(r['params']))}</td></tr>"
        for r in report.summary()
    )
    charts = []
    for name, family in report.models.items():
        xs = [_params(p.params) for p in family.points]
        for k, metric in enumerate(METRICS):
            series: list[Series] = [
                ("validation", [p.mean("validation", metric) for p in family.points],
                 PALETTE[k % len(PALETTE)], False),
                ("test", [p.mean("test", metric) for p in family.points],
                 PALETTE[k % len(PALETTE)], True),
            ]  # fmt: skip
            best = family.best[metric]
            charts.append(line_chart(
                f"{name}: {LABELS[metric]} over the grid (best on validation: "
                f"{_params(best.params)})", xs, series, y_max=1.0,
                rules=[(family.book[metric], "red")],
            ))  # fmt: skip
    improved = "" if report.best is None else _best(report.best)
    folds = "; ".join(f"{f['train_start']}→{f['test_end']}" for f in report.validation_folds)
    tests = "; ".join(f"{f['train_start']}→{f['test_end']}" for f in report.test_folds)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>rtml model selection (handbook chapter 5)</title>
<style>body{{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>Model selection on the handbook's protocol (chapter 5)</h1>
<p>Prequential validation: one training week, one week of delay, one assessment week.
Validation folds (training start → assessment end): {html.escape(folds)}. Test folds:
{html.escape(tests)}. For each metric, the parameters with the best validation mean,
reported by their test mean ± standard deviation over the four test folds; the book's
figure beside it (a red rule on each chart). {report.seconds:.0f} s.</p>
<table><tr><th>model</th><th>metric</th><th>test (rtml)</th><th>book</th><th>difference</th>
<th>parameters</th></tr>{rows}</table>
{"".join(f"<p>{c}</p>" for c in charts)}
{improved}
</body></html>"""


def _figures(f: Figures, metrics: tuple[MetricName, ...] = ("auc", "ap", "cp100")) -> str:
    return "".join(f"<td>{f.mean[m]:.3f} ± {f.std[m]:.3f}</td>" for m in metrics)


def _best(best: Best) -> str:
    """The improved model: beside the previous best and the book, the class weights tried,
    the ablation, and its grid's curves."""
    book = HANDBOOK_TABLE["xgboost"]
    goal = " and ".join(f"{LABELS[m]} ≥ {g:.2f}" for m, g in best.goal.items())
    met = ", ".join(f"{LABELS[m]} {'met' if ok else 'missed'}" for m, ok in best.met.items())
    head = "<tr><th></th><th>AUC ROC</th><th>AP</th><th>CP@100</th></tr>"
    summary = (
        f"<tr><td>improved: {len(best.features)} features, "
        f"{html.escape(_params(best.params))}</td>{_figures(best.test)}</tr>"
        f"<tr><td>previous: {html.escape(best.previous.model)}, "
        f"{len(best.previous.features)} features</td>{_figures(best.previous.test)}</tr>"
        f"<tr><td>the book's XGBoost</td>"
        + "".join(f"<td>{book[m]:.3f}</td>" for m in ("auc", "ap", "cp100"))
        + "</tr>"
    )
    weights = "".join(
        f"<tr><td>{w.scale_pos_weight:g}</td><td>{html.escape(_params(w.params))}</td>"
        f"<td>{w.validation.mean['ap']:.3f}</td>{_figures(w.test, ('ap', 'cp100'))}</tr>"
        for w in best.weighting
    )
    full = best.ablation[0]
    ablation = "".join(
        f"<tr><td>{html.escape(a.removed or '(none: all features)')}</td>"
        f"<td>{a.validation.mean['ap']:.3f}</td>{_figures(a.test, ('ap', 'cp100'))}"
        f"<td>{a.test.mean['ap'] - full.test.mean['ap']:+.3f}</td>"
        f"<td>{a.test.mean['cp100'] - full.test.mean['cp100']:+.3f}</td></tr>"
        for a in best.ablation
    )
    xs = [_params(p.params) for p in best.grid.points]
    shown: tuple[MetricName, ...] = ("ap", "cp100")
    charts = []
    for k, m in enumerate(shown):
        series: list[Series] = [
            ("validation", [p.mean("validation", m) for p in best.grid.points], PALETTE[k], False),
            ("test", [p.mean("test", m) for p in best.grid.points], PALETTE[k], True),
        ]
        rules = [(book[m], "red")] + ([(best.goal[m], "green")] if m in best.goal else [])
        title = f"improved features: {LABELS[m]} over the grid (red: the book, green: goal)"
        charts.append(f"<p>{line_chart(title, xs, series, y_max=1.0, rules=rules)}</p>")
    return f"""<h2>Beyond the book: features the stream computes</h2>
<p>The same folds, XGBoost on the feature spec <code>{html.escape(best.spec)}</code>: the
baseline's and {len(best.added)} more, every one computed by both engines (offline equals
online on the book's data set): {html.escape(", ".join(best.added))}. Parameters chosen on
validation average precision over the book's grid and class weights; the test figures are
the lean scorer's, the model the serving paths run (largest difference from XGBoost's own
scores {best.lean_scorer_max_abs_diff:.1e}). Goal: {goal}; {met}. {best.seconds:.0f} s.</p>
<table>{head}{summary}</table>
<h3>Class weights (chapter 6)</h3>
<p>The best validation point at each <code>scale_pos_weight</code> (1: unweighted).</p>
<table><tr><th>scale_pos_weight</th><th>parameters</th><th>validation AP</th>
<th>test AP</th><th>test CP@100</th></tr>{weights}</table>
<h3>Ablation: the chosen model without one added feature</h3>
<table><tr><th>removed</th><th>validation AP</th><th>test AP</th><th>test CP@100</th>
<th>Δ AP</th><th>Δ CP@100</th></tr>{ablation}</table>
{"".join(charts)}"""


def write_html(report: SelectionReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
    return path
