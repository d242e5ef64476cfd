"""A backtest as a Temporal workflow on its own task queue (`backtest`), so the API process never
runs a simulator: `POST /admin/backtest` starts it, `GET /admin/backtest/{id}` reads its progress
(the `progress` query) and, once finished, its outcome from the store.

The heavy work is one activity, `run_backtest` (`simulation/backtest_activities.py`), served by
`breadcrumb worker --queue backtest` or by a journeys worker with BREADCRUMB_WORKER_SERVES_BACKTESTS.
It heartbeats while it simulates and signals its progress here; its result goes to the store
(`backtests` row), not into the workflow's history: the people it lists are named by email.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from journeys.policy import Policy
    from workflows.journey import cause

RUN_BACKTEST: dict[str, Any] = dict(
    start_to_close_timeout=timedelta(hours=12),
    heartbeat_timeout=timedelta(minutes=2),  # a worker that died mid-backtest: another attempt starts over
    retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["SimulationError"]),
)
RECORD: dict[str, Any] = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=50),
)


def job_id(backtest_id: str) -> str:
    return f"backtest-{backtest_id}"


class BacktestJob(BaseModel):
    """What to simulate: everyone identified in [until − since, until), under both policies."""

    backtest_id: str
    new: Policy
    current: Policy
    new_name: str
    current_name: str
    since: timedelta
    until: datetime  # fixed when the API started it: every attempt simulates the same people
    limit: int | None = None


class BacktestProgress(BaseModel):
    status: Literal["running", "done", "failed"] = "running"
    done: int = 0
    total: int | None = None
    error: str | None = None


class BacktestFailed(BaseModel):
    backtest_id: str
    error: str


@workflow.defn(name="backtest")
class Backtest:
    def __init__(self) -> None:
        self.state = BacktestProgress()

    @workflow.run
    async def run(self, job: BacktestJob) -> None:
        try:
            await workflow.execute_activity("run_backtest", job, **RUN_BACKTEST)
        except ActivityError as error:
            self.state.status, self.state.error = "failed", cause(error)
            await workflow.execute_activity(
                "record_backtest_failure", BacktestFailed(backtest_id=job.backtest_id, error=self.state.error), **RECORD
            )
            return
        self.state.status = "done"

    @workflow.signal
    def progressed(self, progress: BacktestProgress) -> None:
        """From the activity: simulations done of the total (never backwards, signals may cross)."""
        if self.state.status == "running" and progress.done >= self.state.done:
            self.state.done, self.state.total = progress.done, progress.total

    @workflow.query
    def progress(self) -> BacktestProgress:
        return self.state
