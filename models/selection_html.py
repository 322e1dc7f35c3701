"""The model selection report as one HTML page: the summary beside the book's table, and the
validation curves per model and metric (validation and test means over the grid), as the
handbook draws them. Inline SVG (``models.monitor_html.line_chart``), no plotting library."""

from __future__ import annotations

import html
from pathlib import Path

from models.monitor_html import PALETTE, Series, line_chart
from models.selection import METRICS, SelectionReport

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
</body></html>"""


def write_html(report: SelectionReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
    return path
