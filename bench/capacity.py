#!/usr/bin/env python3
"""Capacity notes (docs/capacity.md): what one identified shopper costs in Temporal and in the database,
measured, and the sizing table for 10 k / 100 k / 1 M identified shoppers a day worked out from it.

Run with `.venv/bin/python bench/capacity.py [--shoppers N] [--events N] [--people N] [--postgres URL]`.

1. **Temporal, per person-journey** — a fresh recording on the current code: a real stack (dev server,
   `breadcrumb api` with its dispatcher, `breadcrumb worker`, an SMTP relay; tests/fault_stack.py) with
   the second-scale policy (examples/journeys.fast.toml: same steps and timers as journeys.toml). Each
   shopper browses anonymously, identifies, browses three products once known; a third fill a cart,
   a third browse a lot, a third only sign up; every journey runs to its end and every hub to its idle
   completion. Then every hub's and journey's history is fetched and counted: events by type, workflow
   tasks, history bytes (protobuf), and Temporal Cloud actions as docs.temporal.io/cloud/actions bills
   them — a workflow started (client, child, continue-as-new), a signal, an activity scheduled (and each
   retry), a timer started, a search-attribute upsert, the local activities of one workflow task as one.
   Heartbeats and queries are billed too but are not in histories (see the notes printed).
2. **Database bytes** — the deterministic shop of bench/reports.py (people identified over 60 days,
   their anonymous and known browsing, carts, orders, never-identified devices, journey runs, messages,
   journey log) loaded into a fresh SQLite file (page counts per table via dbstat) and, with
   `--postgres`, a scratch PostgreSQL database (`pg_total_relation_size`: table + indexes + TOAST).
3. **Sizing** — per day: shoppers × actions per shopper (and / 86 400 for actions per second), per
   month (30 days): events × bytes per event + shoppers × bytes per person in the other tables.

Results are printed as tables and written to bench/results/capacity.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tests", REPO_ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402

from fault_stack import Stack, browse_batch, identify_message, known_browsing, outcome, shoppers, start_smtp, wait_until  # noqa: E402
from conftest import WRITE_KEY  # noqa: E402
from dispatch.temporal import connect  # noqa: E402
from store import message_ids  # noqa: E402
from store.db import make_engine, scratch_database  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.settings import Settings  # noqa: E402
from workflows.hub import hub_id  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "capacity.json"
SCALES = (10_000, 100_000, 1_000_000)
DAY, MONTH_DAYS = 86_400, 30
# Tables that grow with identified people (events are counted on their own).
PER_PERSON_TABLES = ("people", "identifiers", "journey_runs", "messages", "journey_log")
console = Console(width=160)


# --------------------------------------------------------------------------------------------------
# 1. Temporal: events and billable actions per person-journey, from fresh histories
# --------------------------------------------------------------------------------------------------

# History event type → billable actions (docs.temporal.io/cloud/actions). A child start or an
# external signal is counted once, where it lands (the child's WORKFLOW_EXECUTION_STARTED, the
# receiver's WORKFLOW_EXECUTION_SIGNALED), so a person's hub and journeys together count each once.
# An upsert of TemporalChangeVersion alone (`workflow.patched`) is not billed.
BILLED = {
    "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED": "workflow started",
    "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED": "signal",
    "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED": "activity",
    "EVENT_TYPE_TIMER_STARTED": "timer",
    "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES": "search-attribute upsert",
}


@dataclass
class Tally:
    """Everything counted in the histories of a set of people (their hubs and their journeys)."""

    people: int = 0
    workflows: int = 0
    events: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    unbilled: Counter = field(default_factory=Counter)
    history_bytes: int = 0

    def add(self, history) -> None:
        self.workflows += 1
        local_tasks = set()
        for event in history.events:
            kind = event.WhichOneof("attributes")
            name = type_name(event.event_type)
            self.events[name] += 1
            self.history_bytes += event.ByteSize()
            if _patch_marker(event):
                self.unbilled["patch marker upsert (TemporalChangeVersion)"] += 1
            elif name in BILLED:
                self.actions[BILLED[name]] += 1
            if (
                kind == "activity_task_started_event_attributes"
                and event.activity_task_started_event_attributes.attempt > 1
            ):
                self.actions["activity retry"] += event.activity_task_started_event_attributes.attempt - 1
            if kind == "marker_recorded_event_attributes":
                local_tasks.add(event.marker_recorded_event_attributes.workflow_task_completed_event_id)
        self.actions["local activities (per workflow task)"] += len(local_tasks)

    def per_person(self) -> dict:
        n = max(self.people, 1)
        return {
            "events": round(sum(self.events.values()) / n, 1),
            "workflow_tasks": round(self.events["EVENT_TYPE_WORKFLOW_TASK_COMPLETED"] / n, 1),
            "actions": round(sum(self.actions.values()) / n, 1),
            "history_bytes": round(self.history_bytes / n),
            "actions_by_kind": {kind: round(count / n, 2) for kind, count in sorted(self.actions.items())},
            "not_billed": {kind: round(count / n, 2) for kind, count in sorted(self.unbilled.items())},
            "events_by_type": {
                kind.removeprefix("EVENT_TYPE_"): round(count / n, 2) for kind, count in self.events.most_common()
            },
        }


def _patch_marker(event) -> bool:
    """An upsert of TemporalChangeVersion alone: `workflow.patched` recording a patch, which Temporal
    Cloud does not bill."""
    if event.WhichOneof("attributes") != "upsert_workflow_search_attributes_event_attributes":
        return False
    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    return set(fields) == {"TemporalChangeVersion"}


def type_name(value: int) -> str:
    from temporalio.api.enums.v1 import EventType

    return EventType.Name(value)


def record(workdir: Path, count: int) -> dict[str, Tally]:
    """Drive `count` shoppers through a real stack, wait for every journey and hub to finish, and
    count their histories, per route."""
    smtp = start_smtp()
    stack = Stack(workdir, f"sqlite:///{workdir / 'breadcrumb.db'}", smtp=smtp)
    try:
        stack.start_temporal()
        stack.migrate()
        stack.start_api()
        stack.start_worker()
        return asyncio.run(_drive_and_count(stack, shoppers(count, "cap")))
    finally:
        stack.stop()
        smtp.stop()


async def _drive_and_count(stack: Stack, people: list) -> dict[str, Tally]:
    smtp = stack.smtp
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        gate = asyncio.Semaphore(8)

        async def shop(s) -> None:
            async with gate:
                for batch in (browse_batch(s), [identify_message(s)], known_browsing(s)):
                    response = await http.post("/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""))
                    response.raise_for_status()

        await asyncio.gather(*(shop(s) for s in people))
    engine = make_engine(stack.database_url)
    try:
        wait_until(lambda: not outcome(engine, people, smtp.mailbox).missing, 180, "every message to be sent")
        with engine.connect() as conn:
            ids = dict(conn.execute(text("SELECT value, person_id FROM identifiers WHERE kind = 'email'")).all())
            runs = conn.execute(
                text(
                    "SELECT person_id, workflow_id FROM journey_runs WHERE route IN "
                    "('cart_recovery', 'browse_recovery', 'welcome')"
                )
            ).all()
    finally:
        engine.dispose()
    client = await connect(Settings(temporal_address=stack.temporal_address))
    hubs = [hub_id(ids[s.email]) for s in people]

    async def all_closed() -> bool:
        for workflow_id in hubs + [run.workflow_id for run in runs]:
            if (await client.get_workflow_handle(workflow_id).describe()).status.name == "RUNNING":
                return False
        return True

    deadline = time.monotonic() + 120  # hubs complete after the policy's hub_idle_timeout (20 s)
    while not await all_closed():
        if time.monotonic() > deadline:
            raise TimeoutError("hubs or journeys still running after 120 s")
        await asyncio.sleep(1)
    journeys_of: dict[str, list[str]] = {}
    for run in runs:
        journeys_of.setdefault(run.person_id, []).append(run.workflow_id)
    tallies: dict[str, Tally] = {}
    for s in people:
        person = ids[s.email]
        for key in (s.route, "all"):
            tally = tallies.setdefault(key, Tally())
            tally.people += 1
            for workflow_id in [hub_id(person), *journeys_of.get(person, [])]:
                await _add_every_run(client, tally, workflow_id)
    return tallies


async def _add_every_run(client, tally: Tally, workflow_id: str) -> None:
    """The history of the workflow's current run and of every run it continued-as-new from."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    tally.add(history)
    first = history.events[0].workflow_execution_started_event_attributes
    while first.continued_execution_run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=first.continued_execution_run_id).fetch_history()
        tally.add(history)
        first = history.events[0].workflow_execution_started_event_attributes


# --------------------------------------------------------------------------------------------------
# 2. Database bytes per event and per person, on the generated shop of bench/reports.py
# --------------------------------------------------------------------------------------------------


@dataclass
class Footprint:
    backend: str
    events: int
    people: int
    table_bytes: dict[str, int]

    @property
    def per_event(self) -> float:
        return self.table_bytes.get("events", 0) / self.events

    @property
    def per_person(self) -> float:
        return sum(self.table_bytes.get(name, 0) for name in PER_PERSON_TABLES) / self.people


def sqlite_sizes(path: Path) -> dict[str, int]:
    """Bytes per table, its indexes included (SQLite's dbstat virtual table, else the whole file)."""
    conn = sqlite3.connect(path)
    try:
        indexes = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall())
        try:
            rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            page = conn.execute("PRAGMA page_size").fetchone()[0] * conn.execute("PRAGMA page_count").fetchone()[0]
            return {"events": page}
    finally:
        conn.close()
    sizes: Counter = Counter()
    for name, size in rows:
        sizes[indexes.get(name, name)] += size
    return dict(sizes)


def postgres_sizes(url: str) -> dict[str, int]:
    """Bytes per table: a partitioned table's are its partitions' (its own are none), and the
    message-id ledger ingest keeps beside partitioned `events` counts as events'."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text, pg_total_relation_size(c.oid) "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()"
                )
            ).all()
    finally:
        engine.dispose()
    sizes: Counter = Counter()
    for name, size in rows:
        sizes["events" if name == message_ids.TABLE else name] += size
    return dict(sizes)


def footprints(n_events: int, n_people: int, postgres: str | None) -> list[Footprint]:
    from reports import generate, load

    shop = generate(n_events, n_people)
    people = len(shop.people)
    found = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capacity.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        load(engine, shop)
        engine.dispose()
        found.append(Footprint("SQLite", len(shop.events), people, sqlite_sizes(path)))
    if postgres:
        with scratch_database(postgres, "breadcrumb_capacity") as url:
            engine = make_engine(url)
            upgrade(engine)
            load(engine, shop)
            with engine.begin() as conn:  # what ingest writes beside each event (load() inserts events only)
                conn.execute(text(f'INSERT INTO {message_ids.TABLE} SELECT message_id, "timestamp" FROM events'))
            engine.dispose()
            found.append(Footprint("PostgreSQL", len(shop.events), people, postgres_sizes(url)))
    return found


# --------------------------------------------------------------------------------------------------
# 3. The sizing table
# --------------------------------------------------------------------------------------------------


def sizing(temporal: dict, footprint: Footprint) -> list[dict]:
    events_per_shopper = footprint.events / footprint.people  # every event of the shop, anonymous ones included
    rows = []
    for shoppers_a_day in SCALES:
        actions = shoppers_a_day * temporal["actions"]
        events = shoppers_a_day * events_per_shopper
        month_bytes = MONTH_DAYS * (events * footprint.per_event + shoppers_a_day * footprint.per_person)
        rows.append(
            {
                "shoppers_a_day": shoppers_a_day,
                "actions_a_day": round(actions),
                "actions_per_second": round(actions / DAY, 2),
                "actions_a_month": round(actions * MONTH_DAYS),
                "events_a_day": round(events),
                "database_gb_a_month": round(month_bytes / 1e9, 2),
                "history_gb_a_month": round(MONTH_DAYS * shoppers_a_day * temporal["history_bytes"] / 1e9, 2),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=30, help="shoppers of the fresh recording (a third per route)")
    parser.add_argument("--events", type=int, default=200_000, help="events of the generated shop")
    parser.add_argument("--people", type=int, default=10_000, help="identified people of the generated shop")
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is created and dropped)")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tallies = record(Path(folder), args.shoppers)
    console.print(f"recorded {args.shoppers} shoppers in {time.perf_counter() - started:.0f} s")
    per_route = {route: tally.per_person() for route, tally in tallies.items()}
    table = Table(title="Temporal per identified shopper (hub + journeys), fresh recording")
    for column in ("route", "people", "workflows", "events", "workflow tasks", "actions", "history bytes"):
        table.add_column(column, justify="right")
    for route, tally in tallies.items():
        figures = per_route[route]
        table.add_row(
            route,
            str(tally.people),
            f"{tally.workflows / tally.people:.1f}",
            str(figures["events"]),
            str(figures["workflow_tasks"]),
            str(figures["actions"]),
            f"{figures['history_bytes']:,}",
        )
    console.print(table)
    console.print("actions per shopper by kind (all routes):", per_route["all"]["actions_by_kind"])
    console.print("in the histories, not billed:", per_route["all"]["not_billed"])

    started = time.perf_counter()
    found = footprints(args.events, args.people, args.postgres)
    console.print(f"generated and measured the shop in {time.perf_counter() - started:.0f} s")
    table = Table(title=f"Database bytes, generated shop ({found[0].events:,} events, {found[0].people:,} people)")
    for column in ("backend", "events table+indexes", "bytes / event", "other tables / person", "bytes / person"):
        table.add_column(column, justify="right")
    for footprint in found:
        table.add_row(
            footprint.backend,
            f"{footprint.table_bytes.get('events', 0):,}",
            f"{footprint.per_event:.0f}",
            f"{sum(footprint.table_bytes.get(name, 0) for name in PER_PERSON_TABLES):,}",
            f"{footprint.per_person:.0f}",
        )
    console.print(table)

    sized = {footprint.backend: sizing(per_route["all"], footprint) for footprint in found}
    basis = found[-1]
    table = Table(title=f"Sizing (Temporal from the recording, database from {basis.backend}; 30-day month)")
    for column in (
        "identified shoppers/day",
        "actions/day",
        "actions/s (avg)",
        "actions/month",
        "events/day",
        f"{basis.backend} GB/month",
        "history written GB/month",
    ):
        table.add_column(column, justify="right")
    for row in sized[basis.backend]:
        table.add_row(
            f"{row['shoppers_a_day']:,}",
            f"{row['actions_a_day']:,}",
            f"{row['actions_per_second']:,}",
            f"{row['actions_a_month']:,}",
            f"{row['events_a_day']:,}",
            f"{row['database_gb_a_month']:,}",
            f"{row['history_gb_a_month']:,}",
        )
    console.print(table)
    console.print(
        "Not in the histories, so not counted: activity heartbeats (the send activity beats every 2 s "
        "while a delivery runs; a fast relay answers before the first), queries (the admin API's "
        "person view, the Temporal UI's stack view), and the dispatcher's signal retries."
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "shoppers_recorded": args.shoppers,
                "temporal_per_shopper": per_route,
                "database": [
                    {**asdict(f), "bytes_per_event": round(f.per_event), "bytes_per_person": round(f.per_person)}
                    for f in found
                ],
                "sizing": sized,
            },
            indent=2,
        )
    )
    console.print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
