"""Segment membership as the store judges it, on SQLite and PostgreSQL: generated histories written
as rows, judged a batch at a time, agree with the brute-force judge; stays open and close with
their times; ingest keeps membership live for the people it touches."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func
from sqlmodel import Session, select

from journeys.policy import Policy
from journeys.segments import Condition
from store import segments as store_segments
from store.db import transaction
from store.ingest import ingest
from store.models import Event, Identifier, Person, SegmentMembership, as_utc
from segment_histories import NOW, RawPerson, brute_force, conditions, people
from journey_harness import identify, track


def write(session: Session, index: int, person: RawPerson) -> str:
    person_id = f"p{index:03d}"
    session.add(
        Person(
            id=person_id,
            traits=person.traits,
            email_unsubscribed=person.email_unsubscribed,
            suppressed=person.suppressed,
            sms_consent=person.sms_consent,
            created_at=NOW,
            identified_at=NOW,
            updated_at=NOW,
        )
    )
    for kind, has in (("email", person.has_email), ("phone", person.has_phone)):
        if has:
            session.add(Identifier(person_id=person_id, kind=kind, value=f"{person_id}-{kind}", created_at=NOW))
    for i, e in enumerate(person.events):
        session.add(
            Event(
                message_id=f"{person_id}-m{i:03d}",
                type="track",
                name=e.name,
                original_name=e.name,
                person_id=person_id,
                properties=e.properties,
                timestamp=person.at(e),
                received_at=NOW,
                order_id=e.order_id,
                duplicate_of="the other copy" if e.duplicate else None,
            )
        )
    return person_id


SHOP = st.lists(people, min_size=1, max_size=4)
SEGMENTS = st.dictionaries(st.sampled_from(["a", "b", "c"]), conditions, min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shop=SHOP, segments=SEGMENTS)
def test_the_store_judges_a_batch_as_the_brute_force_does(db, shop, segments):
    db.clean()
    with transaction(db.engine) as session:
        ids = [write(session, i, person) for i, person in enumerate(shop)]
    parsed = {name: Condition.model_validate(c) for name, c in segments.items()}
    with Session(db.engine) as session:
        found = store_segments.members(session, ids + ["gone"], parsed, NOW)
    expected = {
        pid: {n for n, c in segments.items() if brute_force(c, person)} for pid, person in zip(ids, shop, strict=True)
    }
    assert found == expected


def _stays(db) -> list[tuple]:
    with Session(db.engine) as session:
        rows = session.exec(select(SegmentMembership).order_by(SegmentMembership.id)).all()
    return [(r.segment, r.person_id, as_utc(r.entered_at), as_utc(r.left_at)) for r in rows]


def test_refresh_opens_and_closes_stays_with_their_times(db):
    recent = {"recent": Condition.model_validate({"event": {"name": "Product Viewed", "within": "1d"}})}
    with transaction(db.engine) as session:
        pid = write(session, 1, RawPerson(traits={}))
        session.add(
            Event(
                message_id="v1",
                type="track",
                name="Product Viewed",
                original_name="Product Viewed",
                person_id=pid,
                timestamp=NOW,
                received_at=NOW,
            )
        )
    for hours, expected in [(0, (1, 0)), (1, (0, 0)), (25, (0, 1)), (26, (0, 0))]:
        with transaction(db.engine) as session:
            changed = store_segments.refresh(session, [pid], recent, NOW + timedelta(hours=hours))
        assert (changed.entered, changed.left) == expected
    [(segment, person, entered, left)] = _stays(db)
    assert (segment, person) == ("recent", pid)
    assert (entered, left) == (NOW, NOW + timedelta(hours=25))


def test_refresh_everyone_slides_windows_and_closes_what_no_longer_exists(db):
    segments = {
        "recent": Condition.model_validate({"event": {"name": "Product Viewed", "within": "1d"}}),
        "subscribed": Condition.model_validate({"consent": "email"}),
    }
    with transaction(db.engine) as session:
        ids = [write(session, i, RawPerson(traits={})) for i in range(7)]
        for pid in ids[:5]:
            session.add(
                Event(
                    message_id=f"v-{pid}",
                    type="track",
                    name="Product Viewed",
                    original_name="Product Viewed",
                    person_id=pid,
                    timestamp=NOW,
                    received_at=NOW,
                )
            )
        store_segments.refresh(session, ids, segments, NOW)
        session.add(SegmentMembership(segment="retired", person_id=ids[6], entered_at=NOW))
    with Session(db.engine) as session:
        assert store_segments.counts(session, ["recent", "subscribed"]) == {"recent": 5, "subscribed": 7}
    with transaction(db.engine) as session:
        session.delete(session.get(Person, ids[0]))  # merged away or erased
        session.get(Person, ids[6]).email_unsubscribed = True  # an unsubscribe link: not through ingest
    later = NOW + timedelta(days=2)
    changed = store_segments.refresh_everyone(db.engine, segments, later, batch=2)  # several batches
    # four windows slid by, one person left everything (recent + subscribed), one unsubscribed, the
    # retired segment closed
    assert (changed.entered, changed.left) == (0, 4 + 2 + 1 + 1)
    with Session(db.engine) as session:
        assert store_segments.counts(session, ["recent", "subscribed"]) == {"recent": 0, "subscribed": 5}
        open_rows = session.exec(
            select(func.count()).select_from(SegmentMembership).where(SegmentMembership.left_at.is_(None))
        ).one()
        assert open_rows == 5
        page = store_segments.people_in(session, "subscribed", None, 3)
        assert [r["person_id"] for r in page] == ids[1:4]
        second = store_segments.people_in(session, "subscribed", page[-1]["person_id"], 3)
        assert [r["person_id"] for r in second] == ids[4:6]


def test_ingest_keeps_membership_live_in_its_own_transaction(db):
    policy = Policy.model_validate(
        {
            "segments": {
                "serum_fans": {"event": {"name": "Product Viewed", "at_least": 2, "where": {"category": "serum"}}},
                "gold": {"trait": {"key": "tier", "equals": "gold"}},
            }
        }
    )
    ingest(db.engine, [identify("a1", "ann@example.com", tier="gold")], policy, api="test", endpoint="test")
    pid = db.scalar("SELECT person_id FROM identifiers WHERE kind='email'")
    assert db.rows("SELECT segment FROM segment_memberships WHERE left_at IS NULL") == [("gold",)]
    views = [track("a1", "Product Viewed", sku=f"s{i}", category="serum") for i in range(2)]
    ingest(db.engine, views[:1], policy, api="test", endpoint="test")
    assert db.scalar("SELECT count(*) FROM segment_memberships WHERE segment='serum_fans'") == 0
    ingest(
        db.engine, views[1:] + [identify("a1", "ann@example.com", tier="silver")], policy, api="test", endpoint="test"
    )
    assert [
        tuple(r) for r in db.rows("SELECT segment, person_id, left_at IS NULL FROM segment_memberships ORDER BY id")
    ] == [("gold", pid, False), ("serum_fans", pid, True)]
