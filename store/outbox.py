"""The transactional outbox between ingestion and Temporal.

Rows are written in the ingest transaction; dispatchers (one per API process, any number of them)
claim them with a lease — `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's single writer otherwise —
deliver them as hub signals and mark them done. Nothing is lost while Temporal is unreachable.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, update
from sqlmodel import Session, select

from store.db import insert_ignoring_conflicts, reading, transaction
from store.models import OutboxRow, as_utc, utcnow

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(seconds=30)


def signal(session: Session, kind: str, person_id: str, payload: dict | None = None, dedupe_key: str | None = None) -> None:
    """Queue a hub signal in the caller's transaction; a repeated `dedupe_key` is queued once."""
    now = utcnow()
    session.execute(
        insert_ignoring_conflicts(session, OutboxRow.__table__).values(
            kind=kind, person_id=person_id, payload=payload or {}, dedupe_key=dedupe_key,
            created_at=now, available_at=now, attempts=0,
        )
    )


def claim(engine: Engine, limit: int = 200) -> list[OutboxRow]:
    """Lease up to `limit` due rows to this dispatcher, oldest first."""
    now = utcnow()
    with transaction(engine) as session:
        query = (
            select(OutboxRow)
            .where(
                OutboxRow.dispatched_at.is_(None),
                OutboxRow.available_at <= now,
                (OutboxRow.claimed_until.is_(None)) | (OutboxRow.claimed_until < now),
            )
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(session.exec(query).all())
        if rows:
            session.execute(
                update(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])).values(claimed_until=now + LEASE)
            )
        return rows


def mark_dispatched(engine: Engine, ids: list[int]) -> None:
    if not ids:
        return
    with transaction(engine) as session:
        session.execute(
            update(OutboxRow).where(OutboxRow.id.in_(ids)).values(dispatched_at=utcnow(), claimed_until=None)
        )


def release(engine: Engine, rows: list[OutboxRow], error: str) -> None:
    """Give rows back after a failed delivery, each retried after an exponential backoff."""
    if not rows:
        return
    now = utcnow()
    with transaction(engine) as session:
        for row in rows:
            backoff = min(MAX_BACKOFF, timedelta(seconds=0.5 * 2 ** min(row.attempts, 10)))
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id)
                .values(attempts=row.attempts + 1, last_error=error[:2000], claimed_until=None, available_at=now + backoff)
            )


def backlog(engine: Engine) -> tuple[int, float]:
    """Undispatched rows and the age in seconds of the oldest one (the outbox lag)."""
    with reading(engine).connect() as conn:
        count, oldest = conn.execute(
            select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.dispatched_at.is_(None))
        ).one()
    oldest = as_utc(oldest)
    return count, (utcnow() - oldest).total_seconds() if oldest else 0.0
