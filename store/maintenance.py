"""The daily upkeep of the events table (`breadcrumb maintenance`): partitions created ahead, whole
months past retention dropped, then the rows retention and the merge window still want gone deleted
(the boundary month, DEFAULT, and all of it on SQLite), and the message ids of events retention took
forgotten; last, the report roll-ups brought up to date, so the marks writers leave (one per
anonymous event) never pile up on a shop where nobody opens the report. Every step is idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from store import message_ids, partitions
from store.reports.journeys import DEFAULT_CONVERSION_DAYS
from store.reports.rollup_refresh import refresh
from store.retention import Expired, expire_events


@dataclass(frozen=True)
class Upkeep:
    created: list[str]
    dropped: list[partitions.Dropped]
    expired: Expired
    forgotten: int  # message ids of events past retention
    recomputed: int  # people and devices whose share of the report roll-ups was re-computed


def upkeep(
    engine: Engine, now: datetime, retention: timedelta | None, merge_window: timedelta, attribution_window: timedelta
) -> Upkeep:
    created = partitions.create_ahead(engine, now)
    cutoff = now - retention if retention is not None else None
    dropped = partitions.drop_older_than(engine, cutoff) if cutoff is not None else []
    expired = expire_events(engine, now, retention, merge_window)
    forgotten = message_ids.forget_older_than(engine, cutoff) if cutoff is not None else 0
    recomputed = refresh(engine, attribution_window, DEFAULT_CONVERSION_DAYS)
    return Upkeep(created, dropped, expired, forgotten, recomputed)
