"""The report page (`GET /admin/report`): one self-contained HTML document — inline CSS and
server-rendered SVG, no scripts, nothing fetched — so it opens offline, prints, and screenshots.
Jinja2 autoescapes every value; the charts escape their own labels (api/charts.py)."""

from __future__ import annotations

from jinja2 import Environment
from markupsafe import Markup

from api import charts

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _pct(value: float | None, places: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{places}f}%"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _num(value: int | float | None) -> str:
    return "–" if value is None else f"{value:,}"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pts"


_env.filters.update(pct=_pct, money=_money, num=_num, dur=charts.duration, points=_points)

_TEMPLATE = _env.from_string("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Breadcrumb report · {{ period_label }}</title>
<style>
  :root { color-scheme: light; }
  body { margin: 0; background: #f4f5f7; color: #1f2328; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { background: #2e4057; color: #fff; padding: 18px 32px; }
  header h1 { margin: 0 0 4px; font-size: 22px; }
  header p { margin: 0; opacity: .85; }
  main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
  section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
  h2 { font-size: 17px; margin: 0 0 10px; }
  h3 { font-size: 14px; margin: 16px 0 6px; color: #444; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; }
  .card { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 12px 14px; }
  .card .v { font-size: 24px; font-weight: 650; }
  .card .l { color: #555; font-size: 12px; }
  table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
  th, td { text-align: right; padding: 5px 8px; border-bottom: 1px solid #eee; white-space: nowrap; }
  th:first-child, td:first-child, td.text, th.text { text-align: left; }
  td.text { white-space: normal; word-break: break-word; }
  th { color: #555; font-weight: 600; font-size: 12px; }
  .muted { color: #666; font-size: 12px; }
  .pill { display: inline-block; padding: 1px 7px; border-radius: 10px; background: #eef1f4; font-size: 12px; }
  .two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  @media (max-width: 800px) { .two { grid-template-columns: 1fr; } }
  svg.chart { display: block; margin: 4px 0; }
</style>
</head>
<body>
<header>
  <h1>Breadcrumb report</h1>
  <p>{{ period_label }} · first-purchase window {{ s.settings.conversion_days }} d ·
     attribution window {{ s.settings.attribution_window_hours | round(1) }} h (last touch) ·
     holdout {{ s.settings.holdout_percent }}% · generated {{ s.generated_at[:19] | replace("T", " ") }} UTC</p>
</header>
<main>
<div class="cards" id="kpis">
  <div class="card"><div class="v">{{ c.rate | pct }}</div>
    <div class="l">first-purchase conversion · {{ c.converted | num }} of {{ c.measured | num }} people measured</div></div>
  <div class="card"><div class="v">{{ r.attributed_revenue | money }}</div>
    <div class="l">attributed revenue · {{ r.attributed_orders | num }} of {{ r.orders | num }} orders ({{ r.revenue | money }})</div></div>
  <div class="card"><div class="v">{{ r.revenue_per_recipient | money }}</div>
    <div class="l">revenue per recipient · {{ r.recipients | num }} people messaged</div></div>
  <div class="card"><div class="v">{{ cr.rate | pct }}</div>
    <div class="l">cart recovery · {{ cr.carts_recovered | num }} of {{ cr.carts_messaged | num }} carts</div></div>
  {% if c.holdout %}
  <div class="card"><div class="v">{{ c.holdout.lift_points | points }}</div>
    <div class="l">lift vs holdout · {{ c.holdout.journey_rate | pct }} journeys vs {{ c.holdout.control_rate | pct }} control</div></div>
  {% endif %}
</div>

<section id="revenue">
  <h2>Attributed revenue per day, by journey</h2>
  {{ revenue_chart }}
  {% if revenue_truncated %}<p class="muted">Showing the last {{ max_days }} days with revenue.</p>{% endif %}
  <div class="two">
  <div>
  <h3>Revenue per recipient, by journey</h3>
  <table>
    <tr><th>journey</th><th>people messaged</th><th>orders</th><th>revenue</th><th>per recipient</th></tr>
    {% for j in r.by_journey %}
    <tr><td>{{ j.journey }}</td><td>{{ j.recipients | num }}</td><td>{{ j.orders | num }}</td>
        <td>{{ j.revenue | money }}</td><td>{{ j.revenue_per_recipient | money }}</td></tr>
    {% endfor %}
  </table>
  </div>
  <div>
  <h3>… and by step</h3>
  <table>
    <tr><th>journey · step</th><th>people</th><th>orders</th><th>revenue</th><th>per recipient</th></tr>
    {% for st in r.by_step %}
    <tr><td>{{ st.journey }} · {{ st.step }}</td><td>{{ st.recipients | num }}</td><td>{{ st.orders | num }}</td>
        <td>{{ st.revenue | money }}</td><td>{{ st.revenue_per_recipient | money }}</td></tr>
    {% else %}<tr><td colspan="5" class="muted">no messages sent</td></tr>
    {% endfor %}
  </table>
  </div>
  </div>
  {% if r.orders_without_value %}<p class="muted">{{ r.orders_without_value | num }} orders carried no revenue/total/value.</p>{% endif %}
</section>

<section id="funnel">
  <h2>Funnel</h2>
  {{ funnel_chart }}
</section>

<section id="conversion">
  <h2>First-purchase conversion by route</h2>
  <p class="muted">People identified in the period whose first order came within {{ c.days }} days of identifying;
    {{ c.prior_purchasers | num }} who had already bought are left out{% if c.still_in_window %}, and so are
    {{ c.still_in_window | num }} still inside their window ({{ c.converted_so_far | num }} bought so far: the outcome is not
    known until the window closes){% endif %}.</p>
  <table>
    <tr><th>route</th><th>people</th><th>in window</th><th>bought so far</th><th>measured</th><th>converted</th>
        <th>rate</th><th>already customers</th></tr>
    {% for row in c.by_route %}
    <tr><td>{{ row.route }}</td><td>{{ row.people | num }}</td><td>{{ row.still_in_window | num }}</td>
        <td>{{ row.converted_so_far | num }}</td><td>{{ row.measured | num }}</td>
        <td>{{ row.converted | num }}</td><td>{{ row.rate | pct }}</td><td>{{ row.prior_purchasers | num }}</td></tr>
    {% endfor %}
    <tr><th>all</th><th>{{ c.people | num }}</th><th>{{ c.still_in_window | num }}</th>
        <th>{{ c.converted_so_far | num }}</th><th>{{ c.measured | num }}</th><th>{{ c.converted | num }}</th>
        <th>{{ c.rate | pct }}</th><th>{{ c.prior_purchasers | num }}</th></tr>
  </table>
  {% if c.holdout %}
  <p>Holdout: journeys converted <b>{{ c.holdout.journey_rate | pct }}</b> ({{ c.holdout.journey_converted | num }} of
    {{ c.holdout.journey_people | num }}), control <b>{{ c.holdout.control_rate | pct }}</b>
    ({{ c.holdout.control_converted | num }} of {{ c.holdout.control_people | num }}): lift
    <b>{{ c.holdout.lift_points | points }}</b>{% if c.holdout.lift_relative is not none %}
    ({{ c.holdout.lift_relative | pct }} relative){% endif %}.</p>
  {% else %}
  <p class="muted">No control group in this period: set <code>holdout_percent</code> in journeys.toml to measure lift.</p>
  {% endif %}
</section>

<section id="recovery">
  <h2>Recovery</h2>
  <p><b>{{ cr.rate | pct }}</b> of carts that got a recovery message were ordered by the same person within the attribution
    window: {{ cr.carts_recovered | num }} of {{ cr.carts_messaged | num }}
    ({{ cr.matched_by_cart_id | num }} orders carried the cart id, {{ cr.matched_by_person | num }} did not).
    Of everyone messaged, <b>{{ rec.rate | pct }}</b> ordered ({{ rec.people_recovered | num }} of {{ rec.people_messaged | num }}).</p>
  <table>
    <tr><th class="text">journey</th><th>messaged</th><th>recovered</th><th>rate</th></tr>
    {% for row in rec.by_journey %}
    <tr><td class="text">{{ row.journey }}</td><td>{{ row.messaged | num }} {{ row.unit }}</td><td>{{ row.recovered | num }}</td>
        <td>{{ row.rate | pct }}</td></tr>
    {% endfor %}
  </table>
</section>

<section id="messages">
  <h2>Messages: sent, skipped, deferred and failed</h2>
  <p><span class="pill">sent {{ m.sent | num }}</span> <span class="pill">failed {{ m.failed | num }}</span>
     <span class="pill">pending {{ m.pending | num }}</span> <span class="pill">skipped {{ m.skipped | num }}</span>
     <span class="pill">deferred {{ m.deferred | num }}</span></p>
  <table>
    <tr><th class="text">outcome</th><th class="text">journey</th><th class="text">reason</th><th>count</th></tr>
    {% for row in m.by_reason %}
    <tr><td>{{ row.outcome }}</td><td class="text">{{ row.journey }}</td><td class="text">{{ row.reason }}</td><td>{{ row.count | num }}</td></tr>
    {% else %}<tr><td colspan="4" class="muted">nothing yet</td></tr>
    {% endfor %}
  </table>
</section>

<section id="tracking">
  <h2>Tracking health</h2>
  <div class="cards">
    <div class="card"><div class="v">{{ late.median_seconds | dur }}</div><div class="l">median identify lateness (p90 {{ late.p90_seconds | dur }})</div></div>
    <div class="card"><div class="v">{{ late.share_at_checkout_or_purchase | pct }}</div><div class="l">identified only at checkout or purchase ({{ late.identified_at_checkout_or_purchase | num }})</div></div>
    <div class="card"><div class="v">{{ un.share_unmerged_events | pct }}</div><div class="l">anonymous events never merged ({{ un.unmerged_events | num }} of {{ un.anonymous_events | num }})</div></div>
    <div class="card"><div class="v">{{ t.duplicates.pairs | num }}</div><div class="l">client + server duplicate pairs caught</div></div>
    <div class="card"><div class="v">{{ t.flagged.foreign_links | num }}</div><div class="l">events with links off the shop (left out; {{ t.flagged.timestamp_clamped | num }} with a device clock ahead)</div></div>
    <div class="card"><div class="v">{{ fr.share_with_many_ids | pct }}</div><div class="l">people with {{ fr.many_threshold }}+ anonymous ids ({{ fr.people_with_many_ids | num }})</div></div>
  </div>
  <h3>Identify lateness: first anonymous event → identify</h3>
  {{ lateness_chart }}
  <p class="muted">{{ late.with_anonymous_activity | num }} of {{ late.identified | num }} people had anonymous activity before identifying;
    {{ late.identified_at_first_touch | num }} identified at their first touch.</p>
  <div class="two">
  <div>
  <h3>Fragmented ids</h3>
  <table>
    <tr><th>anonymous ids per person</th><th>people</th></tr>
    {% for d in fr.distribution %}<tr><td>{{ d.anonymous_ids }}</td><td>{{ d.people | num }}</td></tr>{% endfor %}
  </table>
  <p class="muted">{{ fr.single_page_view_ids | num }} of {{ fr.anonymous_ids | num }} anonymous ids ({{ fr.share_single_page_view | pct }})
    were seen on one page view only; {{ un.unmerged_ids | num }} never merged, {{ un.unmergeable_events | num }} events are past the merge window.</p>
  {% if fr.most_fragmented %}
  <table>
    <tr><th class="text">most fragmented people</th><th>ids</th></tr>
    {% for p in fr.most_fragmented %}<tr><td class="text">{{ p.person_id }}</td><td>{{ p.anonymous_ids }}</td></tr>{% endfor %}
  </table>
  {% endif %}
  </div>
  <div>
  <h3>Duplicates caught (the later copy)</h3>
  <table>
    <tr><th class="text">event</th><th class="text">copy from</th><th>pairs</th></tr>
    {% for d in t.duplicates.by_event %}<tr><td class="text">{{ d.event }}</td><td class="text">{{ d.late_copy_source }}</td><td>{{ d.pairs | num }}</td></tr>
    {% else %}<tr><td colspan="3" class="muted">none</td></tr>{% endfor %}
  </table>
  </div>
  </div>
  <h3>Events missing recommended properties</h3>
  <p class="muted">{{ mp.events_with_gaps | num }} of {{ mp.events_checked | num }} shop events ({{ mp.share_with_gaps | pct }}) lack at least one.</p>
  <table>
    <tr><th class="text">event</th><th class="text">property</th><th>missing</th><th>of events</th><th>share</th></tr>
    {% for row in mp.by_event_property %}
    <tr><td class="text">{{ row.event }}</td><td class="text">{{ row.property }}</td><td>{{ row.missing | num }}</td>
        <td>{{ row.events | num }}</td><td>{{ row.share | pct }}</td></tr>
    {% else %}<tr><td colspan="5" class="muted">every event carries its recommended properties</td></tr>
    {% endfor %}
  </table>
</section>
</main>
</body>
</html>
""")


def period_label(period: dict) -> str:
    since, until = period.get("since"), period.get("until")
    if not since and not until:
        return "all time"
    return f"{(since or '…')[:16].replace('T', ' ')} → {(until or 'now')[:16].replace('T', ' ')}"


def render(summary: dict, tracking: dict) -> str:
    revenue_svg, truncated = charts.daily_revenue_chart(summary["revenue"]["daily"])
    late = tracking["identify_lateness"]
    return _TEMPLATE.render(
        s=summary, c=summary["conversion"], r=summary["revenue"], cr=summary["cart_recovery"], rec=summary["recovery"],
        m=summary["messages"],
        t=tracking, late=late, fr=tracking["fragmented_ids"], un=tracking["unmerged"], mp=tracking["missing_properties"],
        period_label=period_label(summary["period"]),
        revenue_chart=Markup(revenue_svg), revenue_truncated=truncated, max_days=charts.MAX_DAYS,
        funnel_chart=Markup(charts.funnel_chart(summary["funnel"])),
        lateness_chart=Markup(charts.histogram_chart(late["histogram"], late["median_seconds"], late["p90_seconds"])),
    )
