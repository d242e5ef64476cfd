"""Keeping the report roll-ups current: re-compute the share of every person and device a trigger
marked dirty, and move the sums by the difference.

Why marks from triggers, drained here, rather than updating the sums where the writes happen: the
figures of one person depend on each other (an order's last touch on the messages before it, a
cart's recovery on orders after its messages, a cancellation on an order stored weeks ago), and
writes come from ingest, identity merges, the journey activities, deletion and retention, in
several processes. A trigger sees every one of them, in the writer's own transaction (a mark
commits or rolls back with the write), and only inserts (writers never wait on each other).

Why it stays exact under concurrent writers: a refresh reads a batch of marks, re-computes those
owners from the committed rows and deletes *exactly the marks it read* (by id), in one
transaction. A write that commits after the marks were read left a mark the refresh did not read,
so the owner is re-computed next time. Refreshes take turns (a PostgreSQL advisory lock; SQLite has
one writer), so the sums move by each owner's difference once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, exists, func, literal, or_, select, union
from sqlalchemy.orm import aliased

from journeys import taxonomy

from store.db import reading, transaction
from store.models import (
    ReportContribution,
    ReportDirty,
    ReportRollup,
    ReportRollupState,
    as_utc,
    ROLLUP_KEY,
    table_of,
)
from store.reports.rollup_facts import LogLine, PersonHistory, Purchase, Sent, device_rows, person_rows
from store.reports.sql import (
    EVENTS,
    IDENTIFIERS,
    LOG,
    MESSAGES,
    PEOPLE,
    RUNS,
    Dialect,
    message_reason,
    order_revenue,
    reason_category,
)

DIRTY = table_of(ReportDirty)
CONTRIBUTIONS = table_of(ReportContribution)
ROLLUPS = table_of(ReportRollup)
STATE = table_of(ReportRollupState)
VALUES = ("count", "hits", "cart_hits", "prior", "revenue")
BATCH = 2000  # marks per transaction: short write transactions, a few hundred owners each
LOCK_KEY = 7_316_000_016  # PostgreSQL advisory lock: one refresh at a time


def refresh(engine: Engine, window: timedelta, conversion_days: int) -> int:
    """Bring the roll-ups up to date for these settings; returns the owners re-computed. Cheap when
    nothing changed (one indexed look at the marks). Other settings than the stored ones rebuild."""
    done = 0
    with reading(engine).connect() as conn:  # no write lock while nothing changed
        current = _settings_match(conn, window, conversion_days)
        if current and conn.execute(select(DIRTY.c.id).limit(1)).first() is None:
            return done
    if not current:
        _start_rebuild(engine, window, conversion_days)
    while True:
        with transaction(engine) as session:
            conn = session.connection()
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
            marks = conn.execute(select(DIRTY.c.id, DIRTY.c.kind, DIRTY.c.key).order_by(DIRTY.c.id).limit(BATCH)).all()
            if not marks:
                return done
            owners = {(m.kind, m.key) for m in marks}
            _recompute(conn, owners, window, conversion_days)
            conn.execute(delete(DIRTY).where(DIRTY.c.id.in_([m.id for m in marks])))
            done += len(owners)


def _settings_match(conn: Connection, window: timedelta, conversion_days: int) -> bool:
    state = conn.execute(select(STATE).where(STATE.c.id == 1)).first()
    return (
        state is not None
        and state.attribution_window_seconds == window.total_seconds()
        and state.conversion_days == conversion_days
    )


def _start_rebuild(engine: Engine, window: timedelta, conversion_days: int) -> None:
    """Empty the roll-ups and mark every person and unowned device, in one transaction: if the
    rebuild stops half-way, the marks left say what is still to do."""
    with transaction(engine) as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
        if _settings_match(conn, window, conversion_days):
            return  # another refresh started it while this one waited for the lock
        for table in (DIRTY, CONTRIBUTIONS, ROLLUPS, STATE):
            conn.execute(delete(table))
        conn.execute(
            STATE.insert().values(
                id=1,
                attribution_window_seconds=window.total_seconds(),
                conversion_days=conversion_days,
                built_at=datetime.now(UTC),
            )
        )
        people = union(
            select(PEOPLE.c.id),
            select(MESSAGES.c.person_id),
            select(RUNS.c.person_id),
            select(LOG.c.person_id),
            select(func.coalesce(EVENTS.c.person_id, "")).where(EVENTS.c.name == taxonomy.ORDER_COMPLETED),
        ).subquery()
        devices = (
            select(EVENTS.c.anonymous_id)
            .where(EVENTS.c.person_id.is_(None), EVENTS.c.anonymous_id.is_not(None))
            .distinct()
            .subquery()
        )
        conn.execute(DIRTY.insert().from_select(["kind", "key"], select(literal("person"), people.c[0])))
        conn.execute(DIRTY.insert().from_select(["kind", "key"], select(literal("device"), devices.c.anonymous_id)))


def _recompute(conn: Connection, owners: set[tuple[str, str]], window: timedelta, conversion_days: int) -> None:
    people = sorted(key for kind, key in owners if kind == "person")
    devices = sorted(key for kind, key in owners if kind == "device")
    new: list[tuple[str, str, dict[str, Any]]] = []
    for history in load_histories(conn, people):
        new += [("person", history.person_id, row) for row in person_rows(history, window, conversion_days)]
    for device, days in _device_days(conn, devices).items():
        new += [("device", device, row) for row in device_rows(days)]

    delta: dict[tuple, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for kind, keys in (("person", people), ("device", devices)):
        for chunk in _chunks(keys):
            mine = and_(CONTRIBUTIONS.c.owner_kind == kind, CONTRIBUTIONS.c.owner.in_(chunk))
            for old in conn.execute(select(*CONTRIBUTIONS.c[ROLLUP_KEY], *CONTRIBUTIONS.c[VALUES]).where(mine)):
                sums = delta[tuple(old[: len(ROLLUP_KEY)])]
                for i, value in enumerate(old[len(ROLLUP_KEY) :]):
                    sums[i] -= value
            conn.execute(delete(CONTRIBUTIONS).where(mine))
    stored = []
    moment = _moment_for(conn)
    for kind, owner, row in new:
        full = {**_EMPTY, **row}
        key = tuple(full[k] for k in ROLLUP_KEY)
        values = tuple(full[name] for name in VALUES)
        stored.append((*key, *values, kind, owner, moment(full["at"])))
        sums = delta[key]
        for i, value in enumerate(values):
            sums[i] += value
    # Plain DBAPI executemany: a rebuild writes millions of rows, and compiling each through
    # SQLAlchemy costs more than the database's work.
    columns = (*ROLLUP_KEY, *VALUES)
    _executemany(
        conn, f"INSERT INTO report_contributions ({', '.join((*columns, 'owner_kind', 'owner', 'at'))})", stored
    )
    changes = [(*key, *sums) for key, sums in delta.items() if any(sums)]
    added = ", ".join(f"{name} = report_rollups.{name} + excluded.{name}" for name in VALUES)
    _executemany(
        conn,
        f"INSERT INTO report_rollups ({', '.join(columns)})",
        changes,
        f" ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {added}",
    )
    if changes:
        conn.execute(delete(ROLLUPS).where(ROLLUPS.c.count == 0))


def _executemany(conn: Connection, into: str, rows: list[tuple], then: str = "") -> None:
    if rows:
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        conn.exec_driver_sql(f"{into} VALUES ({', '.join([mark] * len(rows[0]))}){then}", rows)


def _moment_for(conn: Connection):
    """How the driver takes a timestamp: SQLite as SQLAlchemy stores it (text, UTC)."""
    if conn.dialect.name == "postgresql":
        return lambda moment: moment
    return lambda moment: moment and as_utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")


_EMPTY: dict[str, Any] = {
    "day": "",
    "journey": "",
    "step": 0,
    "variant": "",
    "outcome": "",
    "reason": "",
    "prev_day": "",
    "end_day": "",
    "after_day": "",
    "count": 0,
    "hits": 0,
    "cart_hits": 0,
    "prior": 0,
    "revenue": 0.0,
    "at": None,
}


def _chunks(keys: list[str], size: int = 500) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def _owned_by(column, chunk: list[str]):
    """`column IN chunk`, where the owner "" stands for the rows with no person."""
    named = [key for key in chunk if key]
    return or_(column.in_(named), column.is_(None)) if "" in chunk else column.in_(named)


def load_histories(conn: Connection, person_ids: list[str]) -> list[PersonHistory]:
    """What `person_rows` needs for these people, in a handful of statements per 500 people."""
    d = Dialect(conn.dialect.name)
    histories: dict[str, PersonHistory] = {pid: PersonHistory(pid) for pid in person_ids}
    for chunk in _chunks(person_ids):
        for pid, identified_at in conn.execute(
            select(PEOPLE.c.id, PEOPLE.c.identified_at).where(PEOPLE.c.id.in_(chunk))
        ):
            histories[pid].identified_at = as_utc(identified_at)
        for pid, route, started_at in conn.execute(
            select(RUNS.c.person_id, RUNS.c.route, RUNS.c.started_at).where(RUNS.c.person_id.in_(chunk))
        ):
            histories[pid].runs.append((route, as_utc(started_at)))
        m = MESSAGES
        for r in conn.execute(
            select(
                m.c.person_id,
                m.c.id,
                m.c.journey,
                m.c.step,
                m.c.status,
                message_reason(m).label("reason"),
                m.c.sent_at,
                m.c.created_at,
                m.c.cart_id,
            ).where(m.c.person_id.in_(chunk))
        ):
            histories[r.person_id].messages.append(
                Sent(r.id, r.journey, r.step, r.status, r.reason, as_utc(r.sent_at), as_utc(r.created_at), r.cart_id)
            )
        for line in conn.execute(
            select(
                LOG.c.person_id,
                LOG.c.id,
                LOG.c.workflow_id,
                LOG.c.journey,
                LOG.c.step,
                LOG.c.kind,
                func.coalesce(reason_category(LOG.c.reason), "other").label("reason"),
                LOG.c.at,
            ).where(LOG.c.person_id.in_(chunk), LOG.c.kind.in_(("waiting", "exit", "skipped")))
        ):
            histories[line.person_id].log.append(
                LogLine(line.id, line.workflow_id, line.journey, line.step, line.kind, line.reason, as_utc(line.at))
            )
        for r in conn.execute(_purchases(d, chunk)):
            histories[r.person_id or ""].purchases.append(
                Purchase(as_utc(r.timestamp), r.cart_id, r.revenue, bool(r.counts))
            )
    return list(histories.values())


def _purchases(d: Dialect, chunk: list[str]):
    """Every stored order of these people (not the other copy of one), and whether it counts: its
    order's first copy, and not cancelled (store/reports/sql.py `orders_cte`)."""
    e, earlier, cancel = EVENTS, aliased(EVENTS, name="earlier"), aliased(EVENTS, name="cancel")
    first_copy = ~exists().where(
        earlier.c.order_id == e.c.order_id,
        earlier.c.name == taxonomy.ORDER_COMPLETED,
        earlier.c.duplicate_of.is_(None),
        or_(earlier.c.timestamp < e.c.timestamp, and_(earlier.c.timestamp == e.c.timestamp, earlier.c.id < e.c.id)),
    )
    cancelled = exists().where(cancel.c.order_id == e.c.order_id, cancel.c.name == taxonomy.ORDER_CANCELLED)
    counts = case((e.c.order_id.is_(None), True), else_=and_(first_copy, ~cancelled))
    return select(
        e.c.person_id,
        e.c.timestamp,
        e.c.cart_id,
        order_revenue(d, e.c.properties).label("revenue"),
        counts.label("counts"),
    ).where(e.c.name == taxonomy.ORDER_COMPLETED, e.c.duplicate_of.is_(None), _owned_by(e.c.person_id, chunk))


def _device_days(conn: Connection, devices: list[str]) -> dict[str, set[str]]:
    """The days each never-claimed device was seen without an owner (claimed devices: none)."""
    d = Dialect(conn.dialect.name)
    days: dict[str, set[str]] = {}
    for chunk in _chunks(devices):
        claimed = exists().where(IDENTIFIERS.c.kind == "anonymous_id", IDENTIFIERS.c.value == EVENTS.c.anonymous_id)
        for device, seen in conn.execute(
            select(EVENTS.c.anonymous_id, d.day(EVENTS.c.timestamp))
            .where(EVENTS.c.person_id.is_(None), EVENTS.c.anonymous_id.in_(chunk), ~claimed)
            .distinct()
        ):
            days.setdefault(device, set()).add(seen)
    return days
