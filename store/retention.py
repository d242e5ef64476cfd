"""Event retention: events older than `BREADCRUMB_EVENT_RETENTION` go, and so do the anonymous
events of devices no identify ever claimed once they are older than the merge window (an identify
attaches a device's events only from `merge_window` before it, so these can never join a person).

Both follow the event's `timestamp` (when it occurred, clamped by ingest to its arrival): that is
the time reports, history loads and merges select on. Rows go in short batches so a large backlog
never holds one long write transaction against ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select

from store.models import Event, Identifier, table_of

EVENTS = table_of(Event)
IDENTIFIERS = table_of(Identifier)
BATCH = 10_000


@dataclass(frozen=True)
class Expired:
    past_retention: int
    never_identified: int


def expire_events(
    engine: Engine, now: datetime, retention: timedelta | None, merge_window: timedelta, batch: int = BATCH
) -> Expired:
    """Delete what retention and the merge window say can go; returns how many events of each kind."""
    e, i = EVENTS, IDENTIFIERS
    old = [e.c.timestamp < now - retention] if retention is not None else None
    claimed = select(i.c.value).where(i.c.kind == "anonymous_id", i.c.value == e.c.anonymous_id).exists()
    unmergeable = [
        e.c.person_id.is_(None),
        e.c.user_id.is_(None),
        e.c.anonymous_id.is_not(None),
        e.c.timestamp < now - merge_window,
        ~claimed,
    ]
    return Expired(
        past_retention=_delete_batched(engine, old, batch) if old else 0,
        never_identified=_delete_batched(engine, unmergeable, batch),
    )


def _delete_batched(engine: Engine, conditions: list, batch: int) -> int:
    total = 0
    while True:
        ids = select(EVENTS.c.id).where(*conditions).limit(batch).scalar_subquery()
        with engine.begin() as conn:
            deleted = conn.execute(delete(EVENTS).where(EVENTS.c.id.in_(ids))).rowcount
        total += deleted
        if deleted < batch:
            return total
