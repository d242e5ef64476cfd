"""`breadcrumb report` — the journey report and the tracking-health report as rich tables, read
straight from the store (set-based SQL in store/reports/), or a signed link to the report page."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from api import charts, report_link
from store import reports
from store.reports.experiments import experiments
from store.settings import Settings
from worker import stack_file

KINDS = ("summary", "tracking", "experiments")


def public_base_url(settings: Settings) -> str:
    """Where `--open` without a URL points: the API's public address, as unsubscribe links use it
    (the dev server's when BREADCRUMB_PUBLIC_BASE_URL is not set)."""
    from activities.store_activities import DEV_PUBLIC_BASE_URL

    return settings.public_base_url or DEV_PUBLIC_BASE_URL


def make_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def report_settings(db: str | None, config: str | None, data_dir: str | Path) -> tuple[Settings, str, str | None]:
    """The settings a report reads with, where they came from, and the API of the dev stack (if any).
    Each of the database and the journey config comes from its option, else its BREADCRUMB_ variable,
    else the dev stack last started on `data_dir` (so the report agrees with the running stack's
    report page), else the default."""
    overrides: dict[str, Any] = {}
    stack = stack_file.read(data_dir)
    stack_values = stack[1] if stack else {}
    origins = []
    for option, value, field, variable in (
        ("--db", db, "database_url", "BREADCRUMB_DATABASE_URL"),
        ("--config", config, "journeys", "BREADCRUMB_JOURNEYS"),
    ):
        if value:
            overrides[field], origin = value, option
        elif os.environ.get(variable):
            origin = variable
        elif stack and stack_values.get(field):
            overrides[field], origin = stack_values[field], str(stack[0])
        else:
            origin = "default"
        origins.append(origin)
    settings = Settings(**overrides)
    source = (
        f"journeys {settings.journeys} ({origins[1]}); database "
        f"{make_url(settings.database_url).render_as_string(hide_password=True)} ({origins[0]})"
    )
    return settings, source, stack_values.get("api")


def run_report(
    kind: str,
    since: str | None,
    until: str | None,
    days: int,
    db: str | None,
    as_json: bool,
    open_url: str | None,
    ttl: int,
    console: Console | None = None,
    config: str | None = None,
    data_dir: str | Path = "data",
    exact: bool = False,
) -> int:
    console = console or make_console()
    if kind not in KINDS:
        console.print(f"[red]breadcrumb report:[/] unknown report {kind!r}: use one of {', '.join(KINDS)}")
        return 2
    settings, source, stack_api = report_settings(db, config, data_dir)
    if open_url is not None:
        base_url = open_url or settings.public_base_url or stack_api or public_base_url(settings)
        if not base_url.startswith(("http://", "https://")):
            console.print(
                f"[red]breadcrumb report:[/] --open {base_url!r} is not a URL: give the API's address, "
                f"like http://127.0.0.1:8000, or nothing for BREADCRUMB_PUBLIC_BASE_URL"
            )
            return 2
        try:
            link = report_link.sign(
                settings.admin_token,
                base_url,
                ttl=ttl,
                since=since,
                until=until,
                days=days if days != reports.DEFAULT_CONVERSION_DAYS else None,
            )
        except ValueError as exc:
            console.print(f"[red]breadcrumb report:[/] {exc}")
            return 2
        console.print(f"Report page, valid for {charts.duration(ttl)}:")
        console.print(Text(link), soft_wrap=True)  # one unbroken line, so it can be copied
        return 0
    try:
        period = reports.make_period(since, until)
    except ValueError as exc:
        console.print(f"[red]breadcrumb report:[/] {exc}")
        return 2

    from journeys.policy import PolicyError
    from store.db import make_engine

    try:
        _ = settings.policy  # loaded (and validated) on first access
    except PolicyError as exc:
        console.print(f"[red]breadcrumb report:[/] {exc}", highlight=False)
        return 2
    if not as_json:  # JSON output stays one document; the tables say what they read
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[dim]Reading {source}[/]")
    engine = make_engine(settings.database_url)
    try:
        if kind == "summary":
            data = reports.summary(engine, settings.policy, period, conversion_days=days, exact=exact)
        elif kind == "experiments":
            data = experiments(engine, settings.policy, period)
        else:
            data = reports.tracking(engine, settings.policy, period)
    finally:
        engine.dispose()
    if as_json:
        console.file.write(json.dumps(data, indent=2) + "\n")
    elif kind == "summary":
        print_summary(console, data)
    elif kind == "experiments":
        print_experiments(console, data)
    else:
        print_tracking(console, data)
    return 0


# --------------------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def num(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _table(title: str, *columns: str, left: int = 1) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right", overflow="fold")
    return table


def _period(data: dict) -> str:
    from api.report_page import period_label

    return period_label(data["period"])


def print_summary(console: Console, s: dict) -> None:
    c, r, cr, rec, m = s["conversion"], s["revenue"], s["cart_recovery"], s["recovery"], s["messages"]
    settings = s["settings"]
    console.print(
        f"[bold]Breadcrumb journey report[/] · {_period(s)} · first-purchase window {settings['conversion_days']} d"
        f" · attribution window {settings['attribution_window_hours']:g} h (last touch)"
    )

    headline = _table("", "figure", "value", "of")
    headline.add_row(
        "first-purchase conversion", pct(c["rate"]), f"{num(c['converted'])} of {num(c['measured'])} people"
    )
    headline.add_row(
        "attributed revenue",
        money(r["attributed_revenue"]),
        f"{num(r['attributed_orders'])} of {num(r['orders'])} orders ({money(r['revenue'])})",
    )
    headline.add_row(
        "revenue per recipient", money(r["revenue_per_recipient"]), f"{num(r['recipients'])} people messaged"
    )
    headline.add_row(
        "cart recovery rate", pct(cr["rate"]), f"{num(cr['carts_recovered'])} of {num(cr['carts_messaged'])} carts"
    )
    headline.add_row(
        "recovery rate, all journeys",
        pct(rec["rate"]),
        f"{num(rec['people_recovered'])} of {num(rec['people_messaged'])} people messaged",
    )
    if c["holdout"]:
        h = c["holdout"]
        lift = "–" if h["lift_points"] is None else f"{h['lift_points'] * 100:+.1f} pts"
        headline.add_row(
            "lift vs holdout", lift, f"journeys {pct(h['journey_rate'])} vs control {pct(h['control_rate'])}"
        )
    console.print(headline)

    routes = _table(
        f"First-purchase conversion by route (≤ {c['days']} d after identify)",
        "route",
        "people",
        "in window",
        "bought so far",
        "measured",
        "converted",
        "rate",
        "already customers",
    )

    def route_row(name: str, row: dict) -> None:
        routes.add_row(
            Text(name),
            num(row["people"]),
            num(row["still_in_window"]),
            num(row["converted_so_far"]),
            num(row["measured"]),
            num(row["converted"]),
            pct(row["rate"]),
            num(row["prior_purchasers"]),
        )

    for row in c["by_route"]:
        route_row(row["route"], row)
    routes.add_section()
    route_row("all", c)
    console.print(routes)
    if c["holdout"] is None:
        console.print(
            "[dim]No control group measured in this period (holdout_percent in journeys.toml measures lift).[/]"
        )
    if c["still_in_window"]:
        console.print(
            f"[dim]{num(c['still_in_window'])} people are still inside their {c['days']}-day window "
            f"({num(c['converted_so_far'])} bought so far): left out of the rates until the window closes.[/]"
        )

    journeys = _table(
        "Revenue per recipient by journey", "journey", "people messaged", "orders", "revenue", "per recipient"
    )
    for row in r["by_journey"]:
        journeys.add_row(
            Text(row["journey"]),
            num(row["recipients"]),
            num(row["orders"]),
            money(row["revenue"]),
            money(row["revenue_per_recipient"]),
        )
    console.print(journeys)
    steps = _table("… and by step", "journey", "step", "people", "orders", "revenue", "per recipient")
    for row in r["by_step"]:
        steps.add_row(
            Text(row["journey"]),
            str(row["step"]),
            num(row["recipients"]),
            num(row["orders"]),
            money(row["revenue"]),
            money(row["revenue_per_recipient"]),
        )
    console.print(steps)

    recovery = _table(
        "Recovery by journey (ordered within the attribution window)",
        "journey",
        "messaged",
        "recovered",
        "rate",
        "matched by cart id",
    )
    for row in rec["by_journey"]:
        recovery.add_row(
            Text(row["journey"]),
            f"{num(row['messaged'])} {row['unit']}",
            num(row["recovered"]),
            pct(row["rate"]),
            num(row["matched_by_cart_id"]) if row["unit"] == "carts" else "",
        )
    recovery.add_section()
    recovery.add_row(
        "all (people)", f"{num(rec['people_messaged'])} people", num(rec["people_recovered"]), pct(rec["rate"]), ""
    )
    console.print(recovery)

    reasons = _table(
        f"Messages: {num(m['sent'])} sent · {num(m['failed'])} failed · {num(m['pending'])} pending · "
        f"{num(m['skipped'])} skipped · {num(m['deferred'])} deferred",
        "outcome",
        "journey",
        "reason",
        "count",
        left=3,
    )
    for row in m["by_reason"]:
        reasons.add_row(row["outcome"], Text(row["journey"] or ""), Text(row["reason"] or ""), num(row["count"]))
    console.print(reasons)

    funnel = _table("Funnel", "stage", "count", "of previous")
    previous = None
    for stage in s["funnel"]:
        funnel.add_row(stage["label"], num(stage["count"]), pct(stage["count"] / previous) if previous else "")
        previous = stage["count"]
    console.print(funnel)


def print_experiments(console: Console, e: dict) -> None:
    """One table per experiment (docs/experiments.md): the variants' figures and the auto-winner."""
    console.print(f"[bold]Breadcrumb message experiments[/] · {_period(e)}")
    if not e["experiments"]:
        console.print("No step has variants and none were sent in this period.")
    for experiment in e["experiments"]:
        table = _table(
            f"{experiment['journey']} step {experiment['step']}",
            "variant",
            "recipients",
            "conversions",
            "rate",
            "revenue",
            "revenue / recipient",
            "95% interval",
            "P(best)",
        )
        for v in experiment["variants"]:
            interval = f"{money(v['interval'][0])} – {money(v['interval'][1])}" if v["interval"] else "–"
            table.add_row(
                v["variant"],
                num(v["recipients"]),
                num(v["conversions"]),
                pct(v["conversion_rate"]),
                money(v["revenue"]),
                money(v["revenue_per_recipient"]),
                interval,
                pct(v["probability_best"]),
            )
        console.print(table)
        if decision := experiment["decision"]:
            console.print(
                f"auto-winner: {decision['winner']}, decided {decision['decided_at'][:19].replace('T', ' ')} UTC"
            )


def print_tracking(console: Console, t: dict) -> None:
    late, fr, mp, dup, un = (
        t["identify_lateness"],
        t["fragmented_ids"],
        t["missing_properties"],
        t["duplicates"],
        t["unmerged"],
    )
    console.print(f"[bold]Breadcrumb tracking health[/] · {_period(t)}")
    head = _table("", "figure", "value", "detail")
    head.add_row(
        "identify lateness, median",
        charts.duration(late["median_seconds"]),
        f"p90 {charts.duration(late['p90_seconds'])}; {num(late['with_anonymous_activity'])} of "
        f"{num(late['identified'])} people had anonymous activity first",
    )
    head.add_row(
        "identified only at checkout or purchase",
        pct(late["share_at_checkout_or_purchase"]),
        f"{num(late['identified_at_checkout_or_purchase'])} people",
    )
    head.add_row(
        "anonymous events never merged",
        pct(un["share_unmerged_events"]),
        f"{num(un['unmerged_events'])} of {num(un['anonymous_events'])}; {num(un['unmergeable_events'])} past the merge window",
    )
    head.add_row(
        "anonymous ids never merged",
        pct(un["share_unmerged_ids"]),
        f"{num(un['unmerged_ids'])} of {num(un['anonymous_ids'])}",
    )
    head.add_row(
        f"people with {fr['many_threshold']}+ anonymous ids",
        pct(fr["share_with_many_ids"]),
        f"{num(fr['people_with_many_ids'])} of {num(fr['people'])}; most {num(fr['max_ids'])}",
    )
    head.add_row(
        "anonymous ids seen on one page view only",
        pct(fr["share_single_page_view"]),
        f"{num(fr['single_page_view_ids'])} of {num(fr['anonymous_ids'])}",
    )
    head.add_row("duplicate pairs caught (client + server)", num(dup["pairs"]), "")
    head.add_row("events with a device clock ahead (clamped)", num(t["flagged"]["timestamp_clamped"]), "")
    head.add_row(
        "events with links off the shop (left out)",
        num(t["flagged"]["foreign_links"]),
        ", ".join(f"{e['event']} {num(e['foreign_links'])}" for e in t["flagged"]["by_event"] if e["foreign_links"]),
    )
    head.add_row(
        "events missing recommended properties",
        pct(mp["share_with_gaps"]),
        f"{num(mp['events_with_gaps'])} of {num(mp['events_checked'])}",
    )
    console.print(head)

    histogram = _table("Identify lateness (first anonymous event → identify)", "time", "people", "", left=1)
    biggest = max((b["people"] for b in late["histogram"]), default=0) or 1
    for bucket in late["histogram"]:
        histogram.add_row(bucket["bucket"], num(bucket["people"]), "█" * round(30 * bucket["people"] / biggest))
    console.print(histogram)

    missing = _table(
        "Events missing recommended properties", "event", "property", "missing", "of events", "share", left=2
    )
    for row in mp["by_event_property"]:
        missing.add_row(
            Text(row["event"]), Text(row["property"]), num(row["missing"]), num(row["events"]), pct(row["share"])
        )
    console.print(missing)

    duplicates = _table("Duplicates caught", "event", "later copy from", "pairs", left=2)
    for row in dup["by_event"]:
        duplicates.add_row(Text(row["event"]), Text(row["late_copy_source"]), num(row["pairs"]))
    console.print(duplicates)

    fragmented = _table("Ids per person", "anonymous ids", "people")
    for row in fr["distribution"]:
        fragmented.add_row(row["anonymous_ids"], num(row["people"]))
    console.print(fragmented)
    if fr["most_fragmented"]:
        top = _table("Most fragmented people", "person", "anonymous ids")
        for row in fr["most_fragmented"]:
            top.add_row(Text(row["person_id"]), num(row["anonymous_ids"]))
        console.print(top)
