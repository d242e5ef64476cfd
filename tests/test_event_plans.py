"""The hot look-ups on events use their indexes: a person's history, the merge of a device's
anonymous events, the unowned events of a user id. Checked on the plan, not on timings (SQLite
`EXPLAIN QUERY PLAN`; PostgreSQL `EXPLAIN` with sequential scans priced out, since on a small table
the planner would rightly prefer one — the question is whether the index fits the query)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from store.models import Event

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
            dict(
                message_id=f"m-{n}",
                type="track",
                name="Product Viewed",
                original_name="Product Viewed",
                anonymous_id=f"device-{who}",
                user_id=f"u-{who}" if n % 5 == 0 else None,
                person_id=f"p-{who}" if owned else None,
                properties={},
                context={},
                timestamp=AT - timedelta(minutes=n),
                received_at=AT,
                source="client",
                missing_properties=[],
            )
        )
    conn.execute(insert(Event.__table__), rows)
    conn.exec_driver_sql("ANALYZE events" if conn.dialect.name == "postgresql" else "ANALYZE")


def _plan(conn, statement) -> str:
    sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))


@pytest.mark.parametrize("query", sorted(HOT))
def test_hot_event_queries_use_their_index(db, query):
    statement, indexes = HOT[query]
    indexes = (indexes,) if isinstance(indexes, str) else indexes
    with db.engine.begin() as conn:
        _store_a_shop(conn)
    with db.engine.connect() as conn:
        plan = _plan(conn, statement)
    assert any(index in plan for index in indexes), f"{query}: no {indexes} in\n{plan}"
    assert "SCAN events\n" not in plan + "\n" and "Seq Scan on events" not in plan, plan
