"""A merge or a delete stops journeys (DESIGN section 4), end to end on Temporal's time-skipping test
server: ingest through the real core, the outbox rows the store writes, the real dispatcher, hub
and journeys, activities against a real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest_asyncio
from sqlmodel import Session, select

from journey_harness import Harness, identify, now, running_shop, track
from store.db import transaction
from store.identity import delete_person
from store.ingest import Incoming
from store.models import OutboxRow
from test_journeys_timeskipping import policy
from workflows.hub import hub_id
from workflows.models import HubState

STOPPED = "person erased or merged into another"


class Recorder:
    """An email channel that keeps what it delivered."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, message) -> None:
        self.delivered.append(message.idempotency_key)


@pytest_asyncio.fixture
async def shop(env, engine):
    channel = Recorder()
    async with running_shop(env, engine, policy(), channels={"email": channel}) as harness:
        harness.channel = channel
        yield harness


def alias(previous_id: str, user_id: str) -> Incoming:
    at = now()
    return Incoming(
        type="alias",
        original_name="Alias",
        previous_id=previous_id,
        user_id=user_id,
        timestamp=at,
        received_at=at,
        trusted=True,
    )  # merging people: the shop's server says so


async def hub_result(shop: Harness, person_id: str) -> HubState:
    handle = shop.client.get_workflow_handle(hub_id(person_id), result_type=HubState)
    async with shop.env.time_skipping_unlocked():
        return await handle.result()


def outbox(shop: Harness, person_id: str) -> list[tuple[str, dict]]:
    """The person's hub signals the store queued and the dispatcher has not delivered yet."""
    with Session(shop.engine) as session:
        rows = session.exec(
            select(OutboxRow)
            .where(OutboxRow.person_id == person_id, OutboxRow.dispatched_at.is_(None))
            .order_by(OutboxRow.id)
        ).all()
    return [(row.kind, row.payload) for row in rows]


async def test_merge_stops_the_secondarys_journey_and_the_primary_re_routes(shop):
    """A browsed enough for browse recovery; B only signed up (welcome). Merging A into B stops A's
    journey and ends A's hub; B's hub re-evaluates the merged history and re-routes welcome → browse."""
    views = [track("dev-a", "Product Viewed", sku=f"SKU-{i}", name=f"Cream {i}", category="skincare") for i in range(6)]
    await shop.shop(
        *views,
        identify("dev-a", "a@example.com", user_id="user-a"),
        identify("dev-b", "b@example.com", user_id="user-b"),
    )
    a, b = shop.person_id("a@example.com"), shop.person_id("b@example.com")
    a_journey, b_journey = await shop.journey_of(a), await shop.journey_of(b)
    assert a_journey.startswith("browse_recovery-") and b_journey.startswith("welcome-")

    shop.ingest(alias("user-a", "user-b"))
    assert [kind for kind, _ in outbox(shop, a)] == ["absorbed"]
    assert [(kind, payload) for kind, payload in outbox(shop, b) if kind == "merged"] == [("merged", {"absorbed": a})]
    assert outbox(shop, a)[0][1] == {"into": b}
    await shop.dispatch()

    stopped = await shop.journey_result(a_journey)
    assert stopped.status == "exited" and f"exit: {STOPPED}" in stopped.notes
    assert (await hub_result(shop, a)).status == "erased"
    state = await shop.until(b, lambda s: s.journey is not None and s.journey.route == "browse_recovery")
    assert "browse intent" in state.decisions[-1].reason
    replaced = await shop.journey_result(b_journey)
    assert replaced.status == "exited"
    assert any(note.startswith("exit: re-routed to browse_recovery") for note in replaced.notes)
    assert shop.channel.delivered == []  # neither journey had reached its first send
    # A's run and its log moved to B with the merge; the exit line written after it goes there too.
    assert shop.scalar("SELECT count(*) FROM journey_log WHERE person_id = :p", p=a) == 0
    assert (
        shop.scalar(
            "SELECT count(*) FROM journey_log WHERE workflow_id = :w AND person_id = :p AND kind = 'exit'",
            w=a_journey,
            p=b,
        )
        == 1
    )


async def test_delete_ends_the_journey_and_nothing_more_is_sent(shop):
    await shop.shop(identify("dev-c", "c@example.com"))
    person = shop.person_id("c@example.com")
    journey = await shop.journey_of(person)
    await shop.skip(timedelta(minutes=6))  # welcome step 1 goes out after 5 minutes
    for _ in range(100):
        if shop.channel.delivered:
            break
        await asyncio.sleep(0.1)
    assert shop.channel.delivered == [f"{journey}:1"]

    with transaction(shop.engine) as session:
        assert delete_person(session, person)
    assert [kind for kind, _ in outbox(shop, person)] == ["erased"]
    await shop.dispatch()

    ended = await shop.journey_result(journey)
    assert ended.status == "exited" and f"exit: {STOPPED}" in ended.notes
    assert (await hub_result(shop, person)).status == "erased"
    assert shop.channel.delivered == [f"{journey}:1"]  # steps 2 and 3 never go out
    assert shop.scalar("SELECT count(*) FROM messages WHERE person_id = :p", p=person) == 0
    # Nothing of theirs is written back after the delete: not even the journey's exit line.
    assert (
        shop.scalar("SELECT count(*) FROM journey_log WHERE person_id = :p OR workflow_id = :w", p=person, w=journey)
        == 0
    )
