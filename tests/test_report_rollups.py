"""The journey report from the roll-ups equals the exact queries, on the generated shop of
bench/reports.py, on SQLite and PostgreSQL: over many whole-day periods, with the clock in the
middle of the data (some people still inside their N days), and again after more writes of every
kind (the refresh re-computes only what they touched)."""

from __future__ import annotations

import random
import sys
import uuid
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from bench.reports import START, generate, load  # noqa: E402

from journeys import taxonomy as t  # noqa: E402
from journeys.policy import Policy  # noqa: E402
from store.models import Event, Identifier, JourneyLog, Message, table_of  # noqa: E402
from store.reports import journeys, make_period, rollups  # noqa: E402
from store.reports.rollup_refresh import DIRTY, refresh  # noqa: E402

POLICY = Policy()
NOW = START + timedelta(days=40, hours=13)  # people identified on day 26 are half in, half out of their 14 days
PERIODS = [
    (None, None),
    ("2025-01-10", None),
    (None, "2025-02-03"),
    ("2025-01-05", "2025-01-05"),
    ("2025-01-20", "2025-02-12"),
    ("2025-01-27", "2025-01-28"),  # the identify day the clock cuts through
    ("2025-02-20", "2025-03-20"),
]
EVENTS, MESSAGES, LOG, IDENTIFIERS = (table_of(m) for m in (Event, Message, JourneyLog, Identifier))


@pytest.fixture
def shop(db):
    generated = generate(30_000, 600, seed=7)
    load(db.engine, generated)
    # The bulk load's pooled connection goes back as it came: left in autocommit, it once made a later
    # test's transaction commit statement by statement.
    with db.engine.connect() as conn:
        assert not getattr(conn.connection.driver_connection, "autocommit", False)
    return generated


def assert_rollups_equal_exact(engine, now=NOW) -> None:
    for since, until in PERIODS:
        period = make_period(since, until)
        assert rollups.answers(period, 14)
        got = rollups.summary(engine, POLICY, period, now=now)
        assert got == journeys.summary(engine, POLICY, period, now=now), (since, until)


def test_rollups_equal_the_exact_queries_on_the_generated_shop(db, shop):
    assert_rollups_equal_exact(db.engine)
    figures = rollups.summary(db.engine, POLICY, now=NOW)
    # Not a trivially empty report: every part has figures.
    assert figures["revenue"]["attributed_orders"] > 50 and figures["recovery"]["people_messaged"] > 200
    assert figures["conversion"]["still_in_window"] > 0 and figures["conversion"]["measured"] > 0
    assert figures["messages"]["skipped"] > 0 and figures["funnel"][0]["count"] > figures["funnel"][1]["count"]
    assert_rollups_equal_exact(db.engine, now=START + timedelta(days=75))  # every window over


def test_rollups_stay_exact_after_more_writes_and_refresh_only_what_changed(db, shop):
    assert_rollups_equal_exact(db.engine)
    assert db.scalar("SELECT count(*) FROM report_dirty") == 0
    person = shop.people[5]["id"]
    buyer = next(e for e in shop.events if e["name"] == t.ORDER_COMPLETED and e["duplicate_of"] is None)
    anonymous = next(e for e in shop.events if e["person_id"] is None and e["anonymous_id"])
    with db.engine.begin() as conn:
        day = START + timedelta(days=20, hours=5)
        # A message sent, a failed one, a skip: person 5's messages, recipients, recovery, cohort.
        for step, status in ((1, "sent"), (2, "failed")):
            conn.execute(
                insert(MESSAGES).values(
                    id=str(uuid.uuid4()), person_id=person, workflow_id="w-extra", journey="browse_recovery",
                    step=step, template="t", channel="email", recipient="x@example.com", status=status,
                    reason=None if status == "sent" else "SMTP 550", idempotency_key=f"extra:{step}",
                    created_at=day, sent_at=day if status == "sent" else None,
                )
            )  # fmt: skip
        conn.execute(
            insert(LOG).values(
                person_id=person, workflow_id="w-extra", journey="browse_recovery", step=3, kind="skipped",
                reason="frequency cap until later", at=day,
            )
        )  # fmt: skip
        # An order after it (attributed, recovers the person) and the cancellation of another order.
        conn.execute(
            insert(EVENTS).values(
                message_id="extra-order", type="track", name=t.ORDER_COMPLETED, original_name=t.ORDER_COMPLETED,
                person_id=person, properties={"order_id": "o-extra", "revenue": 77}, order_id="o-extra",
                timestamp=day + timedelta(hours=2), received_at=day,
            )
        )  # fmt: skip
        conn.execute(
            insert(EVENTS).values(
                message_id="extra-cancel", type="track", name=t.ORDER_CANCELLED, original_name=t.ORDER_CANCELLED,
                person_id=buyer["person_id"], properties={"order_id": buyer["order_id"]},
                order_id=buyer["order_id"], timestamp=NOW, received_at=NOW,
            )
        )  # fmt: skip
        # A never-identified device claimed by an identify; a message deleted.
        conn.execute(
            insert(IDENTIFIERS).values(
                person_id=person, kind="anonymous_id", value=anonymous["anonymous_id"], created_at=day
            )
        )
        gone = shop.messages[3]["id"]
        conn.execute(delete(MESSAGES).where(MESSAGES.c.id == gone))
        # A merge moves an order to another person.
        conn.execute(update(EVENTS).where(EVENTS.c.message_id == "extra-order").values(person_id=shop.people[6]["id"]))
    touched = {person, buyer["person_id"], shop.people[6]["id"], shop.messages[3]["person_id"]}
    recomputed = refresh(db.engine, POLICY.attribution_window, 14)
    assert recomputed == len(touched) + 1  # + the device
    assert_rollups_equal_exact(db.engine)
    assert refresh(db.engine, POLICY.attribution_window, 14) == 0  # nothing changed: nothing to do


def test_other_periods_and_windows_are_answered_exactly(db, shop):
    partial = make_period("2025-01-10T12:00:00Z", "2025-02-01")
    assert not rollups.answers(partial, 14) and not rollups.answers(make_period(), 7)
    assert rollups.summary(db.engine, POLICY, partial, now=NOW) == journeys.summary(db.engine, POLICY, partial, now=NOW)
    assert db.scalar("SELECT count(*) FROM report_rollups") == 0  # the exact path built nothing


# PostgreSQL only: SQLite has one writer, so a refresh there waits for the open write to commit.
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_write_committed_during_a_refresh_is_not_lost(db, shop, database):
    """A writer whose transaction is still open while a refresh runs commits a mark the refresh
    never read: the next refresh re-computes that person."""
    refresh(db.engine, POLICY.attribution_window, 14)
    person = shop.people[9]["id"]
    with db.engine.connect() as writer:
        writer.execute(text("BEGIN"))
        writer.execute(
            insert(MESSAGES).values(
                id=str(uuid.uuid4()), person_id=person, workflow_id="w-late", journey="welcome", step=1,
                template="t", channel="email", recipient="x@example.com", status="sent", idempotency_key="late:1",
                created_at=START + timedelta(days=30), sent_at=START + timedelta(days=30),
            )
        )  # fmt: skip
        assert refresh(db.engine, POLICY.attribution_window, 14) == 0  # its mark is not visible yet
        writer.execute(text("COMMIT"))
    with db.engine.connect() as conn:
        assert conn.execute(select(DIRTY.c.key)).scalars().all() == [person]
    assert_rollups_equal_exact(db.engine)


def test_the_report_api_reads_the_rollups(db, shop):
    """`summary()` of the package is the roll-up one; `exact=True` gives the reference."""
    from store import reports

    period = make_period("2025-01-15", "2025-02-15")
    fast = reports.summary(db.engine, POLICY, period, now=NOW)
    assert db.scalar("SELECT count(*) FROM report_rollups") > 0
    assert fast == reports.summary(db.engine, POLICY, period, now=NOW, exact=True)
    assert fast["generated_at"] == NOW.isoformat() and datetime.fromisoformat(fast["generated_at"]).tzinfo == UTC


def test_a_share_keyed_by_its_neighbouring_days_counts_once_in_any_range():
    """The rule behind every distinct figure, without a database: for every range of days, the
    rows chosen are exactly one when any day is inside (the first), none otherwise."""
    from store.reports.rollup_facts import device_rows

    rng = random.Random(3)
    calendar = [f"2025-01-{d:02d}" for d in range(1, 29)]
    for _ in range(300):
        seen = set(rng.sample(calendar, rng.randint(1, 6)))
        first, end = sorted(rng.sample(calendar, 2))
        chosen = [
            r for r in device_rows(seen) if first <= r["day"] < end and (r["prev_day"] == "" or r["prev_day"] < first)
        ]
        assert len(chosen) == int(any(first <= d < end for d in seen))
        if chosen:
            assert chosen[0]["day"] == min(d for d in seen if d >= first)


def test_a_deleted_person_leaves_the_rollups_at_the_next_refresh(db, shop):
    from store.db import transaction
    from store.identity import delete_person

    refresh(db.engine, POLICY.attribution_window, 14)
    person = next(p["id"] for p in shop.people if any(m["person_id"] == p["id"] for m in shop.messages))
    assert db.scalar("SELECT count(*) FROM report_contributions WHERE owner = :p", p=person) > 0
    with transaction(db.engine) as session:
        assert delete_person(session, person)
    assert_rollups_equal_exact(db.engine)
    for table, column in (("report_contributions", "owner"), ("report_dirty", "key")):
        assert db.scalar(f"SELECT count(*) FROM {table} WHERE {column} = :p", p=person) == 0
