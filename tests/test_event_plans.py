"""The hot look-ups on events use their indexes: a person's history, the merge of a device's
anonymous events, the unowned events of a user id. Checked on the plan, not on timings (SQLite
`EXPLAIN QUERY PLAN`; PostgreSQL `EXPLAIN` with sequential scans priced out, since on a small table
the planner would rightly prefer one — the question is whether the index fits the query). On
PostgreSQL `events` is partitioned by month: each partition's index is named after the parent
index it belongs to before the plan is read, and a look-up bounded in time reads only its months."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from conftest import event_row
from store.models import Event
from store.partitions import Month, create_ahead

AT = datetime(2026, 3, 1, tzinfo=UTC)

HOT = {
    "history of a person": (
        select(Event.id).where(Event.person_id == "p-1").order_by(Event.timestamp, Event.id),
        "ix_events_person_id_timestamp",
    ),
    "merge of a device's anonymous events": (
        update(Event)
        .where(Event.anonymous_id == "device-1", Event.person_id.is_(None), Event.timestamp >= AT - timedelta(days=30))
        .values(person_id="p-1"),
        ("ix_events_unowned_anonymous_id", "ix_events_anonymous_id_timestamp"),
    ),
    "orders of a report period": (
        select(Event.id).where(
            Event.name == "Order Completed", Event.timestamp >= AT - timedelta(days=30), Event.timestamp < AT
        ),
        "ix_events_name_timestamp",
    ),
    "unowned events of a user id": (
        select(Event.id).where(Event.user_id == "u-1", Event.person_id.is_(None)),
        "ix_events_unowned_user_id",
    ),
}


def _store_a_shop(conn, people: int = 400, per_person: int = 10) -> None:
    rows = []
    for n in range(people * per_person):
        who, owned = n % people, n % 3 != 0
        rows.append(
            event_row(
                f"m-{n}",
                AT - timedelta(minutes=n),
                received_at=AT,
                anonymous_id=f"device-{who}",
                user_id=f"u-{who}" if n % 5 == 0 else None,
                person_id=f"p-{who}" if owned else None,
            )
        )
    conn.execute(insert(Event.__table__), rows)
    conn.exec_driver_sql("ANALYZE events" if conn.dialect.name == "postgresql" else "ANALYZE")


def _plan(conn, statement) -> str:
    sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    conn.exec_driver_sql("SET enable_seqscan = off")
    plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))
    conn.exec_driver_sql("RESET enable_seqscan")
    parents = conn.exec_driver_sql(
        "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind = 'i'"
    )
    for partition_index, index in parents:
        plan = re.sub(rf"\b{partition_index}\b", index, plan)
    return plan


@pytest.fixture
def shop(db):
    """A shop's events over the months before AT, in their monthly partitions on PostgreSQL."""
    create_ahead(db.engine, AT - timedelta(days=62), ahead=3)
    with db.engine.begin() as conn:
        _store_a_shop(conn)
    return db


@pytest.mark.parametrize("query", sorted(HOT))
def test_hot_event_queries_use_their_index(shop, query):
    statement, indexes = HOT[query]
    indexes = (indexes,) if isinstance(indexes, str) else indexes
    with shop.engine.connect() as conn:
        plan = _plan(conn, statement)
    assert any(index in plan for index in indexes), f"{query}: no {indexes} in\n{plan}"
    assert "SCAN events\n" not in plan + "\n" and "Seq Scan on events" not in plan, plan


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # partitions are PostgreSQL's
@pytest.mark.parametrize("query", ["merge of a device's anonymous events", "orders of a report period"])
def test_a_look_up_bounded_in_time_reads_only_its_months(shop, query):
    """A merge looks back `merge_window` from the identify, a report reads its period: on PostgreSQL
    the months before them are pruned from the plan."""
    statement, _ = HOT[query]
    with shop.engine.connect() as conn:
        plan = _plan(conn, statement)
    window_starts = Month.of(AT - timedelta(days=30))
    assert f" on {window_starts.name} " in plan, plan
    assert f" on {window_starts.plus(-1).name} " not in plan, plan
