"""Journeys' `only_if`/`unless` segments: routing falls through a journey the person's segments
rule out (pure), and on Temporal's time-skipping server a buyer is kept out at routing and a person
whose segments change mid-journey is stopped before the next send, with the reason recorded."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest
import pytest_asyncio

from sqlmodel import Session, select

from conftest import settings_for
from journeys import taxonomy as t
from journeys.history import HistoryEvent, PersonHistory
from journeys.policy import parse_policy
from journeys.routing import decide_route
from journeys.send_rules import SendCheck
from journey_harness import HISTORIES, RECORD_TAG, identify, running_shop, track
from test_journeys_timeskipping import BASE_POLICY
from store.models import SegmentMembership, as_utc
from worker.worker import start_segment_refresh
from workflows.journey import reason_to_stop
from workflows.segment_refresh import SEGMENT_REFRESH_ID

SEGMENTS = {
    # Buyers imported from the shop's previous platform carry their order count as a trait.
    "recent_buyers": {"any": [{"orders": {"last_within": "30d"}}, {"trait": {"key": "orders_count", "at_least": 1}}]},
    "vip": {"trait": {"key": "tier", "equals": "gold"}},
}


def segment_policy(**journey_rules):
    journeys = {name: {**steps, **journey_rules.get(name, {})} for name, steps in BASE_POLICY["journeys"].items()}
    return parse_policy({**BASE_POLICY, "segments": SEGMENTS, "journeys": journeys})


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cart_history() -> PersonHistory:
    events = [
        HistoryEvent(name=t.ADDED_TO_CART, timestamp=NOW - timedelta(hours=1), cart_id="c1", properties={"price": 90}),
        *[
            HistoryEvent(name=t.PRODUCT_VIEWED, timestamp=NOW - timedelta(minutes=m), properties={"sku": f"s{m}"})
            for m in range(5, 60, 5)
        ],
    ]
    return PersonHistory(person_id="p1", identified_at=NOW, events=events)


def test_routing_falls_through_the_journeys_a_persons_segments_rule_out():
    policy = segment_policy(
        cart_recovery={"only_if": ["vip"]},
        browse_recovery={"unless": ["recent_buyers"]},
        welcome={"unless": ["recent_buyers"]},
    )
    vip = decide_route(cart_history(), policy, NOW, segments={"vip"})
    assert vip.route == "cart_recovery"
    regular = decide_route(cart_history(), policy, NOW, segments=set())
    assert regular.route == "browse_recovery"
    assert "cart_recovery not allowed: not in segment vip" in regular.reason
    buyer = decide_route(cart_history(), policy, NOW, segments={"recent_buyers"})
    assert buyer.route == "none"
    assert buyer.reason.endswith(
        "but browse_recovery not allowed: in segment recent_buyers, welcome not allowed: in segment recent_buyers"
    )


def test_a_segment_rule_ends_the_journey_after_suppression_and_before_a_closed_cart():
    assert reason_to_stop(SendCheck(segment="left segment vip", cart_open=False), "cart_recovery") == "left segment vip"
    assert reason_to_stop(SendCheck(segment="left segment vip", suppressed="suppressed"), "welcome") == "suppressed"
    assert reason_to_stop(SendCheck(), "welcome") is None


@pytest_asyncio.fixture
async def shop(env, engine, request):
    rules = request.node.get_closest_marker("segment_rules").kwargs
    async with running_shop(env, engine, segment_policy(**rules)) as harness:
        yield harness


@pytest.mark.segment_rules(welcome={"unless": ["recent_buyers"]})
async def test_unless_recent_buyers_keeps_a_buyer_out(shop):
    await shop.shop(identify("b1", "buyer@example.com", orders_count=3), identify("b2", "new@example.com"))
    buyer, newcomer = shop.person_id("buyer@example.com"), shop.person_id("new@example.com")
    state = await shop.until(buyer, lambda s: bool(s.decisions))
    assert state.decisions[-1].route == "none"
    assert state.decisions[-1].reason.endswith("welcome not allowed: in segment recent_buyers")
    assert state.journey is None
    assert await shop.logged(buyer) == [("decision", state.decisions[-1].reason, "none", None)]
    assert (await shop.journey_of(newcomer)).startswith("welcome-")  # the rule keeps out buyers only
    assert shop.rows("SELECT segment, person_id FROM segment_memberships WHERE left_at IS NULL") == [
        ("recent_buyers", buyer)
    ]


@pytest.mark.segment_rules(welcome={"only_if": ["vip"]})
async def test_a_person_who_leaves_an_only_if_segment_is_stopped_before_the_next_send(shop):
    await shop.shop(identify("v1", "gold@example.com", tier="gold"))
    person = shop.person_id("gold@example.com")
    journey = await shop.journey_of(person)
    await shop.skip(timedelta(minutes=10))  # step 1 (after 5 minutes) goes out
    await shop.until(person, lambda s: len(shop.messages(person)) == 1)
    await shop.shop(identify("v1", "gold@example.com", tier="silver"))  # left vip; routing keeps the journey
    result = await shop.journey_result(journey)
    assert (result.status, result.step) == ("exited", 2)
    assert [m.step for m in shop.messages(person)] == [1]
    assert ("exit", "left segment vip", "welcome", 2) in shop.log(person)
    assert shop.rows("SELECT segment, left_at IS NOT NULL FROM segment_memberships WHERE person_id=:p", p=person) == [
        ("vip", True)
    ]


@pytest.mark.segment_rules(welcome={"unless": ["recent_buyers"]})
async def test_a_person_who_enters_an_unless_segment_is_stopped_before_the_next_send(shop):
    await shop.shop(identify("r1", "soon@example.com"))
    person = shop.person_id("soon@example.com")
    journey = await shop.journey_of(person)
    await shop.skip(timedelta(minutes=10))
    await shop.until(person, lambda s: len(shop.messages(person)) == 1)
    await shop.shop(identify("r1", "soon@example.com", orders_count=1))  # bought in the shop's other till
    result = await shop.journey_result(journey)
    assert result.status == "exited"
    assert ("exit", "in segment recent_buyers", "welcome", 2) in shop.log(person)
    assert [m.step for m in shop.messages(person)] == [1]


async def test_the_scheduled_refresh_closes_a_stay_when_its_window_slides_by(env, engine):
    recent = {"recent_viewers": {"event": {"name": "Product Viewed", "within": "1d"}}}
    policy = parse_policy({**BASE_POLICY, "segments": recent, "segment_refresh": "1h"})
    async with running_shop(env, engine, policy) as shop:
        await shop.shop(track("w1", "Product Viewed", sku="s1"), identify("w1", "viewer@example.com"))
        person = shop.person_id("viewer@example.com")
        [(entered, left)] = stays(shop, person)
        assert left is None  # ingest opened the stay in its own transaction
        settings = settings_for(str(engine.url))
        for _ in range(2):  # a second worker's start finds it running
            await start_segment_refresh(env.client, settings)
        await shop.skip(timedelta(days=1, hours=3))
        [(entered_again, left)] = stays(shop, person)
        assert entered_again == entered and left is not None
        assert timedelta(days=1) < left - entered <= timedelta(days=1, hours=1, minutes=1)  # the round after the window
        if RECORD_TAG:  # for tests/test_replay.py, beside the hubs and journeys the harness records
            history = await env.client.get_workflow_handle(SEGMENT_REFRESH_ID).fetch_history()
            (HISTORIES / RECORD_TAG / "scheduled-segment-refresh.json").write_text(history.to_json() + "\n")


def stays(shop, person: str) -> list[tuple]:
    with Session(shop.engine) as session:
        rows = session.exec(select(SegmentMembership).where(SegmentMembership.person_id == person)).all()
    return [(as_utc(r.entered_at), as_utc(r.left_at)) for r in rows]
