"""The monitor's report as one self-contained HTML page: the alarms first, then the plots
people would rather look at than read (score distribution against the reference, PSI per
input per day, daily AP and CP@100 per model version, volumes). matplotlib through the Agg
canvas only (no pyplot state), figures inlined as PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import ReferenceProfile
from models.monitor import NOT_ALARMED_DAILY, MonitorReport

_SIZE = (7.5, 3.4)


def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode()


def _dates(days: list[str]) -> Any:
    return np.array(days, dtype="datetime64[D]")


def psi_figure(report: MonitorReport) -> Any:
    fig, ax = _figure("PSI against the reference, per model input and day")
    days = [d.day for d in report.days if d.psi]
    names = sorted({n for d in report.days for n in d.psi} - set(NOT_ALARMED_DAILY))
    x = _dates(days)
    by_day = {d.day: d for d in report.days}
    for name in names:
        values = [by_day[day].psi.get(name, np.nan) for day in days]
        peak = np.nanmax(values) if values else 0.0
        style = "-" if peak > report.thresholds.warn else ":"
        ax.plot(x, values, style, linewidth=1.2 if style == "-" else 0.7,
                label=name if peak > report.thresholds.warn else None)  # fmt: skip
    ax.plot(x, [by_day[day].score_psi for day in days], "k-", linewidth=2, label="score")
    ax.axhline(report.thresholds.warn, color="orange", linestyle="--", linewidth=0.8)
    ax.axhline(report.thresholds.alarm, color="red", linestyle="--", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("PSI (0.1 warn, 0.2 alarm)")
    ax.legend(fontsize=6, loc="upper left", ncols=2)
    fig.autofmt_xdate()
    return fig


def score_figure(
    profile: ReferenceProfile, early: np.ndarray, late: np.ndarray, labels: tuple[str, str]
) -> Any:
    fig, ax = _figure("Score distribution: reference (training) and the period")
    histogram = profile.score
    edges = np.asarray(histogram.edges, dtype=np.float64)
    counts = np.asarray(histogram.counts, dtype=np.float64)
    share = counts / max(counts.sum(), 1.0)
    centers = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    ax.step(centers, share, where="mid", color="black", label="reference")
    for values, label in ((early, labels[0]), (late, labels[1])):
        if values.size:
            observed = np.bincount(np.searchsorted(edges, values, side="right"),
                                   minlength=len(counts)) / values.size  # fmt: skip
            ax.step(centers, observed, where="mid", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("fraud probability")
    ax.set_ylabel("share of transactions")
    ax.legend(fontsize=7)
    return fig


def performance_figure(report: MonitorReport) -> Any:
    fig, ax = _figure("Label-based quality per day (labels known a week later)")
    series: dict[tuple[str, str], list[Any]] = {}
    for p in report.performance:
        series.setdefault((p.role, p.model_version), []).append(p)
    for (role, version), unsorted in sorted(series.items()):
        rows = sorted(unsorted, key=lambda p: p.day)
        x = _dates([p.day for p in rows])
        ax.plot(x, [p.average_precision for p in rows], "-o", markersize=2,
                label=f"AP {role} {version}")  # fmt: skip
        ax.plot(x, [p.card_precision_at_100 for p in rows], "--", linewidth=1,
                label=f"CP@100 {role} {version}")  # fmt: skip
    ax.axhline(report.thresholds.ap_floor, color="red", linestyle=":", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    fig.autofmt_xdate()
    return fig


def volume_figure(report: MonitorReport) -> Any:
    fig, ax = _figure("Volumes: transactions in and predictions archived, per day")
    x = _dates([d.day for d in report.days])
    ax.plot(x, [d.transactions_in for d in report.days], "-", label="transactions in")
    ax.plot(x, [d.rows for d in report.days], "--", label="predictions")
    share = [d.high_risk_share or 0.0 for d in report.days]
    twin = ax.twinx()
    twin.plot(x, share, ":", color="red", label="high-risk share")
    twin.set_ylabel("high-risk share")
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    return fig


def write_html(
    report: MonitorReport,
    profile: ReferenceProfile,
    scores_by_day: dict[str, np.ndarray],
    path: Path,
    *,
    title: str = "rtml monitoring report",
    notes: list[str] | None = None,
) -> Path:
    """The page: summary, alarms by detector (first day), every alarm, the plots."""
    days = sorted(scores_by_day)
    half = len(days) // 2
    early = np.concatenate([scores_by_day[d] for d in days[:half]] or [np.array([])])
    late = np.concatenate([scores_by_day[d] for d in days[half:]] or [np.array([])])
    labels = (f"{days[0]}..{days[half - 1]}" if half else "first half",
              f"{days[half]}..{days[-1]}" if days else "second half")  # fmt: skip
    figures = [
        psi_figure(report),
        score_figure(profile, early, late, labels),
        performance_figure(report),
        volume_figure(report),
    ]
    first = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in sorted(report.first_alarm.items(), key=lambda kv: (kv[1], kv[0]))
    )
    alarms = "".join(
        f"<tr><td>{html.escape(day)}</td><td>{html.escape(c.detector)}</td>"
        f"<td>{'' if c.value is None else f'{c.value:.4g}'}</td>"
        f"<td>{'' if c.bound is None else f'{c.bound:.4g}'}</td>"
        f"<td>{html.escape(c.detail)}</td></tr>"
        for day, c in report.alarms
    )
    none = "<tr><td colspan=2>none</td></tr>"
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{report.start} to {report.end}, labels known by {report.as_of};
{sum(d.rows for d in report.days)} predictions; threshold {report.threshold};
{len(report.alarms)} alarms.</p>
{"".join(f"<p>{html.escape(n)}</p>" for n in notes or [])}
<h2>First alarm of each detector</h2>
<table><tr><th>detector</th><th>first day</th></tr>{first or none}</table>
{"".join(f'<p><img src="data:image/png;base64,{_png(f)}"></p>' for f in figures)}
<h2>Every alarm</h2>
<table><tr><th>day</th><th>detector</th><th>value</th><th>bound</th><th>what</th></tr>{alarms}</table>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path
