"""Delivers outbox rows to Temporal as hub signals (signal-with-start of `hub-{person_id}`).

Runs inside every API process; rows are leased, so any number of dispatchers can run at once.
While Temporal is unreachable rows stay in the outbox and go out, in order, when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import inf

from prometheus_client import Counter
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from store import outbox
from store.models import OutboxRow, as_utc, utcnow
from store.settings import Settings
from journeys.wakeups import could_change_route
from dispatch.temporal import connect
from workflows import search
from workflows.hub import hub_id
from workflows.models import HubInput, HubSignal

log = logging.getLogger("breadcrumb.dispatcher")
DISPATCHED = Counter("breadcrumb_outbox_dispatched_total", "Outbox rows delivered to Temporal", ["kind"])
FAILED = Counter("breadcrumb_outbox_failures_total", "Outbox deliveries that failed and will be retried")
COALESCED = Counter(
    "breadcrumb_outbox_coalesced_total",
    "Outbox rows settled without a signal of their own (coalesced, or unable to change the route)",
)
DEAD_LETTERED = Counter("breadcrumb_outbox_dead_lettered_total", "Outbox rows given up on after too many failures")
PRUNE_EVERY = 60.0  # seconds between prunes of delivered rows
# Temporal (or the way to it) is down: no row is at fault, so no attempt is counted.
OUTAGE_STATUSES = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN,
}
STOPPING_KINDS = ("absorbed", "erased")  # signal a running hub only; never start one for these
ROUTING_KINDS = ("identified", "merged", "activity")  # wake-ups that make the hub route
PROMPT_KINDS = ("identified", "merged")  # the hub routes on these at once; `activity` it gathers first


def is_outage(exc: BaseException) -> bool:
    """A failure of the connection to Temporal rather than of the row being delivered."""
    if isinstance(exc, RPCError):
        return exc.status in OUTAGE_STATUSES
    return isinstance(exc, (ConnectionError, TimeoutError))


@dataclass
class Delivery:
    """What became of one person's rows in a pass."""

    done: list[OutboxRow]
    failed: OutboxRow | None = None
    error: str = ""
    outage: bool = False
    untried: list[OutboxRow] = field(default_factory=list)
    signals: int = 0  # signals sent for `done`


@dataclass
class Step:
    """One signal to a hub (`signal`, or None when none is needed) and the outbox rows it settles."""

    signal: OutboxRow | None
    rows: list[OutboxRow]


def plan(rows: list[OutboxRow], running: str | None) -> list[Step]:
    """One person's rows (oldest first) as the fewest signals that tell their hub everything.

    The hub re-reads the store whenever it routes, and a signal is sent only after every claimed
    row's event is committed, so one routing wake-up stands for all of them: every `activity` row
    rides on the person's last `identified`/`merged` row when there is one (those route at once),
    else on their last `activity` row; repeats of `identified`/`merged` in a row are sent once. An
    `activity` row that cannot change the route of the journey `running` (`journeys.wakeups`) needs
    no signal at all. Purchases and the stopping kinds are never merged and keep their order."""
    waking = {row.id for row in rows if row.kind == "activity" and could_change_route(row.kind, _event(row), running)}
    carriers = [row for row in rows if row.kind in PROMPT_KINDS] or [row for row in rows if row.id in waking]
    carrier = carriers[-1] if carriers else None
    steps: list[Step] = []
    riders: list[OutboxRow] = []
    for row in rows:
        if row.kind == "activity" and row is not carrier:
            if row.id in waking:
                riders.append(row)
            else:
                steps.append(Step(None, [row]))  # settled without a signal
        elif row.kind in PROMPT_KINDS and steps and steps[-1].signal is not None and steps[-1].signal.kind == row.kind:
            steps[-1].rows.append(row)  # the same wake-up is already queued just before
        else:
            steps.append(Step(row, [row]))
    if riders:
        next(step for step in steps if any(row is carrier for row in step.rows)).rows.extend(riders)
    return steps


def _waited(row: OutboxRow) -> bool:
    """Whether the row was put back before (held for the activity window, or retried)."""
    return as_utc(row.available_at) > as_utc(row.created_at)


def _event(row: OutboxRow) -> str | None:
    return (row.payload or {}).get("event")


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        poll_interval: float = 0.5,
        batch: int = 200,
        client: Client | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = settings.policy
        self.poll_interval = poll_interval
        self.batch = batch
        self.client = client
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)
        self.window = settings.dispatch_activity_window
        self._pruned_at = float("-inf")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: dict[str, float] = {}  # person → when this dispatcher last sent their hub a routing wake-up
        self._next_due = float("inf")  # when the earliest row held back for the activity window comes due
        self._gathering: dict[str, datetime] = {}  # person → when their held browsing comes due

    def nudge(self) -> None:
        """Called (from any thread) after an ingest queued rows: dispatch now instead of at the next poll."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            # Clear before claiming, never after: a nudge that lands while a claim is in flight (its
            # row committed too late for that claim) must trigger another pass, not wait a full poll.
            self._wake.clear()
            try:
                sent = await self.dispatch_once()
            except Exception as exc:  # the store itself failing: log, back off, keep going
                log.exception("dispatch failed: %s", exc)
                sent = 0
            if sent:
                continue
            if self._next_due <= time.monotonic():
                self._next_due = float("inf")  # that pass has happened (this one, or a claim elsewhere)
            wait = min(self.poll_interval, max(0.0, self._next_due - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _connect(self) -> Client:
        if self.client is None:
            self.client = await connect(self.settings)
        return self.client

    async def dispatch_once(self) -> int:
        """One claim: plan each person's rows (`plan`), hold back activity wake-ups of people woken
        within the activity window, signal the rest — people in parallel, at most
        `DISPATCH_CONCURRENCY` at once, each person's signals in order. Returns the rows settled."""
        await self._prune_when_due()
        claim = await asyncio.to_thread(outbox.claim, self.engine, self.batch, self.lease)
        rows = claim.rows
        if not rows:
            return 0
        try:
            client = await self._connect()
        except Exception as exc:
            FAILED.inc(len(rows))
            await asyncio.to_thread(self._release, claim.owner, rows, f"Temporal unreachable: {exc}", False)
            return 0
        by_person: dict[str, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            by_person[row.person_id].append(row)
        browsing = [
            person for person, person_rows in by_person.items() if any(r.kind == "activity" for r in person_rows)
        ]
        running = await asyncio.to_thread(outbox.running_routes, self.engine, browsing) if browsing else {}
        plans = {person: plan(person_rows, running.get(person)) for person, person_rows in by_person.items()}
        held = self._hold_back(plans)
        wall = utcnow()
        gate = asyncio.Semaphore(self.settings.dispatch_concurrency)

        async def deliver(person: str, steps: list[Step]) -> Delivery:
            """In order; at the first failure the rest of this person's rows go back untried."""
            async with gate:
                done: list[OutboxRow] = []
                signals = 0
                for position, step in enumerate(steps):
                    if step.signal is not None:
                        try:
                            gathered = step.signal.kind == "activity" and self._gathered(step.rows, wall)
                            await self._signal(client, step.signal, gathered)
                        except Exception as exc:
                            rest = [row for later in steps[position + 1 :] for row in later.rows]
                            return Delivery(
                                done=done,
                                failed=step.signal,
                                error=str(exc),
                                outage=is_outage(exc),
                                untried=[row for row in step.rows if row is not step.signal] + rest,
                                signals=signals,
                            )
                        signals += 1
                        if step.signal.kind in ROUTING_KINDS:
                            self._woken[person] = time.monotonic()
                    done.extend(step.rows)
                return Delivery(done=done, signals=signals)

        # People with an identify or a merge first: those route at once, browsing is gathered anyway.
        order = sorted(
            plans,
            key=lambda person: (
                not any(step.signal is not None and step.signal.kind in PROMPT_KINDS for step in plans[person])
            ),
        )
        results = await asyncio.gather(*(deliver(person, plans[person]) for person in order))
        done = [row for result in results for row in result.done]
        marked = await asyncio.to_thread(outbox.mark_dispatched, self.engine, claim.owner, outbox.row_ids(done))
        if marked < len(done):
            log.warning(
                "%d delivered outbox rows were no longer ours (lease expired); another dispatcher owns them",
                len(done) - marked,
            )
        for due, rows_due in held.items():
            await asyncio.to_thread(outbox.hand_back, self.engine, claim.owner, rows_due, due=due)
            self._next_due = min(self._next_due, time.monotonic() + (due - utcnow()).total_seconds())
        failures = [result for result in results if result.failed is not None]
        for result in failures:
            FAILED.inc()
            assert result.failed is not None, "failures are the results with a failed row"
            await asyncio.to_thread(self._release, claim.owner, [result.failed], result.error, not result.outage)
            await asyncio.to_thread(outbox.hand_back, self.engine, claim.owner, result.untried)
        if failures:
            log.warning("%d outbox rows will be retried: %s", len(failures), failures[0].error)
            self.client = None if any(result.outage for result in failures) else client
        for row in done:
            DISPATCHED.labels(row.kind).inc()
        COALESCED.inc(len(done) - sum(result.signals for result in results))
        return len(done)

    def _hold_back(self, plans: dict[str, list[Step]]) -> dict[datetime, list[OutboxRow]]:
        """Take out of `plans` the browsing (activity wake-ups) not yet gathered: it goes back to the
        outbox, due when the activity window has passed since the first of those rows was written
        and since this dispatcher last woke the person's hub, and comes out as one signal then,
        marked gathered (`_gathered`), which the hub routes without waiting again. Browsing that
        arrives while a person's rows are held is due with them (`_gathering`), to the instant, so
        one claim takes them all. A row is held once: one that already waited (held before, or
        retried) goes now with whatever rides on it — else a shopper who keeps browsing could be
        held back behind their own wake-ups for ever. Returns the held rows by when they are due."""
        now, wall = time.monotonic(), utcnow()
        self._woken = {person: at for person, at in self._woken.items() if now - at < self.window}
        self._gathering = {person: due for person, due in self._gathering.items() if due > wall}
        held: dict[datetime, list[OutboxRow]] = defaultdict(list)
        if self.window <= 0:
            return held
        for person, steps in plans.items():
            if any(step.signal is not None and step.signal.kind in STOPPING_KINDS for step in steps):
                continue  # (an erased or absorbed person's last wake-ups are not put after the stop)
            waiting = [step for step in steps if step.signal is not None and step.signal.kind == "activity"]
            rows = [row for step in waiting for row in step.rows]
            if not rows or self._gathered(rows, wall):
                continue
            due = self._gathering.get(person)
            if due is None:  # not gathered: the first row is younger than the window, so this is ahead
                first = min(as_utc(row.created_at) for row in rows)
                wait = max(
                    self.window - (wall - first).total_seconds(), self._woken.get(person, -inf) + self.window - now
                )
                due = self._gathering[person] = wall + timedelta(seconds=wait)
            held[due].extend(rows)
            plans[person] = [step for step in steps if not any(step is held_step for held_step in waiting)]
        return held

    def _gathered(self, rows: list[OutboxRow], wall: datetime) -> bool:
        """Whether these browsing rows have had their window: one waited in the outbox already (held
        before, or retried), or the first was written a whole window ago."""
        return self.window > 0 and any(
            _waited(row) or (wall - as_utc(row.created_at)).total_seconds() >= self.window for row in rows
        )

    def _release(self, owner: str, rows: list[OutboxRow], error: str, count_attempt: bool) -> None:
        outbox.release(
            self.engine, owner, rows, error, count_attempt=count_attempt, max_attempts=self.settings.outbox_max_attempts
        )
        dead = [row for row in rows if count_attempt and row.attempts + 1 >= self.settings.outbox_max_attempts]
        for row in dead:
            DEAD_LETTERED.inc()
            log.error(
                "outbox row %s (%s) dead-lettered after %d attempts: %s",
                row.id,
                row.kind,
                row.attempts + 1,
                error[:200],
            )

    async def _prune_when_due(self) -> None:
        """Delivered rows older than the retention go, at most once a minute per dispatcher (in a
        thread: a prune of thousands of rows must not stall the API's event loop)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        pruned = await asyncio.to_thread(
            outbox.prune, self.engine, timedelta(hours=self.settings.outbox_retention_hours)
        )
        if pruned:
            log.info("pruned %d delivered outbox rows", pruned)

    async def _signal(self, client: Client, row: OutboxRow, gathered: bool = False) -> None:
        signal = HubSignal.model_validate({**(row.payload or {}), "gathered": gathered})
        workflow_id = hub_id(row.person_id)
        if row.kind in STOPPING_KINDS:
            try:
                await client.get_workflow_handle(workflow_id).signal(row.kind, signal)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            return
        await client.start_workflow(
            "hub",
            HubInput(person_id=row.person_id, policy=self.policy),
            id=workflow_id,
            task_queue=self.settings.task_queue,
            start_signal=row.kind,
            start_signal_args=[signal],
            search_attributes=search.attributes(row.person_id, status="evaluating"),
            static_summary=f"decision hub for person {row.person_id}",
        )
