"""The monitor's report as one self-contained HTML page: the alarms first, then the charts
people would rather look at than read (PSI per input per day, the score distribution against
the reference, daily AP and CP@100 per model version, volumes).

Charts are inline SVG drawn here, with no plotting library: the monitor job runs in the batch
Lambda bundle, where matplotlib does not fit under Lambda's 250 MB, and ``rtml monitor
report`` must draw the very same page."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.artifact import ReferenceProfile
from models.monitor import NOT_ALARMED_DAILY, MonitorReport

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 28, 40
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip

Series = tuple[str, Sequence[float | None], str, bool]
"""(label, values, colour, dashed)."""


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    title: str,
    xs: Sequence[str],
    series: Sequence[Series],
    *,
    y_max: float | None = None,
    rules: Sequence[tuple[float, str]] = (),
    y_label: str = "",
) -> str:
    """An SVG line chart of series over categorical x labels (days); None leaves a gap."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for _, ys, _, _ in series for v in ys if v is not None and math.isfinite(v)]
    top = y_max if y_max is not None else max([*values, *(r for r, _ in rules), 1e-9]) * 1.1
    n = max(len(xs), 2)

    def x(i: int) -> float:
        return LEFT + plot_w * i / (n - 1)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(max(v, 0.0), top) / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="10">',
             f'<text x="{LEFT}" y="16" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
             f'stroke="#999"/>']  # fmt: skip
    for k in range(5):
        v = top * k / 4
        parts.append(f'<text x="{LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{_fmt(v)}</text>')
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#eee"/>')  # fmt: skip
    step = max(1, len(xs) // 8)
    for i in range(0, len(xs), step):
        parts.append(f'<text x="{x(i):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">'
                     f"{html.escape(xs[i])}</text>")  # fmt: skip
    for value, colour in rules:
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="{colour}" stroke-dasharray="4 3"/>')  # fmt: skip
    for k, (label, ys, colour, dashed) in enumerate(series):
        runs: list[list[str]] = [[]]
        for i, point in enumerate(ys):
            if point is None or not math.isfinite(point):
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(point):.1f}")
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
                             f'points="{" ".join(run)}"/>')  # fmt: skip
            elif run:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
        ly = TOP + 12 * k + 6
        parts.append(f'<line x1="{WIDTH - RIGHT + 8}" x2="{WIDTH - RIGHT + 24}" y1="{ly}" '
                     f'y2="{ly}" stroke="{colour}"{dash} stroke-width="2"/>')  # fmt: skip
        parts.append(
            f'<text x="{WIDTH - RIGHT + 28}" y="{ly + 3}">{html.escape(label[:24])}</text>'
        )
    if y_label:
        mid = TOP + plot_h / 2
        parts.append(f'<text x="12" y="{mid}" transform="rotate(-90 12 {mid})" '
                     f'text-anchor="middle">{html.escape(y_label)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def psi_chart(report: MonitorReport) -> str:
    days = [d.day[5:] for d in report.days]
    names = sorted({n for d in report.days for n in d.psi} - set(NOT_ALARMED_DAILY))
    peaks = {n: max((d.psi.get(n, 0.0) for d in report.days), default=0.0) for n in names}
    shown = sorted(names, key=lambda n: -peaks[n])[:9]
    series: list[Series] = [("score", [d.score_psi if d.rows else None for d in report.days],
                             "#000", False)]  # fmt: skip
    series += [(n, [d.psi.get(n) for d in report.days], PALETTE[k % len(PALETTE)], True)
               for k, n in enumerate(shown)]  # fmt: skip
    top = max([report.thresholds.alarm * 1.5, *(peaks[n] for n in shown)]) * 1.05
    return line_chart("PSI against the reference, per day (the 9 inputs that moved most)", days,
                      series, y_max=min(top, 5.0),
                      rules=[(report.thresholds.warn, "orange"), (report.thresholds.alarm, "red")],
                      y_label="PSI")  # fmt: skip


def score_chart(profile: ReferenceProfile, report: MonitorReport) -> str:
    """Share of transactions per reference score bin: the reference and each half of the
    period (from each day's counts, so no day's scores need reading again)."""
    histogram = profile.score
    if not histogram.edges:
        return "<p>The reference score histogram has a single bin: nothing to draw.</p>"
    edges = np.asarray(histogram.edges, dtype=np.float64)
    reference = np.asarray(histogram.counts, dtype=np.float64)
    days = [d for d in report.days if len(d.score_counts) == len(reference)]
    half = len(days) // 2
    labels = [f"<{_fmt(edges[0])}", *(f"{_fmt(e)}+" for e in edges)]
    series: list[Series] = [("reference", list(reference / max(reference.sum(), 1.0)), "#000",
                             False)]  # fmt: skip
    for k, chosen in enumerate((days[:half], days[half:])):
        counts = np.sum([d.score_counts for d in chosen], axis=0) if chosen else np.zeros(1)
        if counts.sum():
            name = f"{chosen[0].day[5:]}..{chosen[-1].day[5:]}"
            series.append((name, list(counts / counts.sum()), PALETTE[k], True))
    return line_chart("Score distribution over the reference's bins", labels, series,
                      y_label="share")  # fmt: skip


def performance_chart(report: MonitorReport) -> str:
    days = sorted({p.day for p in report.performance}) or [report.start]
    shown = [d[5:] for d in days]
    series: list[Series] = []
    keys = sorted({(p.role, p.model_version) for p in report.performance})
    for k, (role, version) in enumerate(keys):
        by_day = {p.day: p for p in report.performance
                  if (p.role, p.model_version) == (role, version)}  # fmt: skip
        colour = PALETTE[k % len(PALETTE)]
        series.append((f"AP {role} {version[:8]}",
                       [by_day[d].average_precision if d in by_day else None for d in days],
                       colour, False))  # fmt: skip
        series.append((f"CP@100 {role} {version[:8]}",
                       [by_day[d].card_precision_at_100 if d in by_day else None for d in days],
                       colour, True))  # fmt: skip
    return line_chart("Label-based quality per day (labels known a week later)", shown, series,
                      y_max=1.0, rules=[(report.thresholds.ap_floor, "red")])  # fmt: skip


def volume_chart(report: MonitorReport) -> str:
    days = [d.day[5:] for d in report.days]
    return line_chart("Transactions in and predictions archived, per day", days, [
        ("transactions in", [float(d.transactions_in) for d in report.days], "#1f77b4", False),
        ("predictions", [float(d.rows) for d in report.days], "#ff7f0e", True),
    ])  # fmt: skip


def render(
    report: MonitorReport,
    profile: ReferenceProfile,
    *,
    title: str = "rtml monitoring report",
    notes: Sequence[str] = (),
) -> str:
    """The page: summary, the first alarm of each detector, the charts, every alarm."""
    charts = [psi_chart(report), score_chart(profile, report), performance_chart(report),
              volume_chart(report)]  # fmt: skip
    none = "<tr><td colspan=2>none</td></tr>"
    first = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in sorted(report.first_alarm.items(), key=lambda kv: (kv[1], kv[0]))
    )
    alarms = "".join(
        f"<tr><td>{html.escape(day)}</td><td>{html.escape(c.detector)}</td>"
        f"<td>{'' if c.value is None else _fmt(c.value)}</td>"
        f"<td>{'' if c.bound is None else _fmt(c.bound)}</td>"
        f"<td>{html.escape(c.detail)}</td></tr>"
        for day, c in report.alarms
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{report.start} to {report.end}, labels known by {report.as_of};
{sum(d.rows for d in report.days)} predictions; threshold {report.threshold};
{len(report.alarms)} alarms.</p>
{"".join(f"<p>{html.escape(n)}</p>" for n in notes)}
<h2>First alarm of each detector</h2>
<table><tr><th>detector</th><th>first day</th></tr>{first or none}</table>
{"".join(f"<p>{chart}</p>" for chart in charts)}
<h2>Every alarm</h2>
<table><tr><th>day</th><th>detector</th><th>value</th><th>bound</th><th>what</th></tr>{alarms}</table>
</body></html>"""


def write_html(
    report: MonitorReport,
    profile: ReferenceProfile,
    path: Path,
    *,
    title: str = "rtml monitoring report",
    notes: Sequence[str] = (),
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, profile, title=title, notes=notes))
    return path
