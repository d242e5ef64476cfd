"""The activities of a backtest workflow (`simulation/backtest_job.py`), served on the backtest task
queue: the simulation itself (its own time-skipping test servers and shard processes, as `breadcrumb
backtest` runs it) and the store writes of its outcome."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from sqlalchemy import Engine, update
from sqlmodel import col
from temporalio import activity
from temporalio.service import RPCError

from simulation.backtest_job import BacktestFailed, BacktestJob, BacktestProgress
from simulation.simulator import backtest
from store.db import transaction
from store.models import Backtest, utcnow

REPORT_EVERY = timedelta(seconds=1)  # heartbeats, and progress signals when it changed


class BacktestActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> list:
        return [self.run_backtest, self.record_backtest_failure]

    @activity.defn(name="run_backtest")
    async def run_backtest(self, job: BacktestJob) -> None:
        """Simulate, reporting progress to the workflow as it goes, then store the result."""
        latest: list[tuple[int, int]] = []  # the simulator reports from its shard reader threads too

        def progress(done: int, total: int) -> None:
            latest[:] = [(done, total)]

        def simulate() -> dict:
            """On a thread with its own event loop: the simulation's test servers and workers stay
            off the loop that polls this worker's task queues (and, in a journeys worker, hubs)."""
            return asyncio.run(
                backtest(
                    self.engine,
                    job.new,
                    job.current,
                    job.since,
                    limit=job.limit,
                    new_name=job.new_name,
                    current_name=job.current_name,
                    progress=progress,
                    now=job.until,
                )
            )

        reporter = asyncio.create_task(_report(latest))
        try:
            result = await asyncio.to_thread(simulate)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await _signal(latest)
        total = latest[0][1] if latest else 0
        await asyncio.to_thread(self._finish, job.backtest_id, status="done", total=total, result=result)

    @activity.defn(name="record_backtest_failure")
    async def record_backtest_failure(self, failed: BacktestFailed) -> None:
        await asyncio.to_thread(self._finish, failed.backtest_id, status="failed", error=failed.error)

    def _finish(self, backtest_id: str, **outcome: object) -> None:
        with transaction(self.engine) as session:
            session.execute(
                update(Backtest).where(col(Backtest.id) == backtest_id).values(finished_at=utcnow(), **outcome)
            )


async def _report(latest: list[tuple[int, int]]) -> None:
    """Until cancelled: heartbeat (the SDK throttles what reaches the server) and signal each new
    progress to the workflow, whose query the API reads."""
    sent: tuple[int, int] | None = None
    while True:
        await asyncio.sleep(REPORT_EVERY.total_seconds())
        now = latest[0] if latest else None
        activity.heartbeat(*(now or ()))
        if now != sent:
            await _signal(latest)
            sent = now


async def _signal(latest: list[tuple[int, int]]) -> None:
    """Progress for the workflow's query. Only a display: a signal Temporal refuses is logged, and
    the simulation goes on (its outcome is the store's row)."""
    if not latest:
        return
    done, total = latest[0]
    workflow_id = activity.info().workflow_id
    assert workflow_id is not None, "a backtest activity is always a workflow's"
    try:
        await (
            activity.client()
            .get_workflow_handle(workflow_id)
            .signal("progressed", BacktestProgress(done=done, total=total))
        )
    except RPCError as error:
        activity.logger.warning("backtest progress not signalled: %s", error)
