"""Ingest is set-based, on SQLite and PostgreSQL: the SQL statements a request sends are counted
(SQLAlchemy `after_cursor_execute` on the served app's own engine), so a per-message round trip
creeping back in fails here, not only in the benchmark."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event, text

from conftest import fresh_database
from store.db import make_engine
from store.identity import LOCK_IN_ORDER
from store.migrate import upgrade


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, int]]]:
    """Every statement the engine sends while the block runs, with the rows it touched."""
    seen: list[tuple[str, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((" ".join(statement.split()), cursor.rowcount))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", record)


def app_engine(served) -> Engine:
    return served.server.config.app.state.engine


def starting(seen: list[tuple[str, int]], prefix: str) -> list[tuple[str, int]]:
    return [(sql, rows) for sql, rows in seen if sql.upper().startswith(prefix.upper())]


def inserting_events(seen: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The statements that write events (on PostgreSQL they begin with the message-id ledger's CTE)."""
    return [(sql, rows) for sql, rows in seen if "INSERT INTO EVENTS" in sql.upper()]


def test_a_500_message_batch_is_a_handful_of_statements(api, db, served):
    run = uuid.uuid4().hex[:8]
    batch = [
        {
            "type": "track",
            "anonymousId": f"dev-{run}-{i % 50}",
            "messageId": f"{run}-{i}",
            "event": "Product Viewed",
            "properties": {"sku": f"SKU-{i % 40}", "price": 10 + i % 7},
        }
        for i in range(500)
    ]
    with statements(app_engine(served)) as seen:
        response = api.segment("batch", {"batch": batch})
    assert response.status_code == 200 and response.headers["X-Breadcrumb-Stored"] == "500", response.text
    # One bulk INSERT … RETURNING (on PostgreSQL behind the message-id ledger's, in the same statement).
    assert len(inserting_events(seen)) == 1
    assert len(starting(seen, "INSERT INTO products")) == 1  # 40 products, one upsert
    assert len(seen) <= 8, "\n".join(sql[:120] for sql, _ in seen)
    assert db.scalar("SELECT count(*) FROM events") == 500


def test_merging_n_anonymous_events_is_one_update(api, db, served):
    """However much a device did before the identify, its history moves to the person in one UPDATE,
    and the identify costs the same few statements."""
    counts = {}
    for n in (10, 400):
        device = f"merge-{n}"
        api.segment(
            "batch",
            {
                "batch": [
                    {"type": "track", "anonymousId": device, "event": "Collection Viewed", "messageId": f"{device}-{i}"}
                    for i in range(n)
                ]
            },
        )
        with statements(app_engine(served)) as seen:
            response = api.segment("identify", {"anonymousId": device, "traits": {"email": f"{device}@example.com"}})
        assert response.status_code == 200, response.text
        merges = [(sql, rows) for sql, rows in starting(seen, "UPDATE events") if "anonymous_id" in sql]
        assert len(merges) == 1, merges
        if db.engine.dialect.name == "postgresql":  # SQLite counts an UPDATE … RETURNING's rows as they are read
            assert merges[0][1] == n + 1, merges  # the device's events and the identify itself
        counts[n] = len(seen)
        assert db.scalar("SELECT count(*) FROM events WHERE anonymous_id = :d AND person_id IS NULL", d=device) == 0
    assert counts[10] == counts[400], counts


def test_known_people_and_identify_moments_queue_their_signals_in_one_insert(api, db, served):
    """A batch of known people's browsing wakes each hub once (one `activity` row per person, not per
    event), identify moments queue theirs beside it, and the outbox rows are one INSERT."""
    run = uuid.uuid4().hex[:8]
    users = [f"known-{run}-{n}" for n in range(10)]
    for user in users:
        assert api.segment("identify", {"userId": user, "traits": {"email": f"{user}@example.com"}}).status_code == 200
    before = db.scalar("SELECT coalesce(max(id), 0) FROM outbox")
    browsing = [
        {
            "type": "track",
            "userId": users[i % 10],
            "messageId": f"{run}-{i}",
            "event": "Product Viewed",
            "properties": {"sku": f"SKU-{i % 40}"},
        }
        for i in range(300)
    ]
    moments = [
        {
            "type": "identify",
            "anonymousId": f"new-{run}-{n}",
            "messageId": f"{run}-id-{n}",
            "traits": {"email": f"new-{run}-{n}@example.com"},
        }
        for n in range(5)
    ]
    with statements(app_engine(served)) as seen:
        response = api.segment("batch", {"batch": browsing + moments})
    assert response.status_code == 200 and response.headers["X-Breadcrumb-Stored"] == "305", response.text
    assert len(starting(seen, "INSERT INTO outbox")) == 1, "\n".join(sql[:120] for sql, _ in seen)
    assert len(inserting_events(seen)) == 1
    queued = db.rows(
        "SELECT kind, count(*), count(DISTINCT person_id) FROM outbox WHERE id > :n GROUP BY kind", n=before
    )
    assert sorted(tuple(row) for row in queued) == [("activity", 10, 10), ("identified", 5, 5)], queued


def test_a_requests_identify_moments_are_one_statement_per_kind(api, db, served):
    """However many identify moments a request carries, their people are one INSERT, their new
    identifiers another, and the events they take over (each device's history, new user ids' events,
    each moment's own row) one UPDATE; their identifiers' owners were read with the request's."""
    run = uuid.uuid4().hex[:8]
    browsing = [
        {"type": "track", "anonymousId": f"dev-{run}-{n}", "messageId": f"{run}-b-{n}", "event": "Product Viewed"}
        for n in range(5)
    ]
    assert api.segment("batch", {"batch": browsing}).status_code == 200
    moments = [
        {
            "type": "identify",
            "anonymousId": f"dev-{run}-{n}",
            "userId": f"user-{run}-{n}",
            "messageId": f"{run}-id-{n}",
            "traits": {"email": f"user-{run}-{n}@example.com", "phone": "+14155552671" if n == 0 else None},
        }
        for n in range(5)
    ]
    with statements(app_engine(served)) as seen:
        response = api.segment("batch", {"batch": moments})
    assert response.status_code == 200 and response.headers["X-Breadcrumb-Stored"] == "5", response.text
    listing = "\n".join(sql[:120] for sql, _ in seen)
    assert [rows for _, rows in starting(seen, "INSERT INTO people")] == [5], listing
    assert [rows for _, rows in starting(seen, "INSERT INTO identifiers")] == [16], (
        listing
    )  # 5 × (user, email, device) + a phone
    assert len(starting(seen, "UPDATE events")) == 1, listing
    given = db.scalar("SELECT count(*) FROM events WHERE message_id LIKE :m AND person_id IS NOT NULL", m=f"{run}-%")
    assert given == 10  # each device's view and each identify
    if db.engine.dialect.name == "postgresql":  # SQLite counts an UPDATE … RETURNING's rows as they are read
        assert [rows for _, rows in starting(seen, "UPDATE events")] == [10], listing
    assert len(starting(seen, "SELECT i.kind")) == 1, listing  # the request's identifiers and their owners
    assert len(inserting_events(seen)) == 1 and len(starting(seen, "INSERT INTO outbox")) == 1
    assert len(seen) <= 12, listing
    owned = db.rows(
        "SELECT kind, count(DISTINCT person_id) FROM identifiers WHERE value LIKE :v GROUP BY kind", v=f"%{run}%"
    )
    assert sorted(tuple(row) for row in owned) == [("anonymous_id", 5), ("email", 5), ("user_id", 5)]
    for n in range(5):  # each device's history went to the person of its own identify
        people = db.rows(
            "SELECT DISTINCT e.person_id, i.value FROM events e JOIN identifiers i ON i.person_id = e.person_id "
            "AND i.kind = 'user_id' WHERE e.anonymous_id = :d",
            d=f"dev-{run}-{n}",
        )
        assert [tuple(row)[1] for row in people] == [f"user-{run}-{n}"], people


def test_the_up_front_locks_are_taken_after_sorting_them(tmp_path):
    """Deadlock freedom rests on every transaction taking its advisory locks in one global order: the
    plan must evaluate `pg_advisory_xact_lock` above the Sort, not while the rows are produced.
    (Advisory locks are PostgreSQL's; SQLite's writers take turns.)"""
    with fresh_database("postgres", tmp_path, "breadcrumb_lock_order") as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            plan = _plan(engine)
        finally:
            engine.dispose()
    locking = next(i for i, line in enumerate(plan) if "pg_advisory_xact_lock" in line)
    sort = next(i for i, line in enumerate(plan) if "->  Sort" in line)
    assert locking < sort, "\n".join(plan)  # the node that locks sits above the Sort that orders the names


def _plan(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        named = {"kinds": ["email", "user_id"], "values": ["a@b.c", "42"]}
        return [row[0] for row in conn.execute(text(f"EXPLAIN VERBOSE {LOCK_IN_ORDER}"), named)]


def test_copies_and_resent_orders_are_found_with_one_look_up(api, db, served):
    """The storefront's and the server's copies of known people's cart events, and an order sent
    twice, are found by one look-up for the whole request and marked by one UPDATE: each person's
    hub is woken once, the order's purchase signalled once."""
    run = uuid.uuid4().hex[:8]
    users = [f"carts-{run}-{n}" for n in range(10)]
    for user in users:
        assert api.segment("identify", {"userId": user, "traits": {"email": f"{user}@example.com"}}).status_code == 200
    before = db.scalar("SELECT coalesce(max(id), 0) FROM outbox")

    def cart(user: str, source: str) -> dict:
        line = {"cart_id": f"cart-{user}", "sku": "SKU-1", "variant": "M", "quantity": 1}
        return {
            "type": "track",
            "userId": user,
            "messageId": f"{user}-{source}",
            "event": "Added to Cart",
            "properties": line,
            "context": {"source": source},
        }

    order = {"type": "track", "userId": users[0], "event": "Order Completed", "properties": {"order_id": f"o-{run}"}}
    batch = [cart(user, source) for user in users for source in ("client", "server")]
    batch += [{**order, "messageId": f"{run}-order-{n}"} for n in range(2)]
    with statements(app_engine(served)) as seen:
        response = api.server("batch", {"batch": batch})
    assert response.status_code == 200 and response.headers["X-Breadcrumb-Stored"] == "22", response.text
    listing = "\n".join(sql[:120] for sql, _ in seen)
    look_ups = [sql for sql, _ in seen if sql.startswith("SELECT events.id") and "cart_id" in sql]
    assert len(look_ups) == 1, listing
    assert [rows for _, rows in starting(seen, "UPDATE events SET duplicate_of")] == [10], listing
    assert len(seen) <= 10, listing
    copies = db.rows(
        "SELECT message_id, duplicate_of FROM events WHERE duplicate_of IS NOT NULL AND message_id LIKE :r",
        r=f"%{run}%",
    )
    assert sorted(tuple(row) for row in copies) == sorted((f"{user}-server", f"{user}-client") for user in users)
    queued = db.rows(
        "SELECT kind, count(*), count(DISTINCT person_id) FROM outbox WHERE id > :n GROUP BY kind", n=before
    )
    assert sorted(tuple(row) for row in queued) == [("activity", 10, 10), ("purchased", 1, 1)], queued
