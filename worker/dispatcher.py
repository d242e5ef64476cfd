"""Delivers outbox rows to Temporal as hub signals (signal-with-start of `hub-{person_id}`).

Runs inside every API process; rows are leased, so any number of dispatchers can run at once.
While Temporal is unreachable rows stay in the outbox and go out, in order, when it is back."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from prometheus_client import Counter
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from store import outbox
from store.models import OutboxRow
from store.settings import Settings
from worker.temporal import connect
from workflows import search
from workflows.hub import hub_id
from workflows.models import HubInput, HubSignal

log = logging.getLogger("breadcrumb.dispatcher")
DISPATCHED = Counter("breadcrumb_outbox_dispatched_total", "Outbox rows delivered to Temporal", ["kind"])
FAILED = Counter("breadcrumb_outbox_failures_total", "Outbox deliveries that failed and will be retried")
STOPPING_KINDS = ("absorbed", "erased")  # signal a running hub only; never start one for these
COALESCED_KINDS = ("identified", "activity", "merged")  # the hub re-reads the store: one wake-up is enough


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
        rows = await asyncio.to_thread(outbox.claim, self.engine, self.batch)
        if not rows:
            return 0
        try:
            client = await self._connect()
        except Exception as exc:
            FAILED.inc(len(rows))
            await asyncio.to_thread(outbox.release, self.engine, rows, f"Temporal unreachable: {exc}")
            return 0
        by_person: dict[str, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            by_person[row.person_id].append(row)
        gate = asyncio.Semaphore(32)

        async def deliver(person_rows: list[OutboxRow]) -> tuple[list[OutboxRow], list[OutboxRow], str]:
            async with gate:
                for row in coalesce(person_rows):
                    try:
                        await self._signal(client, row)
                    except Exception as exc:
                        return [], person_rows, str(exc)
                return person_rows, [], ""

        results = await asyncio.gather(*(deliver(r) for r in by_person.values()))
        done = [row for ok, _, _ in results for row in ok]
        failed = [(rows_, error) for _, rows_, error in results if rows_]
        await asyncio.to_thread(outbox.mark_dispatched, self.engine, [r.id for r in done])
        for failed_rows, error in failed:
            FAILED.inc(len(failed_rows))
            await asyncio.to_thread(outbox.release, self.engine, failed_rows, error)
        if failed:
            log.warning("%d outbox rows will be retried: %s", sum(len(r) for r, _ in failed), failed[0][1])
            self.client = None if any("unavailable" in e.lower() or "connect" in e.lower() for _, e in failed) else client
        for row in done:
            DISPATCHED.labels(row.kind).inc()
        return len(done)

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
