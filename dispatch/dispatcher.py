"""Delivers outbox rows to Temporal as hub signals (signal-with-start of `hub-{person_id}`).

Runs inside every API process; rows are leased, so any number of dispatchers can run at once.
While Temporal is unreachable rows stay in the outbox and go out, in order, when it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from store import outbox
from store.models import OutboxRow
from store.settings import Settings
from dispatch.temporal import connect
from workflows import search
from workflows.hub import hub_id
from workflows.models import HubInput, HubSignal

log = logging.getLogger("breadcrumb.dispatcher")
DISPATCHED = Counter("breadcrumb_outbox_dispatched_total", "Outbox rows delivered to Temporal", ["kind"])
FAILED = Counter("breadcrumb_outbox_failures_total", "Outbox deliveries that failed and will be retried")
DEAD_LETTERED = Counter("breadcrumb_outbox_dead_lettered_total", "Outbox rows given up on after too many failures")
PRUNE_EVERY = 60.0  # seconds between prunes of delivered rows
# Temporal (or the way to it) is down: no row is at fault, so no attempt is counted.
OUTAGE_STATUSES = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
                   RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN}
STOPPING_KINDS = ("absorbed", "erased")  # signal a running hub only; never start one for these
COALESCED_KINDS = ("identified", "activity", "merged")  # the hub re-reads the store: one wake-up is enough


def is_outage(exc: BaseException) -> bool:
    """A failure of the connection to Temporal rather than of the row being delivered."""
    if isinstance(exc, RPCError):
        return exc.status in OUTAGE_STATUSES
    return isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError))


@dataclass
class Delivery:
    """What became of one person's rows in a pass."""

    done: list[OutboxRow]
    failed: OutboxRow | None = None
    error: str = ""
    outage: bool = False
    untried: list[OutboxRow] = field(default_factory=list)


def coalesce(rows: list[OutboxRow]) -> list[OutboxRow]:
    """One person's rows, oldest first, without repeats of a wake-up that is already queued."""
    kept: list[OutboxRow] = []
    for row in rows:
        if row.kind in COALESCED_KINDS and kept and kept[-1].kind == row.kind:
            continue
        kept.append(row)
    return kept


class Dispatcher:
    def __init__(self, engine: Engine, settings: Settings, poll_interval: float = 0.5, batch: int = 200,
                 client: Client | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = settings.policy
        self.poll_interval = poll_interval
        self.batch = batch
        self.client = client
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)
        self._pruned_at = float("-inf")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

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
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def _connect(self) -> Client:
        if self.client is None:
            self.client = await connect(self.settings)
        return self.client

    async def dispatch_once(self) -> int:
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
        gate = asyncio.Semaphore(32)

        async def deliver(person_rows: list[OutboxRow]) -> Delivery:
            """Oldest first; at the first failure the rest of this person's rows go back untried."""
            async with gate:
                for row in coalesce(person_rows):
                    try:
                        await self._signal(client, row)
                    except Exception as exc:
                        position = next(i for i, r in enumerate(person_rows) if r is row)
                        return Delivery(done=person_rows[:position], failed=row, error=str(exc),
                                        outage=is_outage(exc), untried=person_rows[position + 1:])
                return Delivery(done=person_rows)

        results = await asyncio.gather(*(deliver(r) for r in by_person.values()))
        done = [row for result in results for row in result.done]
        marked = await asyncio.to_thread(outbox.mark_dispatched, self.engine, claim.owner, [r.id for r in done])
        if marked < len(done):
            log.warning("%d delivered outbox rows were no longer ours (lease expired); another dispatcher owns them",
                        len(done) - marked)
        failures = [result for result in results if result.failed is not None]
        for result in failures:
            FAILED.inc()
            await asyncio.to_thread(self._release, claim.owner, [result.failed], result.error, not result.outage)
            await asyncio.to_thread(outbox.hand_back, self.engine, claim.owner, result.untried)
        if failures:
            log.warning("%d outbox rows will be retried: %s", len(failures), failures[0].error)
            self.client = None if any(result.outage for result in failures) else client
        for row in done:
            DISPATCHED.labels(row.kind).inc()
        return len(done)

    def _release(self, owner: str, rows: list[OutboxRow], error: str, count_attempt: bool) -> None:
        outbox.release(self.engine, owner, rows, error, count_attempt=count_attempt,
                       max_attempts=self.settings.outbox_max_attempts)
        dead = [row for row in rows if count_attempt and row.attempts + 1 >= self.settings.outbox_max_attempts]
        for row in dead:
            DEAD_LETTERED.inc()
            log.error("outbox row %s (%s) dead-lettered after %d attempts: %s", row.id, row.kind, row.attempts + 1,
                      error[:200])

    async def _prune_when_due(self) -> None:
        """Delivered rows older than the retention go, at most once a minute per dispatcher (in a
        thread: a prune of thousands of rows must not stall the API's event loop)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        pruned = await asyncio.to_thread(outbox.prune, self.engine,
                                         timedelta(hours=self.settings.outbox_retention_hours))
        if pruned:
            log.info("pruned %d delivered outbox rows", pruned)

    async def _signal(self, client: Client, row: OutboxRow) -> None:
        signal = HubSignal.model_validate(row.payload or {})
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
