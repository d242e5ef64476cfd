"""The report page (`GET /admin/report`): one self-contained HTML document — inline CSS and
server-rendered SVG, no scripts, nothing fetched — so it opens offline, prints, and screenshots.
Jinja2 autoescapes every value (api/templates/report.html.j2); the charts escape their own labels (api/charts.py)."""

from __future__ import annotations

from markupsafe import Markup

from api import charts
from api.experiment_chart import experiment_chart
from api.pages import pages, render_page


def _pct(value: float | None, places: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{places}f}%"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _num(value: int | float | None) -> str:
    return "–" if value is None else f"{value:,}"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pts"


pages.filters.update(pct=_pct, money=_money, num=_num, dur=charts.duration, points=_points)


def period_label(period: dict) -> str:
    since, until = period.get("since"), period.get("until")
    if not since and not until:
        return "all time"
    return f"{(since or '…')[:16].replace('T', ' ')} → {(until or 'now')[:16].replace('T', ' ')}"


def render(summary: dict, tracking: dict, experiments: dict | None = None) -> str:
    revenue_svg, truncated = charts.daily_revenue_chart(summary["revenue"]["daily"])
    late = tracking["identify_lateness"]
    return render_page(
        "report.html.j2",
        s=summary,
        c=summary["conversion"],
        r=summary["revenue"],
        cr=summary["cart_recovery"],
        rec=summary["recovery"],
        m=summary["messages"],
        t=tracking,
        late=late,
        fr=tracking["fragmented_ids"],
        un=tracking["unmerged"],
        mp=tracking["missing_properties"],
        period_label=period_label(summary["period"]),
        revenue_chart=Markup(revenue_svg),
        revenue_truncated=truncated,
        max_days=charts.MAX_DAYS,
        funnel_chart=Markup(charts.funnel_chart(summary["funnel"])),
        lateness_chart=Markup(charts.histogram_chart(late["histogram"], late["median_seconds"], late["p90_seconds"])),
        experiments=[{**e, "chart": Markup(experiment_chart(e))} for e in (experiments or {}).get("experiments", [])],
    )
