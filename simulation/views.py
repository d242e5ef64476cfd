"""How `breadcrumb simulate` and `breadcrumb backtest` print: a rich timeline and a side-by-side table."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.table import Table

from simulation.simulator import Timeline, TimelineEntry

KIND_STYLE = {
    "decision": "bold cyan",
    "sent": "bold green",
    "waiting": "yellow",
    "skipped": "magenta",
    "exit": "bold red",
    "completed": "bold",
    "conversion": "bold blue",
    "event": "dim",
}


def human(delta: timedelta | None) -> str:
    if delta is None:
        return "–"
    seconds = int(round(delta.total_seconds()))
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds and not days else "",
    ]
    return sign + ("".join(parts) or "0s")


def _what(entry: TimelineEntry) -> str:
    if entry.kind == "decision":
        return f"route {entry.route}"
    if entry.kind == "sent":
        return f"send step {entry.step}"
    if entry.kind == "waiting":
        return f"wait (step {entry.step})"
    if entry.kind == "event":
        return "history"
    return entry.kind + (f" (step {entry.step})" if entry.step else "")


def _details(entry: TimelineEntry) -> str:
    if entry.kind == "sent":
        names = (
            ", ".join(
                f"{item.get('name') or item.get('sku')}" + (f" ×{item['quantity']}" if item.get("quantity") else "")
                for item in entry.items
            )
            or "no items"
        )
        extra = f" · cart {entry.cart_value:.2f}" if entry.cart_value is not None else ""
        extra += f" · category {entry.category}" if entry.category else ""
        return f"{entry.template} ({entry.channel}) · {names}{extra}"
    if entry.kind == "waiting" and entry.until:
        return entry.reason.split(" until ")[0] + f" until {entry.until:%Y-%m-%d %H:%M} UTC"
    return entry.reason


def render_timeline(console: Console, timeline: Timeline) -> None:
    console.print(
        f"[bold]{timeline.label}[/] ({timeline.person_id}) under [bold]{timeline.policy}[/], "
        f"from {timeline.start:%Y-%m-%d %H:%M:%S} UTC; timezone {timeline.timezone or 'unknown (policy default)'}"
    )
    table = Table(show_lines=False, header_style="bold")
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("+", justify="right", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("details")
    for entry in timeline.entries:
        style = KIND_STYLE.get(entry.kind, "")
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M}",
            human(entry.at - timeline.start),
            f"[{style}]{_what(entry)}[/]" if style else _what(entry),
            _details(entry),
        )
    console.print(table)
    first = timeline.first_message_after
    console.print(
        f"{len(timeline.sent)} message(s); first {human(first)} after the start"
        + (f"; ended: {timeline.ended}" if timeline.ended else "")
        + ("; [yellow]horizon reached, still running[/]" if timeline.horizon_reached else "")
    )


def _share(value: float) -> str:
    return f"{value * 100:.1f}%"


def render_backtest(console: Console, result: dict) -> None:
    current, new = result["policies"]["current"], result["policies"]["new"]
    console.print(
        f"[bold]Backtest[/]: {result['people']} people identified {result['since'][:16]} → "
        f"{result['until'][:16]} UTC, simulated under both policies in {result['elapsed_seconds']:.1f} s "
        f"({result['people_per_second']} people/s, {result.get('shards', 1)} worker process(es))"
    )
    if result.get("changed_steps") is not None:
        why = (
            [f"they never entered {' or '.join(result['changed_steps'])}, whose steps changed"]
            if result["changed_steps"]
            else []
        )
        if result["changed_answers"]:
            why.append("each of their routing, send-time and attribution questions gets the same answer")
        console.print(
            f"{result['reused']} people keep their current timeline under the new policy"
            f"{': ' + ' and '.join(why) if why else ''} ({result['simulations']} simulations in all)."
        )
    table = Table(header_style="bold")
    table.add_column("")
    table.add_column(f"current: {current['name']}", justify="right")
    table.add_column(f"new: {new['name']}", justify="right")
    table.add_column("change", justify="right")
    routes = sorted(set(current["routes"]) | set(new["routes"]), key=lambda r: -(current["routes"].get(r, 0)))
    for route in routes:
        a, b = current["routes"].get(route, 0), new["routes"].get(route, 0)
        table.add_row(f"route {route}", str(a), str(b), f"{b - a:+d}" if a != b else "")
    rows = [
        (
            "messages per person",
            f"{current['messages_per_person']:.2f}",
            f"{new['messages_per_person']:.2f}",
            new["messages_per_person"] - current["messages_per_person"],
            "{:+.2f}",
        ),
        (
            "people messaged",
            str(current["people_messaged"]),
            str(new["people_messaged"]),
            new["people_messaged"] - current["people_messaged"],
            "{:+d}",
        ),
        (
            "share capped (frequency cap)",
            _share(current["share_capped"]),
            _share(new["share_capped"]),
            (new["share_capped"] - current["share_capped"]) * 100,
            "{:+.1f} pt",
        ),
        (
            "share deferred by quiet hours",
            _share(current["share_quiet_hours"]),
            _share(new["share_quiet_hours"]),
            (new["share_quiet_hours"] - current["share_quiet_hours"]) * 100,
            "{:+.1f} pt",
        ),
        (
            "conversions attributed",
            str(current["attributed_conversions"]),
            str(new["attributed_conversions"]),
            new["attributed_conversions"] - current["attributed_conversions"],
            "{:+d}",
        ),
    ]
    for label, a, b, delta, fmt in rows:
        table.add_row(label, a, b, fmt.format(delta) if delta else "")
    ma, mb = current["median_first_message_seconds"], new["median_first_message_seconds"]
    table.add_row(
        "median identify → first message",
        human(timedelta(seconds=ma)) if ma is not None else "–",
        human(timedelta(seconds=mb)) if mb is not None else "–",
        ("+" if mb > ma else "") + human(timedelta(seconds=mb - ma))
        if ma is not None and mb is not None and abs(mb - ma) >= 1
        else "",
    )
    console.print(table)
    console.print(
        f"[bold]{result['changed']}[/] people's outcome (route or messages) changed; "
        f"{result['timing_only']} more only changed timing."
    )
    if result["top"]:
        changed = Table(header_style="bold", title=f"top {len(result['top'])} changed")
        changed.add_column("person")
        changed.add_column("current", no_wrap=True)
        changed.add_column("new", no_wrap=True)
        changed.add_column("why")
        for row in result["top"]:
            changed.add_row(
                row["person"],
                f"{row['current']['route']} · {row['current']['messages']} msg",
                f"{row['new']['route']} · {row['new']['messages']} msg",
                row["reason"],
            )
        console.print(changed)
