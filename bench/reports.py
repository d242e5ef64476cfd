#!/usr/bin/env python3
"""Report benchmark: the journey report (and the tracking report) on 1 M events and 50 k people,
against a plain `SELECT COUNT(*) FROM events` over the same table in the same run.

Run with `.venv/bin/python bench/reports.py [--events N] [--people N] [--repeat N] [--postgres URL]
[--keep PATH]`.

For each backend (SQLite always, in a file; PostgreSQL with `--postgres URL`, in a database created
and dropped here) the script:

1. migrates a fresh database (the real schema and indexes, Alembic);
2. generates a deterministic shop — people identified over 60 days with one to six devices each,
   their anonymous browsing before and after identify, carts, checkouts, orders (some before
   identify, some with a server-side duplicate), never-identified devices, journey runs on every
   route (5 % control), messages, and journey-log lines — and bulk-loads it (DBAPI `executemany`
   in one transaction on SQLite, indexes rebuilt after; `COPY` on PostgreSQL), then runs ANALYZE
   (VACUUM ANALYZE on PostgreSQL: the state autovacuum keeps a live table in);
3. builds the report roll-ups (the first refresh: every person and device), then, after one
   warm-up of each, times `store.reports.summary()` (every figure of
   `GET /admin/reports/summary`, from the roll-ups), `store.reports.tracking()`, `SELECT COUNT(*) FROM events` and a
   COUNT(*) that must read every row (`WHERE properties IS NOT NULL`: SQLite answers a bare
   COUNT(*) from index page counts), interleaved, `--repeat` times, and prints medians and the
   ratios report / COUNT(*) and report / full scan;
4. once, for scale, times fetching every event row into Python — what a report that loops over
   events in Python would pay before doing any work — and the exact journey report, asserting it
   equals the one from the roll-ups.

Results are printed as a table and written to bench/results/reports.json. Only the equality of the
roll-up and exact reports is asserted; the timings are not.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import orjson  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from journeys import taxonomy as t  # noqa: E402
from journeys.policy import Policy  # noqa: E402
from store import reports  # noqa: E402
from store.db import make_engine, scratch_database  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.reports.rollup_refresh import refresh  # noqa: E402
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "reports.json"
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 60
console = Console(width=None if sys.stdout.isatty() else 110)

ROUTES = (("cart_recovery", 0.25), ("browse_recovery", 0.2), ("welcome", 0.4), ("control", 0.05), ("none", 0.1))
STEPS = {"cart_recovery": 3, "browse_recovery": 2, "welcome": 3}
SKUS = [f"SKU-{i:03d}" for i in range(200)]
CATEGORIES = ["serums", "cleansers", "masks", "sunscreen", "toners", "oils"]
WAIT_REASONS = ["frequency cap until {}", "quiet hours until {}"]
EXIT_REASONS = [
    "purchased: order {}",
    "unsubscribed from email",
    "suppressed",
    "cart no longer open",
    "re-routed to cart_recovery: open cart",
    "out of stock: every item sold out",
]


# --------------------------------------------------------------------------------------------------
# The shop


@dataclass
class Shop:
    events: list[dict] = field(default_factory=list)
    people: list[dict] = field(default_factory=list)
    identifiers: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)


def generate(n_events: int, n_people: int, seed: int = 20250301) -> Shop:
    rng = random.Random(seed)
    shop = Shop()
    seq = 0

    def event(
        kind: str,
        name: str,
        at: datetime,
        person: str | None,
        anonymous_id: str | None,
        user_id: str | None = None,
        source: str = "client",
        duplicate_of: str | None = None,
        **props,
    ) -> str:
        nonlocal seq
        seq += 1
        message_id = f"m{seq:08d}"
        shop.events.append(
            dict(
                message_id=message_id,
                type=kind,
                name=name,
                original_name=name,
                anonymous_id=anonymous_id,
                user_id=user_id,
                person_id=person,
                properties=props,
                context={"library": {"name": "analytics.js"}},
                timestamp=at,
                received_at=at,
                source=source,
                cart_id=props.get("cart_id"),
                order_id=props.get("order_id"),
                missing_properties=t.missing_recommended(name, props) if kind == "track" else [],
                duplicate_of=duplicate_of,
            )
        )
        return message_id

    def browse(at: datetime, person: str | None, device: str) -> None:
        roll = rng.random()
        sku = rng.choice(SKUS)
        if roll < 0.42:
            event("page", t.PAGE_VIEWED, at, person, device, url=f"/p/{sku}")
        elif roll < 0.75:
            props = {
                "sku": sku,
                "price": rng.choice([18, 24, 32, 48, 64]),
                "category": rng.choice(CATEGORIES),
                "url": f"/p/{sku}",
                "variant": "30ml",
            }
            for key in list(props):
                if rng.random() < 0.12:
                    del props[key]
            event("track", t.PRODUCT_VIEWED, at, person, device, **props)
        elif roll < 0.87:
            event("track", t.COLLECTION_VIEWED, at, person, device, category=rng.choice(CATEGORIES))
        elif roll < 0.97:
            props = {"sku": sku, "price": rng.choice([18, 24, 32, 48, 64]), "quantity": 1, "cart_id": f"c-{device}"}
            if rng.random() < 0.3:
                props["variant"] = "30ml"
            event("track", t.ADDED_TO_CART, at, person, device, **props)
        else:
            event("track", t.QUIZ_ANSWERED, at, person, device, category=rng.choice(CATEGORIES))

    per_person = max(3, int(n_events * 0.8 / max(n_people, 1)))
    for p in range(n_people):
        pid = str(uuid.UUID(int=rng.getrandbits(128)))
        identified = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        devices = [f"d{p}-{i}" for i in range(rng.choices([1, 2, 3, 4, 6], [70, 18, 7, 3, 2])[0])]
        shop.people.append(
            dict(
                id=pid,
                traits={"first_name": f"P{p}"},
                timezone=None,
                email_unsubscribed=False,
                suppressed=False,
                sms_consent=False,
                created_at=identified,
                identified_at=identified,
                updated_at=identified,
            )
        )
        shop.identifiers.append(dict(person_id=pid, kind="email", value=f"p{p}@example.com", created_at=identified))
        for device in devices:
            shop.identifiers.append(dict(person_id=pid, kind="anonymous_id", value=device, created_at=identified))
        lateness = timedelta(seconds=min(rng.lognormvariate(8, 2.2), 40 * 86400)) if rng.random() < 0.8 else None
        count = rng.randint(per_person // 3, per_person * 5 // 3)
        first = identified - lateness if lateness else identified
        for _ in range(count):
            at = first + timedelta(seconds=rng.uniform(0, (identified - first).total_seconds() + 5 * 86400))
            browse(at, pid, rng.choice(devices))
        event("identify", t.IDENTIFY, identified, pid, devices[0])
        if rng.random() < 0.15:
            event(
                "track",
                t.CHECKOUT_STARTED,
                identified,
                pid,
                devices[0],
                email=f"p{p}@example.com",
                cart_id=f"c-{devices[0]}",
                value=rng.choice([48, 64, 96]),
            )
        route = rng.choices([r for r, _ in ROUTES], [w for _, w in ROUTES])[0]
        workflow = f"{route}-{pid}-1"
        shop.runs.append(
            dict(
                workflow_id=workflow,
                person_id=pid,
                route=route,
                status="completed",
                reason="",
                cart_id=f"c-{devices[0]}" if route == "cart_recovery" else None,
                cart_value=None,
                cart_recovery_key=None,
                started_at=identified,
                ended_at=identified + timedelta(days=4),
            )
        )
        sent = []
        if route in STEPS:
            for step in range(1, rng.randint(1, STEPS[route]) + 1):
                at = identified + timedelta(hours=step * 20 + rng.uniform(0, 4))
                mid = str(uuid.UUID(int=rng.getrandbits(128)))
                failed = rng.random() < 0.01
                shop.messages.append(
                    dict(
                        id=mid,
                        person_id=pid,
                        workflow_id=workflow,
                        journey=route,
                        step=step,
                        template=f"{route}_{step}",
                        channel="email",
                        recipient=f"p{p}@example.com",
                        subject="Hi",
                        body="…",
                        items=[],
                        status="failed" if failed else "sent",
                        reason="SMTP 550" if failed else None,
                        idempotency_key=f"{workflow}:{step}",
                        cart_id=f"c-{devices[0]}" if route == "cart_recovery" else None,
                        created_at=at,
                        sent_at=None if failed else at,
                    )
                )
                shop.log.append(
                    dict(
                        person_id=pid,
                        workflow_id=workflow,
                        journey=route,
                        step=step,
                        kind="failed" if failed else "sent",
                        reason="Hi",
                        at=at,
                        until=None,
                        message_id=mid,
                    )
                )
                sent.append(at)
                if rng.random() < 0.2:
                    shop.log.append(
                        dict(
                            person_id=pid,
                            workflow_id=workflow,
                            journey=route,
                            step=step,
                            kind="waiting",
                            reason=rng.choice(WAIT_REASONS).format(at.isoformat()),
                            at=at,
                            until=at,
                            message_id=None,
                        )
                    )
            shop.log.append(
                dict(
                    person_id=pid,
                    workflow_id=workflow,
                    journey=route,
                    step=None,
                    kind="exit",
                    reason=rng.choice(EXIT_REASONS).format(f"o-{p}"),
                    at=identified + timedelta(days=3),
                    until=None,
                    message_id=None,
                )
            )
        buy = 0.45 if route == "cart_recovery" else 0.3 if route in STEPS else 0.22
        if rng.random() < buy:
            before = rng.random() < 0.05
            at = (
                identified - timedelta(hours=rng.uniform(1, 48))
                if before
                else ((sent[-1] if sent else identified) + timedelta(hours=rng.uniform(0.5, 9 * 24)))
            )
            props = {
                "order_id": f"o-{p}",
                "revenue": rng.choice([32, 48, 64, 96, 128, 180]),
                "cart_id": f"c-{devices[0]}",
            }
            original = event("track", t.ORDER_COMPLETED, at, pid, None, user_id=f"u{p}", **props)
            if rng.random() < 0.1:
                event(
                    "track",
                    t.ORDER_COMPLETED,
                    at + timedelta(seconds=20),
                    pid,
                    None,
                    user_id=f"u{p}",
                    source="server",
                    duplicate_of=original,
                    **props,
                )

    device = 0
    while len(shop.events) < n_events:  # devices that never identified
        device += 1
        name = f"anon-{device}"
        at = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        for _ in range(min(rng.choices([1, 2, 4, 8], [50, 25, 15, 10])[0], n_events - len(shop.events))):
            browse(at, None, name)
            at += timedelta(minutes=rng.uniform(0.2, 20))
    return shop


# --------------------------------------------------------------------------------------------------
# Loading


def _defaults(table, given: set[str]) -> dict:
    """Values for the columns a row leaves out (whatever the models add later): their Python default."""
    values = {}
    for column in table.columns:
        if (
            column.name in given
            or column.autoincrement is True
            or (column.primary_key and column.name == "id" and column.type.python_type is int)
        ):
            continue
        default = column.default
        if default is None:
            values[column.name] = None
        elif default.is_scalar:
            values[column.name] = default.arg
        else:
            values[column.name] = default.arg(None)
    return values


def _sqlite_value(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


def _copy_value(value):
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


def load(engine: Engine, shop: Shop) -> None:
    tables = (
        (Person.__table__, shop.people),
        (Identifier.__table__, shop.identifiers),
        (Event.__table__, shop.events),
        (Message.__table__, shop.messages),
        (JourneyRun.__table__, shop.runs),
        (JourneyLog.__table__, shop.log),
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        recreate: list[str] = []
        if engine.dialect.name == "sqlite":
            # Bulk load: indexes are built once afterwards (a sort, not a million random inserts).
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-262144")
            names = ", ".join(f"'{table.name}'" for table, _ in tables)
            # The roll-up triggers too: without them nothing is marked, and the first refresh (no
            # roll-ups yet) rebuilds from every person and device anyway.
            for kind, name, sql in cursor.execute(
                f"SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
                f"AND sql IS NOT NULL AND tbl_name IN ({names})"
            ).fetchall():
                recreate.append(sql)
                cursor.execute(f'DROP {kind.upper()} "{name}"')
            cursor.execute("BEGIN")
        for table, rows in tables:
            if not rows:
                continue
            extra = _defaults(table, set(rows[0]))
            columns = [*rows[0], *extra]
            if engine.dialect.name == "sqlite":
                sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                cursor.executemany(sql, ([_sqlite_value(v) for v in (*row.values(), *extra.values())] for row in rows))
            else:
                quoted = ", ".join(f'"{c}"' for c in columns)
                with cursor.copy(f"COPY {table.name} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([_copy_value(v) for v in (*row.values(), *extra.values())])
        for sql in recreate:
            cursor.execute(sql)
        raw.commit()
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("ANALYZE")
            raw.commit()
        else:
            # The steady state autovacuum keeps a live table in: statistics and a visibility map
            # (without it no index-only scan is possible right after a bulk load).
            raw.driver_connection.autocommit = True
            try:
                cursor.execute("VACUUM ANALYZE")
            finally:  # the connection goes back to the pool: the next user must get transactions again
                raw.driver_connection.autocommit = False
    finally:
        raw.close()


# --------------------------------------------------------------------------------------------------
# Timing


CPU: dict[str, list[float]] = {}


def timed(fn) -> float:
    """Wall-clock seconds; this process's CPU seconds go to CPU[fn.__name__] (for SQLite that is
    the database's work too, and it moves much less with the machine's other load)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    CPU.setdefault(fn.__name__, []).append(time.process_time() - cpu)
    return time.perf_counter() - start


def bench_backend(label: str, url: str, shop: Shop, repeat: int, policy: Policy) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    console.print(
        f"[bold]{label}[/]: loading {len(shop.events):,} events, {len(shop.people):,} people, "
        f"{len(shop.messages):,} messages …"
    )
    load_s = timed(lambda: load(engine, shop))
    console.print(f"  loaded in {load_s:.1f} s")
    # The triggers marked every person and device during the load: the first refresh builds it all.
    build_s = timed(lambda: refresh(engine, policy.attribution_window, reports.DEFAULT_CONVERSION_DAYS))
    console.print(f"  roll-ups built in {build_s:.1f} s")

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()

    def scan() -> int:  # one pass that reads every row (COUNT(*) alone may only count index pages)
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM events WHERE properties IS NOT NULL")).scalar_one()

    figures: dict = {}

    def summary() -> None:
        figures["summary"] = reports.summary(engine, policy)

    def exact_summary() -> None:
        figures["exact"] = reports.summary(engine, policy, exact=True)

    def tracking() -> None:
        figures["tracking"] = reports.tracking(engine, policy)

    assert count() == len(shop.events)
    for fn in (count, scan, summary, tracking):  # warm-up: page cache, statement caches
        fn()
    times: dict[str, list[float]] = {"count": [], "scan": [], "summary": [], "tracking": []}
    for _ in range(repeat):
        times["count"].append(timed(count))
        times["summary"].append(timed(summary))
        times["scan"].append(timed(scan))
        times["count"].append(timed(count))
        times["tracking"].append(timed(tracking))

    exact_s = timed(exact_summary)  # once: the reference the roll-ups replace
    assert figures["exact"] == {**figures["summary"], "generated_at": figures["exact"]["generated_at"]}

    def fetch_all() -> None:
        with engine.connect() as conn:
            for _row in conn.execute(text("SELECT person_id, name, timestamp, properties, anonymous_id FROM events")):
                pass

    CPU.clear()
    for _ in range(repeat):
        timed(summary)
        timed(tracking)
    cpu = {name: statistics.median(values) for name, values in CPU.items()}
    naive = timed(fetch_all)
    engine.dispose()
    medians = {k: statistics.median(v) for k, v in times.items()}
    s, tr = figures["summary"], figures["tracking"]
    return {
        "backend": label,
        "events": len(shop.events),
        "people": len(shop.people),
        "messages": len(shop.messages),
        "load_seconds": round(load_s, 2),
        "rollup_build_seconds": round(build_s, 2),
        "exact_summary_seconds": exact_s,
        "count_seconds": medians["count"],
        "scan_seconds": medians["scan"],
        "summary_seconds": medians["summary"],
        "tracking_seconds": medians["tracking"],
        "fetch_all_events_seconds": naive,
        "summary_over_count": medians["summary"] / medians["count"],
        "tracking_over_count": medians["tracking"] / medians["count"],
        "summary_over_scan": medians["summary"] / medians["scan"],
        "client_cpu_seconds": cpu,
        "samples": times,
        "figures": {
            "conversion_rate": s["conversion"]["rate"],
            "attributed_revenue": s["revenue"]["attributed_revenue"],
            "revenue_per_recipient": s["revenue"]["revenue_per_recipient"],
            "cart_recovery_rate": s["cart_recovery"]["rate"],
            "lift_points": (s["conversion"]["holdout"] or {}).get("lift_points"),
            "lateness_median_seconds": tr["identify_lateness"]["median_seconds"],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--postgres", metavar="URL", help="also run on PostgreSQL (a server URL; a database is created and dropped)"
    )
    parser.add_argument("--keep", metavar="PATH", help="keep the SQLite file here (default: a temporary folder)")
    args = parser.parse_args()

    policy = Policy()
    console.print(f"generating {args.events:,} events for {args.people:,} people …")
    started = time.perf_counter()
    shop = generate(args.events, args.people)
    console.print(f"  generated in {time.perf_counter() - started:.1f} s")

    results = []
    with tempfile.TemporaryDirectory(prefix="breadcrumb-bench-reports-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "reports.db"
        if path.exists():
            path.unlink()
        results.append(bench_backend("SQLite", f"sqlite:///{path}", shop, args.repeat, policy))
        if args.postgres:
            with scratch_database(args.postgres, "breadcrumb_bench_reports") as url:
                results.append(bench_backend("PostgreSQL", url, shop, args.repeat, policy))

    table = Table(title=f"Reports on {args.events:,} events / {args.people:,} people (median of {args.repeat})")
    for column in (
        "backend",
        "COUNT(*)",
        "summary",
        "summary / COUNT(*)",
        "tracking",
        "tracking / COUNT(*)",
        "full scan",
        "summary / scan",
        "exact summary",
        "fetch all events",
    ):
        table.add_column(column, justify="right" if column != "backend" else "left")
    ms = lambda seconds: f"{seconds * 1000:,.0f} ms"  # noqa: E731
    for r in results:
        table.add_row(
            r["backend"],
            ms(r["count_seconds"]),
            ms(r["summary_seconds"]),
            f"{r['summary_over_count']:.1f}×",
            ms(r["tracking_seconds"]),
            f"{r['tracking_over_count']:.1f}×",
            ms(r["scan_seconds"]),
            f"{r['summary_over_scan']:.1f}×",
            ms(r["exact_summary_seconds"]),
            ms(r["fetch_all_events_seconds"]),
        )
    console.print(table)
    for r in results:
        cpu = r["client_cpu_seconds"]
        where = "in-process, so the database's work" if r["backend"] == "SQLite" else "client side only"
        console.print(
            f"{r['backend']}: CPU per run ({where}): summary {cpu['summary']:.2f} s, tracking {cpu['tracking']:.2f} s",
            highlight=False,
        )
    for r in results:
        f = r["figures"]
        console.print(
            f"{r['backend']}: conversion {f['conversion_rate']}, attributed revenue {f['attributed_revenue']:,}, "
            f"RPR {f['revenue_per_recipient']}, cart recovery {f['cart_recovery_rate']}, lift "
            f"{f['lift_points']}, median lateness {f['lateness_median_seconds']} s",
            highlight=False,
        )
    if len(results) == 2:
        same = results[0]["figures"] == results[1]["figures"]
        console.print(f"SQLite and PostgreSQL figures {'agree' if same else '[red]DIFFER[/]'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": platform.platform(), "python": platform.python_version(), "results": results},
            indent=2,
            default=str,
        )
    )
    console.print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
