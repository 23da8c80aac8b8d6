"""Secure Score charts (pure): an SVG line chart for the API/CLI and a text sparkline.

``render_svg(rows, regressions)`` draws percentage over time from the trend rows
(``{"date", "percentage", "current", "max", "regression"}``, oldest first): axis labels, date
ticks, gridlines, one ``<circle class="day ...">`` per stored day with a ``<title>`` tooltip,
regression days in red (their tooltip says what fell), dashed segments across missing days,
and a legend. Plain SVG 1.1, no script, no external resources: safe to serve as
``image/svg+xml`` and to open from a file. Readable at the default 900x320.
"""
from __future__ import annotations

import math
from datetime import date
from typing import Any, Iterable, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

SPARK = "▁▂▃▄▅▆▇█"
LINE = "#2563eb"
RED = "#dc2626"
GRID = "#e5e7eb"
AXIS = "#6b7280"
TEXT = "#111827"


def sparkline(values: Iterable[float | None]) -> str:
    """One block character per value (▁ lowest .. █ highest); a blank for None."""
    values = list(values)
    numbers = [v for v in values if v is not None]
    if not numbers:
        return " " * len(values)
    lo, hi = min(numbers), max(numbers)
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif hi - lo < 1e-9:
            out.append(SPARK[3])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int((value - lo) / (hi - lo) * (len(SPARK) - 1) + 0.5))])
    return "".join(out)


def _nice_step(span: float, max_ticks: int = 6) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50):
        if span / step <= max_ticks:
            return float(step)
    return 50.0


def _y_range(values: Sequence[float]) -> tuple[float, float, float]:
    """(low, high, step) for the percentage axis: padded, on nice ticks, inside 0..100."""
    if not values:
        return 0.0, 100.0, 20.0
    lo, hi = min(values), max(values)
    pad = max(2.0, (hi - lo) * 0.1)
    lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
    if hi - lo < 10:
        mid = (hi + lo) / 2
        lo, hi = max(0.0, mid - 5), min(100.0, mid + 5)
        if hi - lo < 10:
            lo, hi = (0.0, 10.0) if lo == 0 else (90.0, 100.0)
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def _fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _fmt_num(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return "?"


def _tooltip(row: Mapping[str, Any], finding: Mapping[str, Any] | None) -> str:
    text = f"{row['date']}: {_fmt_pct(row.get('percentage'))} ({_fmt_num(row.get('current'))} / {_fmt_num(row.get('max'))})"
    if finding:
        text += f"\nRegression vs {finding.get('previous_date')}: {_fmt_num(finding.get('delta'))} points"
        controls = finding.get("controls") or []
        for change in controls[:8]:
            text += f"\n  {change['control']}: {_fmt_num(change['before'])} -> {_fmt_num(change['after'])} ({_fmt_num(change['delta'])})"
        if len(controls) > 8:
            text += f"\n  ... and {len(controls) - 8} more"
    return text


def render_svg(
    rows: Sequence[Mapping[str, Any]],
    regressions: Sequence[Mapping[str, Any]] = (),
    *,
    width: int = 900,
    height: int = 320,
    title: str = "Microsoft Secure Score",
) -> str:
    """The chart as an SVG document (a str)."""
    rows = sorted(rows, key=lambda r: r["date"])
    findings = {f["date"]: f for f in regressions}
    left, right, top, bottom = 56, 24, 48, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title + " (percentage over time)")} '
        f'font-family="Segoe UI, Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    n_regressions = sum(1 for r in rows if r["date"] in findings or r.get("regression"))
    subtitle = f"{len(rows)} day{'s' if len(rows) != 1 else ''}"
    if rows:
        subtitle = f"{rows[0]['date']} to {rows[-1]['date']} · {subtitle} · latest {_fmt_pct(rows[-1].get('percentage'))}"
    out.append(f'<text x="{left}" y="20" font-size="15" font-weight="600" fill="{TEXT}">{escape(title)}</text>')
    out.append(f'<text x="{left}" y="37" fill="{AXIS}">{escape(subtitle)}</text>')
    # legend
    lx = width - right - 250
    out.append('<g class="legend">')
    out.append(f'<line x1="{lx}" y1="22" x2="{lx + 22}" y2="22" stroke="{LINE}" stroke-width="2.5"/>')
    out.append(f'<circle cx="{lx + 11}" cy="22" r="3" fill="{LINE}"/>')
    out.append(f'<text x="{lx + 28}" y="26" fill="{TEXT}">Secure Score %</text>')
    out.append(f'<circle cx="{lx + 140}" cy="22" r="5" fill="{RED}"/>')
    out.append(f'<text x="{lx + 150}" y="26" fill="{TEXT}">Regression ({n_regressions})</text>')
    out.append("</g>")

    values = [float(r["percentage"]) for r in rows if r.get("percentage") is not None]
    lo, hi, step = _y_range(values)

    def y_of(value: float | None) -> float:
        value = lo if value is None else min(max(float(value), lo), hi)
        return top + plot_h - (value - lo) / (hi - lo) * plot_h

    ordinals = [date.fromisoformat(r["date"]).toordinal() for r in rows]
    first, last = (ordinals[0], ordinals[-1]) if ordinals else (0, 0)
    span = max(1, last - first)

    def x_of(ordinal: int) -> float:
        if last == first:
            return left + plot_w / 2
        return left + (ordinal - first) / span * plot_w

    # horizontal gridlines and the percentage axis
    out.append('<g class="grid">')
    tick = lo
    while tick <= hi + 1e-9:
        y = y_of(tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{AXIS}">{tick:g}%</text>')
        tick += step
    # date ticks (the year on the first tick and where it changes)
    if rows:
        day_step = max(1, math.ceil(span / 7)) if last != first else 1
        previous_year = None
        # anchored on the newest day, so the latest date always has a label
        for ordinal in sorted(range(last, first - 1, -day_step)):
            x = x_of(ordinal)
            day = date.fromordinal(ordinal)
            label = day.strftime("%b %d") if day.year == previous_year else day.strftime("%b %d %Y")
            previous_year = day.year
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{GRID}"/>')
            out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 5}" stroke="{AXIS}"/>')
            out.append(f'<text x="{x:.1f}" y="{top + plot_h + 19}" text-anchor="middle" fill="{AXIS}">{escape(label)}</text>')
    out.append("</g>")
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{AXIS}"/>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{AXIS}"/>'
    )
    out.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" fill="{AXIS}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">Score (% of max)</text>'
    )
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="{AXIS}">Date (UTC)</text>')

    if not rows:
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="{AXIS}" '
            f'font-size="14">No Secure Score snapshots stored yet</text>'
        )
        out.append("</svg>")
        return "\n".join(out) + "\n"

    # the line: solid between consecutive days, dashed across missing days
    points = [(x_of(o), y_of(r.get("percentage")), o, r.get("percentage") is not None) for o, r in zip(ordinals, rows)]
    segment: list[str] = []
    out.append('<g class="line" fill="none" stroke-width="2.5" stroke-linejoin="round">')
    for index, (x, y, ordinal, known) in enumerate(points):
        if index and (ordinal - points[index - 1][2] > 1 or not known or not points[index - 1][3]):
            if len(segment) > 1:
                out.append(f'<polyline stroke="{LINE}" points="{" ".join(segment)}"/>')
            px, py = points[index - 1][0], points[index - 1][1]
            out.append(f'<line class="gap" x1="{px:.1f}" y1="{py:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="{AXIS}" stroke-dasharray="4 4"/>')
            segment = []
        segment.append(f"{x:.1f},{y:.1f}")
    if len(segment) > 1:
        out.append(f'<polyline stroke="{LINE}" points="{" ".join(segment)}"/>')
    out.append("</g>")

    # one circle per stored day; regressions drawn last so they sit on top
    radius = 3.0 if len(rows) <= 120 else 2.0
    normal, marked = [], []
    for (x, y, _, known), row in zip(points, rows):
        finding = findings.get(row["date"])
        is_regression = finding is not None or bool(row.get("regression"))
        tip = escape(_tooltip(row, finding))
        if is_regression:
            marked.append(
                f'<circle class="day regression" data-date="{row["date"]}" cx="{x:.1f}" cy="{y:.1f}" r="5.5" '
                f'fill="{RED}" stroke="#ffffff" stroke-width="1.5"><title>{tip}</title></circle>'
            )
        else:
            fill = LINE if known else "#ffffff"
            normal.append(
                f'<circle class="day" data-date="{row["date"]}" cx="{x:.1f}" cy="{y:.1f}" r="{radius}" '
                f'fill="{fill}" stroke="{LINE}" stroke-width="1"><title>{tip}</title></circle>'
            )
    out.append('<g class="points">')
    out.extend(normal)
    out.extend(marked)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_trend_svg(trend: Mapping[str, Any], **kwargs: Any) -> str:
    """``render_svg`` for the dict ``service.trend()`` returns."""
    return render_svg(trend.get("days") or [], trend.get("regressions") or [], **kwargs)
