"""The experiment chart on the report page: one horizontal bar per variant for its revenue per
recipient, with a whisker for its 95% interval and the probability that it is the best. Server-rendered
SVG like api/charts.py; every label that came from data is escaped here."""

from __future__ import annotations

from html import escape

from api.charts import FONT, OTHER_COLOURS, _axis, _empty, _fmt_tick, _ticks


def experiment_chart(experiment: dict, width: int = 1040) -> str:
    """Revenue per recipient per variant of one experiment (journey, step)."""
    svg_id = f"experiment-chart-{experiment['journey']}-{experiment['step']}"
    variants = experiment["variants"]
    row_h, left, right, top_pad, bottom = 34, 170, 210, 14, 30
    height = top_pad + bottom + row_h * max(1, len(variants))
    if not any(v["recipients"] for v in variants):
        return _empty(svg_id, width, 80, "No variant sent in this period yet")
    highest = max((v["interval"][1] if v["interval"] else v["revenue_per_recipient"] or 0.0) for v in variants)
    top, step = _axis(highest)
    plot_w = width - left - right

    def x(value: float) -> float:
        return left + plot_w * value / top

    winner = (experiment.get("decision") or {}).get("winner")
    parts = [
        f'<svg id="{escape(svg_id)}" class="chart experiment" data-points="{len(variants)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="12">',
        f"<title>Revenue per recipient by variant: {escape(experiment['journey'])} step {experiment['step']}</title>",
    ]
    axis_y = top_pad + row_h * len(variants)
    for value in _ticks(top, step):
        parts.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top_pad}" y2="{axis_y}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{x(value):.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#555">{_fmt_tick(value)}</text>'
        )
    for i, variant in enumerate(variants):
        y = top_pad + row_h * i
        mean = variant["revenue_per_recipient"] or 0.0
        colour = OTHER_COLOURS[i % len(OTHER_COLOURS)]
        name = variant["variant"] + (" ★ winner" if variant["variant"] == winner else "")
        parts.append(
            f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#222">{escape(name)}</text>'
        )
        parts.append(
            f'<rect class="bar" data-variant="{escape(variant["variant"])}" data-value="{mean:.4f}" '
            f'x="{left}" y="{y + 7}" width="{max(x(mean) - left, 0.5):.1f}" height="{row_h - 14}" fill="{colour}">'
            f"<title>{escape(variant['variant'])}: {mean:,.2f} per recipient over {variant['recipients']:,} "
            f"recipients</title></rect>"
        )
        if variant["interval"]:
            low, high = (x(v) for v in variant["interval"])
            mid = y + row_h / 2
            parts.append(
                f'<path class="interval" d="M{low:.1f},{mid:.1f} H{high:.1f} M{low:.1f},{mid - 6:.1f} V{mid + 6:.1f} '
                f'M{high:.1f},{mid - 6:.1f} V{mid + 6:.1f}" stroke="#222" stroke-width="1.5" fill="none"/>'
            )
        chance = variant["probability_best"]
        note = f"{mean:,.2f} · P(best) {chance:.0%}" if chance is not None else f"{mean:,.2f}"
        parts.append(f'<text x="{width - right + 8}" y="{y + row_h / 2 + 4:.1f}" fill="#333">{escape(note)}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>')
    parts.append("</svg>")
    return "".join(parts)
