"""Server-rendered SVG charts for the report page: no JavaScript, no fonts or files to fetch, so
the page works offline and in any browser. Every label that came from data is escaped here."""

from __future__ import annotations

import math
from datetime import date, timedelta
from html import escape

JOURNEY_COLOURS = {"cart_recovery": "#d1495b", "browse_recovery": "#00798c", "welcome": "#edae49"}
OTHER_COLOURS = ("#66a182", "#8d96a3", "#2e4057", "#9c6644", "#6a4c93")
MAX_DAYS = 92
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""


def colour_of(journey: str, others: list[str]) -> str:
    if journey in JOURNEY_COLOURS:
        return JOURNEY_COLOURS[journey]
    if journey not in others:
        others.append(journey)
    return OTHER_COLOURS[others.index(journey) % len(OTHER_COLOURS)]


def _fmt_money(value: float) -> str:
    return f"{value:,.2f}"


def _axis(value: float, integer: bool = False) -> tuple[float, float]:
    """A round axis: (top, step) with at most five steps of 1, 2 or 5 × 10ⁿ, top ≥ value."""
    if value <= 0:
        return 1.0, 1.0 if integer else 0.25
    raw = value / 5
    exponent = math.floor(math.log10(raw))
    step = 10.0 ** (exponent + 1)
    for factor in (1, 2, 5):
        if factor * 10**exponent >= raw:
            step = float(factor * 10**exponent)
            break
    if integer:
        step = max(1.0, math.ceil(step))
    return math.ceil(value / step - 1e-9) * step, step


def _ticks(top: float, step: float) -> list[float]:
    return [step * i for i in range(int(round(top / step)) + 1)]


def _fmt_tick(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:,.0f}k"
    if value >= 1000:
        return f"{value / 1000:,.1f}k".replace(".0k", "k")
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}".rstrip("0")


def _empty(svg_id: str, width: int, height: int, message: str) -> str:
    return (
        f'<svg id="{svg_id}" class="chart empty" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'data-points="0" xmlns="http://www.w3.org/2000/svg"><rect class="frame" x="0.5" y="0.5" '
        f'width="{width - 1}" height="{height - 1}" fill="#fafafa" stroke="#ddd"/>'
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#777" font-size="14" {FONT}>'
        f"{escape(message)}</text></svg>"
    )


def daily_revenue_chart(daily: list[dict], width: int = 1040, height: int = 320) -> tuple[str, bool]:
    """Stacked daily bars of attributed revenue per journey. Returns (svg, truncated)."""
    if not daily:
        return _empty("revenue-chart", width, height, "No attributed revenue in this period"), False
    days_in_data = sorted({row["day"] for row in daily})
    last = date.fromisoformat(days_in_data[-1])
    first = max(date.fromisoformat(days_in_data[0]), last - timedelta(days=MAX_DAYS - 1))
    truncated = date.fromisoformat(days_in_data[0]) < first
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    known = list(JOURNEY_COLOURS)
    journeys = sorted(
        {row["journey"] for row in daily}, key=lambda j: (known.index(j) if j in known else len(known), j)
    )
    stacks: dict[str, dict[str, float]] = {}
    orders: dict[tuple[str, str], int] = {}
    for row in daily:
        stacks.setdefault(row["day"], {})[row["journey"]] = row["revenue"]
        orders[(row["day"], row["journey"])] = row["orders"]
    top, step = _axis(max((sum(v.values()) for k, v in stacks.items() if date.fromisoformat(k) >= first), default=0))

    left, right, top_pad, bottom = 64, 16, 40, 46
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    slot = plot_w / len(days)
    bar_w = max(1.0, min(36.0, slot * 0.72))
    others: list[str] = []
    parts = [
        f'<svg id="revenue-chart" class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'xmlns="http://www.w3.org/2000/svg" {FONT} font-size="12">',
        "<title>Attributed revenue per day, by journey</title>",
    ]
    for value in _ticks(top, step):  # horizontal grid and y labels
        y = top_pad + plot_h - plot_h * value / top
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{escape(_fmt_tick(value))}</text>'
        )
    points = 0
    label_every = max(1, math.ceil(len(days) / 12))
    for index, day in enumerate(days):
        key = day.isoformat()
        x = left + slot * index + (slot - bar_w) / 2
        y = top_pad + plot_h
        for journey in journeys:
            value = stacks.get(key, {}).get(journey, 0.0)
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            n = orders.get((key, journey), 0)
            parts.append(
                f'<rect class="bar" data-day="{escape(key)}" data-journey="{escape(journey)}" data-value="{value:.2f}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour_of(journey, others)}"><title>{escape(key)} · {escape(journey)}: '
                f"{escape(_fmt_money(value))} from {n} order{'s' if n != 1 else ''}</title></rect>"
            )
            points += 1
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top_pad + plot_h + 16}" text-anchor="middle" fill="#555">'
                f"{escape(day.strftime('%d %b'))}</text>"
            )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" stroke="#999"/>'
    )
    lx: float = left
    for journey in journeys:  # legend
        parts.append(
            f'<rect class="legend" x="{lx}" y="12" width="12" height="12" fill="{colour_of(journey, others)}"/>'
        )
        parts.append(f'<text x="{lx + 17}" y="22" fill="#333">{escape(journey)}</text>')
        lx += 30 + 7.5 * len(journey)
    parts.append("</svg>")
    svg = "".join(parts).replace('class="chart"', f'class="chart" data-points="{points}"', 1)
    return svg, truncated


def funnel_chart(stages: list[dict], width: int = 1040, height: int = 260) -> str:
    """A funnel: one trapezoid per stage, its width proportional to the stage's count."""
    if not stages or not any(s["count"] for s in stages):
        return _empty("funnel-chart", width, height, "Nothing tracked in this period yet")
    biggest = max(s["count"] for s in stages) or 1
    label_w = 340
    plot_w = width - label_w - 20
    row_h = (height - 20) / len(stages)
    centre = label_w + plot_w / 2
    min_w = 6.0
    widths = [max(min_w, plot_w * s["count"] / biggest) if s["count"] else min_w for s in stages]
    parts = [
        f'<svg id="funnel-chart" class="chart" data-points="{len(stages)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="13">',
        "<title>Funnel: anonymous → identified → messaged → purchased</title>",
    ]
    shades = ("#2e4057", "#00798c", "#edae49", "#66a182")
    for i, stage in enumerate(stages):
        top_w = widths[i]
        bottom_w = widths[i + 1] if i + 1 < len(widths) else widths[i]
        y0, y1 = 10 + i * row_h, 10 + (i + 1) * row_h - 6
        path = (
            f"M{centre - top_w / 2:.1f},{y0:.1f} L{centre + top_w / 2:.1f},{y0:.1f} "
            f"L{centre + bottom_w / 2:.1f},{y1:.1f} L{centre - bottom_w / 2:.1f},{y1:.1f} Z"
        )
        previous = stages[i - 1]["count"] if i else None
        share = f" · {stage['count'] / previous:.0%} of previous" if previous else ""
        parts.append(
            f'<path class="stage" data-stage="{escape(stage["stage"])}" data-value="{stage["count"]}" '
            f'd="{path}" fill="{shades[i % len(shades)]}"><title>{escape(stage["label"])}: '
            f"{stage['count']:,}{escape(share)}</title></path>"
        )
        parts.append(f'<text x="0" y="{(y0 + y1) / 2 - 2:.1f}" fill="#222" font-weight="600">{stage["count"]:,}</text>')
        parts.append(
            f'<text x="0" y="{(y0 + y1) / 2 + 15:.1f}" fill="#555">{escape(stage["label"])}{escape(share)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(
    buckets: list[dict], median: float | None, p90: float | None, width: int = 1040, height: int = 280
) -> str:
    """Identify lateness: people per bucket of time from first anonymous event to identify."""
    if not buckets or not any(b["people"] for b in buckets):
        return _empty("lateness-chart", width, height, "No one identified after anonymous activity in this period")
    top, step = _axis(max(b["people"] for b in buckets), integer=True)
    left, right, top_pad, bottom = 56, 16, 36, 42
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    slot = plot_w / len(buckets)
    bar_w = slot * 0.78
    points = sum(1 for b in buckets if b["people"])
    parts = [
        f'<svg id="lateness-chart" class="chart" data-points="{points}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="12">',
        "<title>Identify lateness: time from first anonymous event to identify</title>",
    ]
    for value in _ticks(top, step):
        y = top_pad + plot_h - plot_h * value / top
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt_tick(value)}</text>')
    for i, bucket in enumerate(buckets):
        x = left + slot * i + (slot - bar_w) / 2
        h = plot_h * bucket["people"] / top
        y = top_pad + plot_h - h
        if bucket["people"]:
            parts.append(
                f'<rect class="bar" data-bucket="{escape(bucket["bucket"])}" data-value="{bucket["people"]}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" fill="#00798c">'
                f"<title>{escape(bucket['bucket'])}: {bucket['people']:,} people</title></rect>"
            )
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" fill="#222">'
                f"{bucket['people']:,}</text>"
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top_pad + plot_h + 17}" text-anchor="middle" fill="#555">'
            f"{escape(bucket['bucket'])}</text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" stroke="#999"/>'
    )
    note = f"median {duration(median)} · p90 {duration(p90)}"
    parts.append(
        f'<text x="{width - right}" y="20" text-anchor="end" fill="#333" font-weight="600">{escape(note)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def duration(seconds: float | None) -> str:
    """A human duration: 45 s, 12 min, 3.5 h, 2.1 d."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
