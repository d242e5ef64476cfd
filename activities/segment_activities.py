"""The scheduled segment refresh's activity: every person judged on every segment, in batches
(store/segments.refresh_everyone), under the journeys.toml now in force."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from temporalio import activity

from activities.store_activities import PolicySource
from store.segments import refresh_everyone
from store.settings import Settings
from workflows.segment_refresh import SegmentsRefreshed


class SegmentActivities:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.policies = PolicySource(settings)

    @activity.defn(name="refresh_segments")
    def refresh_segments(self, at: datetime) -> SegmentsRefreshed:
        policy = self.policies.current()
        done = refresh_everyone(self.engine, policy.segments, at, progress=activity.heartbeat)
        return SegmentsRefreshed(entered=done.entered, left=done.left, next_in=policy.segment_refresh)

    def all(self) -> list:
        return [self.refresh_segments]
