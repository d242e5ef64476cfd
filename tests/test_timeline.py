"""The person timeline in the store: Mia's two-device story (tests/timeline_story.py) written by the
real ingest, identity and journey activities, read back in time order on SQLite and PostgreSQL —
with the segments table and message variants (as the other parts of the store will add them) and
without them; pages that walk back through all of it; merges that follow later merges and go with
the person's deletion."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert
from sqlmodel import Session

from conftest import BACKENDS, settings_for
from store.db import transaction
from store.export import person_export
from store.identity import delete_person, merge_people, new_person
from store.models import SegmentMembership, table_of
from store.timeline import Item, Window, page, timeline
from timeline_story import LAPTOP, MILESTONES, PHONE, Story, migrated_store, tell


def read(engine: Engine, person_id: str, **window) -> list[Item]:
    with Session(engine) as session:
        return timeline(session, person_id, Window(**window)).items


def follows(items: list[Item], milestones: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The milestones not found in `items` in the given order (empty: all were, in order)."""
    pending = list(milestones)
    for item in items:
        if pending and item.kind == pending[0][0] and pending[0][1] in item.title:
            pending.pop(0)
    return pending


@pytest.fixture(params=BACKENDS)
def full_store(request, tmp_path) -> Iterator[tuple[Engine, str]]:
    """A fresh store with the segments table and the message variant column."""
    with migrated_store(request.param, tmp_path) as found:
        yield found


def test_a_merged_two_device_shopper_reads_in_the_order_it_happened(full_store):
    engine, url = full_store
    story: Story = tell(engine, settings_for(url))
    items = read(engine, story.person_id)

    assert follows(items, MILESTONES) == []
    assert [i.at for i in items] == sorted(i.at for i in items)
    assert {i.kind for i in items} == {kind for kind, _ in MILESTONES}
    # Events keep the device they came from; the order came from the shop's server.
    browsing = [(i.title, i.device) for i in items if i.kind == "event" and i.source == "client"]
    assert browsing == [
        ("Product Viewed", PHONE),
        ("Added to Cart (sent as Product Added)", PHONE),  # stored under its canonical name
        ("Identify", PHONE),
        ("Product Viewed", LAPTOP),
        ("Identify", LAPTOP),
        ("Alias", None),  # names a user id and a device, from neither
    ]
    (purchase,) = [i for i in items if i.kind == "purchase"]
    assert purchase.source == "server" and purchase.device is None
    assert purchase.detail == f"order 1001 (80.00) after cart_recovery step 1 (message {story.message_id})"
    # The message once, with its status and variant; its `sent` journal line is not repeated.
    (message,) = [i for i in items if i.ref == story.message_id]
    assert message.kind == "message" and message.detail == "sent · variant B"
    merge = next(i for i in items if i.kind == "merge")
    assert merge.ref == story.absorbed_id
    conflict = next(i for i in items if i.kind == "conflict")
    assert conflict.device == LAPTOP and story.ben_id in conflict.detail
    reasons = {i.kind: i.detail for i in items if i.kind in ("guardrail", "journey")}
    assert reasons == {
        "guardrail": "min_hours_between_messages: step 2 (cart_recovery_2) not sent",
        "journey": "purchased",
    }
    routing = [i.detail for i in items if i.kind == "routing"]
    assert routing == ["browse intent 2 below threshold 5", "open cart 80.00 at or above cart_min_value 50"]

    # Ben, who signed up on her laptop, sees the conflict and his own lines — none of hers.
    ben = read(engine, story.ben_id)
    assert [(i.kind, i.title, i.device) for i in ben] == [
        ("event", "Identify", LAPTOP),
        ("identity", "email linked", None),
        ("conflict", "shared device", LAPTOP),
    ]
    assert story.person_id in ben[-1].detail


def test_pages_walk_back_through_the_whole_timeline(full_store):
    engine, url = full_store
    story = tell(engine, settings_for(url))
    everything = read(engine, story.person_id)
    assert len(everything) > 20
    walked: list[Item] = []
    before = None
    with Session(engine) as session:
        for _ in range(20):
            found = timeline(session, story.person_id, Window(before=before, limit=4))
            assert 1 <= len(found.items) <= 4
            walked = found.items + walked
            if found.older is None:
                break
            before = found.older
    assert walked == everything


def at(second: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second)


def line(second: int, title: str, kind: str = "event") -> Item:
    return Item(at=at(second), kind=kind, title=title)


def test_a_page_never_splits_one_instant():
    items = [line(1, "a"), line(2, "b"), line(2, "c"), line(3, "d")]
    assert page(items, 4) == (items, None)
    # The newest two would split second 2: the page keeps only second 3, the next starts at second 2.
    kept, older = page(items, 2)
    assert kept == [line(3, "d")] and older == at(2) + timedelta(microseconds=1)
    kept, older = page([i for i in items if i.at < older], 2)
    assert kept == [line(2, "b"), line(2, "c")] and older == at(2)
    assert page([line(1, "a")], 2) == ([line(1, "a")], None)
    # One instant alone fills the page: shown (to the limit) rather than never.
    crowd = [line(5, str(n)) for n in range(5)]
    kept, older = page([line(1, "a"), *crowd], 3)
    assert len(kept) == 3 and {i.at for i in kept} == {at(5)} and older == at(5)


def test_one_instant_reads_what_the_shopper_did_before_what_the_engine_decided():
    decided, did = line(7, "routed", kind="routing"), line(7, "viewed", kind="event")
    assert page([decided, did], 5)[0] == [did, decided]


def test_merges_follow_later_merges_and_go_with_the_person(db):
    with transaction(db.engine) as session:
        first, second, third = (new_person(session, at(0)).id for _ in range(3))
    with transaction(db.engine) as session:
        merge_people(session, second, third)
    with transaction(db.engine) as session:
        merge_people(session, first, second)
    merged = [i.ref for i in read(db.engine, first) if i.kind == "merge"]
    assert merged == [third, second]
    with Session(db.engine) as session:
        export = person_export(session, first)
    assert export is not None and [m["absorbed_person_id"] for m in export["merges"]] == [third, second]
    with transaction(db.engine) as session:
        assert delete_person(session, first)
    assert db.scalar("SELECT count(*) FROM person_merges") == 0


def test_a_stay_entered_long_ago_and_left_lately_is_among_the_newest(full_store):
    engine, _ = full_store
    stays = [("gold", at(1), at(10)), ("serum_fans", at(2), at(3)), ("lapsed", at(4), at(5))]
    with engine.begin() as conn:
        for segment, entered, left in stays:
            conn.execute(
                insert(table_of(SegmentMembership)).values(
                    segment=segment, person_id="p-1", entered_at=entered, left_at=left
                )
            )
    newest = [(i.at, i.title) for i in read(engine, "p-1", limit=2)]
    assert newest == [(at(5), "left segment lapsed"), (at(10), "left segment gold")]
    assert len(read(engine, "p-1")) == 6
