"""The transactional outbox between ingestion and Temporal.

Rows are written in the ingest transaction; dispatchers (one per API process, any number of them)
claim them with a lease — `FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's single writer otherwise —
deliver them as hub signals and mark them done. Nothing is lost while Temporal is unreachable.

A claim stamps its rows with an owner token and a lease expiry: a dispatcher that stalls past its
lease loses the rows to the next claim, and its late "done" or "failed" is ignored (it no longer
owns them). A row that keeps failing is dead-lettered after `max_attempts` and waits for an admin
(`GET /admin/outbox`, `POST /admin/outbox/{id}/retry`); it never holds back the same person's later
rows, which the claim takes as they come due. Delivered rows are pruned after a retention.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Engine, delete, func, update
from sqlmodel import Session, col, select

from store.db import reading, transaction
from journeys.wakeups import PRIORITY
from store.dialect import dialect_name, is_postgresql, json_rows, json_rows_insert
from store.models import JourneyRun, OutboxRow, as_utc, table_of, utcnow

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(seconds=30)


def _pending() -> ColumnElement[bool]:
    return col(OutboxRow.dispatched_at).is_(None) & col(OutboxRow.dead_at).is_(None)


def signal(
    session: Session, kind: str, person_id: str, payload: dict | None = None, dedupe_key: str | None = None
) -> None:
    """Queue a hub signal in the caller's transaction; a repeated `dedupe_key` is queued once."""
    queue(session, [(kind, person_id, payload, dedupe_key)])


def queue(session: Session, signals: Sequence[tuple[str, str, dict | None, str | None]]) -> None:
    """Queue (kind, person_id, payload, dedupe_key) hub signals in one INSERT, in order; a repeated
    `dedupe_key` is queued once. The rows travel as one JSON parameter (`store.dialect.json_rows`):
    the statement's text is the same for any number of signals."""
    if not signals:
        return
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "person_id": person_id,
            "payload": payload or {},
            "dedupe_key": dedupe_key,
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        }
        for kind, person_id, payload, dedupe_key in signals
    ]
    session.execute(
        _insert_rows(dialect_name(session)), {"rows": json_rows(session.get_bind().dialect, table_of(OutboxRow), rows)}
    )


QUEUED = ("kind", "person_id", "payload", "dedupe_key", "created_at", "available_at", "attempts")


@cache
def _insert_rows(dialect: str):
    return json_rows_insert(dialect, table_of(OutboxRow), QUEUED).on_conflict_do_nothing()


@dataclass
class Claim:
    """Rows leased to one dispatcher pass; only this owner may complete them."""

    owner: str
    rows: list[OutboxRow]


def claim(engine: Engine, limit: int = 200, lease: timedelta = LEASE) -> Claim:
    """Lease up to `limit` due rows to a new owner token, oldest first."""
    now = utcnow()
    owner = str(uuid.uuid4())
    with transaction(engine) as session:
        query = (
            select(OutboxRow)
            .where(
                _pending(),
                col(OutboxRow.available_at) <= now,
                (col(OutboxRow.claimed_until).is_(None)) | (col(OutboxRow.claimed_until) < now),
            )
            .order_by(col(OutboxRow.id))
            .limit(limit)
        )
        if is_postgresql(engine):
            query = query.with_for_update(skip_locked=True)
        rows = list(session.exec(query).all())
        if rows:
            session.execute(
                update(OutboxRow)
                .where(col(OutboxRow.id).in_(row_ids(rows)))
                .values(claimed_until=now + lease, claim_owner=owner)
            )
        return Claim(owner=owner, rows=rows)


def row_ids(rows: list[OutboxRow]) -> list[int]:
    """The ids of rows read from the outbox (a stored row always has one)."""
    ids = [row.id for row in rows if row.id is not None]
    assert len(ids) == len(rows), "outbox rows are read from the table, so each has an id"
    return ids


def _owned(owner: str, ids: list[int]) -> ColumnElement[bool]:
    return col(OutboxRow.id).in_(ids) & (col(OutboxRow.claim_owner) == owner) & col(OutboxRow.dispatched_at).is_(None)


def mark_dispatched(engine: Engine, owner: str, ids: list[int]) -> int:
    """Mark delivered the rows this owner still holds; returns how many (a lost lease counts none)."""
    if not ids:
        return 0
    with transaction(engine) as session:
        return cast(
            CursorResult[Any],
            session.execute(
                update(OutboxRow)
                .where(_owned(owner, ids))
                .values(dispatched_at=utcnow(), claimed_until=None, claim_owner=None)
            ),
        ).rowcount


def release(
    engine: Engine, owner: str, rows: list[OutboxRow], error: str, *, count_attempt: bool, max_attempts: int
) -> None:
    """Give rows back after a failed delivery, each retried after an exponential backoff. Only a
    failure of the row itself counts as an attempt (`count_attempt`); the `max_attempts`-th is
    dead-lettered. Rows this owner no longer holds are left alone."""
    if not rows:
        return
    now = utcnow()
    with transaction(engine) as session:
        for row in rows:
            attempts = row.attempts + (1 if count_attempt else 0)
            backoff = min(MAX_BACKOFF, timedelta(seconds=0.5 * 2 ** min(attempts, 10)))
            session.execute(
                update(OutboxRow)
                .where(_owned(owner, row_ids([row])))
                .values(
                    attempts=attempts,
                    last_error=error[:2000],
                    claimed_until=None,
                    claim_owner=None,
                    available_at=now + backoff,
                    dead_at=now if attempts >= max_attempts else None,
                )
            )


def hand_back(engine: Engine, owner: str, rows: list[OutboxRow], due: datetime | None = None) -> None:
    """Return rows not tried in this pass, no attempt counted: due again at once (they came after a
    failed row of the same person), or at `due` (held back to be gathered with later ones)."""
    if rows:
        later = {"available_at": due} if due is not None else {}
        with transaction(engine) as session:
            session.execute(
                update(OutboxRow)
                .where(_owned(owner, row_ids(rows)))
                .values(claimed_until=None, claim_owner=None, **later)
            )


def running_routes(engine: Engine, person_ids: list[str]) -> dict[str, str]:
    """The route of each person's running journey (the most urgent, should there be several)."""
    if not person_ids:
        return {}
    with reading(engine).connect() as conn:
        found = conn.execute(
            select(JourneyRun.person_id, JourneyRun.route).where(
                col(JourneyRun.person_id).in_(person_ids), col(JourneyRun.status) == "running"
            )
        ).all()
    routes: dict[str, str] = {}
    for person_id, route in found:
        if person_id not in routes or PRIORITY.get(route, 0) > PRIORITY.get(routes[person_id], 0):
            routes[person_id] = route
    return routes


def dead_letters(engine: Engine, limit: int = 100) -> list[OutboxRow]:
    with Session(reading(engine)) as session:
        return list(
            session.exec(
                select(OutboxRow)
                .where(col(OutboxRow.dead_at).is_not(None), col(OutboxRow.dispatched_at).is_(None))
                .order_by(col(OutboxRow.id))
                .limit(limit)
            ).all()
        )


def retry(engine: Engine, row_id: int) -> bool:
    """Bring a dead-lettered row back: due now, attempts counted from zero. False when no such row."""
    with transaction(engine) as session:
        return bool(
            cast(
                CursorResult[Any],
                session.execute(
                    update(OutboxRow)
                    .where(
                        col(OutboxRow.id) == row_id,
                        col(OutboxRow.dead_at).is_not(None),
                        col(OutboxRow.dispatched_at).is_(None),
                    )
                    .values(dead_at=None, attempts=0, available_at=utcnow(), claimed_until=None, claim_owner=None)
                ),
            ).rowcount
        )


def prune(engine: Engine, retention: timedelta, limit: int = 5000) -> int:
    """Delete up to `limit` rows delivered longer than `retention` ago; returns how many."""
    cutoff = utcnow() - retention
    with transaction(engine) as session:
        old = (
            select(col(OutboxRow.id))
            .where(col(OutboxRow.dispatched_at).is_not(None), col(OutboxRow.dispatched_at) < cutoff)
            .limit(limit)
        )
        return cast(CursorResult[Any], session.execute(delete(OutboxRow).where(col(OutboxRow.id).in_(old)))).rowcount


def follow_merge(session: Session, primary_id: str, secondary_id: str) -> None:
    """The secondary's undelivered rows are the survivor's now (in the merge's transaction)."""
    session.execute(
        update(OutboxRow)
        .where(col(OutboxRow.person_id) == secondary_id, col(OutboxRow.dispatched_at).is_(None))
        .values(person_id=primary_id)
    )


def backlog(engine: Engine) -> tuple[int, float]:
    """Undispatched live rows and the age in seconds of the oldest one (the outbox lag)."""
    with reading(engine).connect() as conn:
        count, oldest = conn.execute(select(func.count(), func.min(OutboxRow.created_at)).where(_pending())).one()
    oldest = as_utc(oldest)
    return count, (utcnow() - oldest).total_seconds() if oldest else 0.0
