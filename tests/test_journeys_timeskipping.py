"""Every journey path on Temporal's time-skipping test server, with the real workflows, the real
store activities on SQLite and the real outbox dispatcher."""

from __future__ import annotations

from datetime import timedelta

import pytest
import pytest_asyncio

from journeys.policy import parse_policy
from journey_harness import identify, now, running_shop, track

BASE_POLICY = {
    "cart_min_value": 50,
    "browse_intent_threshold": 5,
    "min_hours_between_messages": 20,
    "quiet_hours": {"enabled": False},
    "hub_idle_timeout": "1h",
    "journeys": {
        "cart_recovery": {
            "steps": [
                {"delay": "1h", "template": "cart_recovery_1"},
                {"delay": "23h", "template": "cart_recovery_2"},
                {"delay": "2d", "template": "cart_recovery_3"},
            ]
        },
        "browse_recovery": {
            "steps": [
                {"delay": "2h", "template": "browse_recovery_1"},
                {"delay": "2d", "template": "browse_recovery_2"},
            ]
        },
        "welcome": {
            "steps": [
                {"delay": "5m", "template": "welcome_1"},
                {"delay": "2d", "template": "welcome_2"},
                {"delay": "4d", "template": "welcome_3"},
            ]
        },
    },
}


def policy(**changes):
    data = {**BASE_POLICY, **changes}
    return parse_policy(data)


@pytest_asyncio.fixture
async def shop(env, engine, request):
    marker = request.node.get_closest_marker("policy")
    async with running_shop(env, engine, policy(**(marker.kwargs if marker else {}))) as harness:
        yield harness


async def test_cart_recovery_sends_three_steps(shop):
    await shop.shop(
        track("a1", "Product Added", cart_id="c1", sku="SKU-1", name="Serum", price=40, quantity=2),
        identify("a1", "cart@example.com"),
    )
    person = shop.person_id("cart@example.com")
    journey = await shop.journey_of(person)
    assert journey.startswith("cart_recovery-")
    result = await shop.journey_result(journey)
    assert result.status == "completed"
    messages = shop.messages(person)
    assert [(m.journey, m.step, m.status) for m in messages] == [("cart_recovery", i, "sent") for i in (1, 2, 3)]
    assert [m.idempotency_key for m in messages] == [f"{journey}:{i}" for i in (1, 2, 3)]
    gaps = [(b.sent_at - a.sent_at) for a, b in zip(messages, messages[1:], strict=False)]
    for gap, delay in zip(gaps, [timedelta(hours=23), timedelta(days=2)], strict=False):
        assert delay <= gap < delay + timedelta(minutes=1)
    decision = (await shop.hub_state(person)).decisions[-1]
    assert decision.route == "cart_recovery" and "value 80.00 ≥ 50.00" in decision.reason


async def test_purchase_mid_delay_exits_with_no_further_send(shop):
    await shop.shop(track("a2", "Added to Cart", cart_id="c2", sku="S", price=90), identify("a2", "buyer@example.com"))
    person = shop.person_id("buyer@example.com")
    journey = await shop.journey_of(person)
    await shop.shop(track("a2", "Order Completed", cart_id="c2", order_id="o-2", revenue=90))
    result = await shop.journey_result(journey)
    assert result.status == "exited"
    assert shop.messages(person) == []
    state = await shop.until(person, lambda s: s.conversions == 1)
    assert state.journey is None
    assert any(kind == "exit" and "purchased" in reason for kind, reason, *_ in shop.log(person))
    assert any(kind == "conversion" and "order o-2 (90.00)" in reason for kind, reason, *_ in shop.log(person))


async def test_purchase_before_identify_means_no_journey(shop):
    await shop.shop(track("a3", "Order Completed", order_id="o-3", revenue=30), identify("a3", "early@example.com"))
    person = shop.person_id("early@example.com")
    state = await shop.until(person, lambda s: bool(s.decisions))
    assert state.decisions[-1].route == "none" and "already purchased" in state.decisions[-1].reason
    assert state.journey is None
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE person_id=:p AND status='running'", p=person) == 0


async def test_welcome_series_for_a_plain_signup(shop):
    await shop.shop(identify("a4", "hello@example.com", first_name="Ada"))
    person = shop.person_id("hello@example.com")
    journey = await shop.journey_of(person)
    assert journey.startswith("welcome-")
    result = await shop.journey_result(journey)
    assert result.status == "completed"
    messages = shop.messages(person)
    assert [m.step for m in messages] == [1, 2, 3]
    assert messages[0].subject == "Welcome, Ada!"


async def test_browse_recovery_for_a_browser_with_intent(shop):
    views = [track("a5", "Product Viewed", sku=f"SKU-{i}", name=f"Cream {i}", category="skincare") for i in range(6)]
    await shop.shop(*views, identify("a5", "browser@example.com"))
    person = shop.person_id("browser@example.com")
    journey = await shop.journey_of(person)
    assert journey.startswith("browse_recovery-")
    await shop.journey_result(journey)
    messages = shop.messages(person)
    assert [m.step for m in messages] == [1, 2]
    assert messages[0].subject == "Still thinking about skincare?"
    assert len(messages[0].items) == 3  # a few recent items, not a scroll of everything


async def test_frequency_cap_sleeps_until_it_clears_then_sends(shop):
    await shop.shop(identify("a6", "capped@example.com"))
    person = shop.person_id("capped@example.com")
    first = await shop.journey_of(person)
    await shop.journey_result(first)
    sent = shop.messages(person)
    # Re-enter with a cart: its first step (1 h) would land inside the 20 h cap of the last welcome message.
    await shop.shop(track("a6", "Added to Cart", cart_id="c6", sku="S", price=60))
    journey = (await shop.until(person, lambda s: s.journey is not None and s.journey.route == "cart_recovery")).journey
    await shop.journey_result(journey.workflow_id)
    cart_messages = [m for m in shop.messages(person) if m.journey == "cart_recovery"]
    assert cart_messages, "the capped step must still be sent once the cap clears"
    assert cart_messages[0].sent_at >= sent[-1].sent_at + timedelta(hours=20)
    waits = [reason for kind, reason, journey_name, _ in shop.log(person) if kind == "waiting"]
    assert any(reason.startswith("frequency cap until") for reason in waits)


@pytest.mark.policy(
    quiet_hours={
        "start": (now() + timedelta(minutes=2)).strftime("%H:%M"),
        "end": (now() + timedelta(hours=3)).strftime("%H:%M"),
    }
)
async def test_quiet_hours_defer_the_send_until_the_window_opens(shop):
    await shop.shop(identify("a7", "night@example.com"))
    person = shop.person_id("night@example.com")
    journey = await shop.journey_of(person)
    await shop.journey_result(journey)
    waits = [reason for kind, reason, *_ in shop.log(person) if kind == "waiting"]
    assert waits and waits[0].startswith("quiet hours until")
    first = shop.messages(person)[0]
    assert first.sent_at - first.created_at < timedelta(minutes=1)
    assert first.sent_at >= now() + timedelta(hours=2)  # deferred by the window, not sent at +5 min


async def test_welcome_reroutes_to_cart_recovery_when_a_cart_fills(shop):
    await shop.shop(identify("a8", "switch@example.com"))
    person = shop.person_id("switch@example.com")
    welcome = await shop.journey_of(person)
    assert welcome.startswith("welcome-")
    await shop.shop(track("a8", "Added to Cart", cart_id="c8", sku="S", price=120))
    state = await shop.until(person, lambda s: s.journey is not None and s.journey.route == "cart_recovery")
    old = await shop.journey_result(welcome)
    assert old.status == "exited"
    assert any("re-routed to cart_recovery" in note for note in old.notes)
    assert state.decisions[-1].cart_id == "c8"


async def test_repeated_identify_keeps_one_hub_and_one_journey(shop):
    await shop.shop(identify("a9", "again@example.com"))
    person = shop.person_id("again@example.com")
    await shop.journey_of(person)
    for _ in range(3):
        await shop.shop(identify("a9", "again@example.com"))
    state = await shop.until(person, lambda s: not s.pending)
    assert state.journeys_started == 1
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE person_id=:p", p=person) == 1


async def test_client_and_server_copies_of_a_cart_event_trigger_once(shop):
    await shop.shop(identify("a10", "copies@example.com"))
    person = shop.person_id("copies@example.com")
    await shop.journey_of(person)
    shop.ingest(
        track("a10", "Added to Cart", cart_id="c10", sku="S", price=70, source="client"),
        track("a10", "Added to Cart", cart_id="c10", sku="S", price=70, source="server"),
    )
    assert shop.scalar("SELECT count(*) FROM events WHERE cart_id='c10' AND duplicate_of IS NOT NULL") == 1
    assert shop.scalar("SELECT count(*) FROM outbox WHERE kind='activity' AND person_id=:p", p=person) == 1


async def test_one_cart_recovery_per_cart_id(shop):
    await shop.shop(
        track("a11", "Added to Cart", cart_id="c11", sku="S", price=75), identify("a11", "once@example.com")
    )
    person = shop.person_id("once@example.com")
    first = await shop.journey_of(person)
    await shop.journey_result(first)
    await shop.shop(track("a11", "Added to Cart", cart_id="c11", sku="T", price=20))
    # routed past the recovered cart
    state = await shop.until(person, lambda s: s.journey is not None and s.journey.route == "welcome")
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE route='cart_recovery' AND person_id=:p", p=person) == 1
    assert "open cart c11 already had its recovery" in state.decisions[-1].reason


class FlakyChannel:
    """Fails the first delivery of every message (a transient outage), then delivers."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.delivered: list[str] = []

    def deliver(self, message) -> None:
        self.attempts[message.idempotency_key] = self.attempts.get(message.idempotency_key, 0) + 1
        if self.attempts[message.idempotency_key] == 1:
            raise ConnectionError("mail relay unreachable")
        self.delivered.append(message.idempotency_key)


async def test_retried_send_activity_writes_and_delivers_once(env, engine):
    flaky = FlakyChannel()
    async with running_shop(env, engine, policy(), channels={"email": flaky}) as shop:
        await shop.shop(identify("a12", "retry@example.com"))
        person = shop.person_id("retry@example.com")
        journey = await shop.journey_of(person)
        await shop.journey_result(journey)
    keys = [m.idempotency_key for m in shop.messages(person)]
    assert keys == [f"{journey}:{i}" for i in (1, 2, 3)]
    assert sorted(flaky.delivered) == sorted(keys)  # each delivered exactly once despite the retry
    assert all(count == 2 for count in flaky.attempts.values())


def test_send_step_called_twice_keeps_one_message(engine):
    from sqlalchemy import text

    from activities.store_activities import StoreActivities
    from store.ingest import ingest
    from workflows.models import SendInput

    chosen = policy()
    ingest(engine, [identify("a13", "twice@example.com")], chosen, api="test", endpoint="test")
    with engine.connect() as conn:
        person = conn.execute(text("SELECT person_id FROM identifiers WHERE kind='email'")).scalar()
    activities = StoreActivities(engine)
    send = SendInput(
        workflow_id="welcome-x-1",
        person_id=person,
        route="welcome",
        step=1,
        template="welcome_1",
        channel="email",
        at=now(),
    )
    first, second = activities.send_step(send), activities.send_step(send)
    assert first == second
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar() == 1
