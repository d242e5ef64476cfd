"""The scheduled segment refresh: one long-running workflow (`segment-refresh`) that re-judges
everyone's segments, then sleeps for the policy's `segment_refresh`.

Ingest keeps membership live for the people it touches; this catches the people nothing was
ingested for: a window that slid by (a last order now 31 days old), an unsubscribe link, a merge or
a delete. It continues as new every ROUNDS rounds so its history stays short."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

SEGMENT_REFRESH_ID = "segment-refresh"
ROUNDS = 100


class SegmentsRefreshed(BaseModel):
    """What one round changed (counts only) and when the next is due (the policy's `segment_refresh`)."""

    entered: int
    left: int
    next_in: timedelta


@workflow.defn(name="segment_refresh")
class SegmentRefresh:
    @workflow.run
    async def run(self) -> None:
        for _ in range(ROUNDS):
            done: SegmentsRefreshed = await workflow.execute_activity(
                "refresh_segments",
                workflow.now(),
                result_type=SegmentsRefreshed,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
            )
            workflow.set_current_details(
                f"last round: {done.entered} entered, {done.left} left; next in {done.next_in}"
            )
            await workflow.sleep(done.next_in)
        workflow.continue_as_new()
