"""Back-in-stock and price-drop journeys end to end on Temporal's time-skipping server: a catalogue
write through the store, the outbox dispatched by the real dispatcher, the real hub and journeys,
the store activities on SQLite and PostgreSQL.

Chosen behaviour: when the product sells out again (or, price drop, gets dearer again) before a
later step, the journey ends at that step with the reason ("out of stock", "price back up …");
it does not skip the step and wait for the next one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import pytest_asyncio

from conftest import fresh_database
from journey_harness import identify, now, running_shop, track
from journeys.policy import parse_policy
from store import catalog
from store.db import make_engine, transaction
from store.ingest import ingest
from store.migrate import upgrade
from test_journeys_timeskipping import BASE_POLICY

POLICY = parse_policy(
    {
        **BASE_POLICY,
        "min_hours_between_messages": 0,
        "journeys": {
            **BASE_POLICY["journeys"],
            "back_in_stock": {
                "window": "14d",
                "steps": [
                    {"delay": "5m", "template": "back_in_stock_1"},
                    {"delay": "2d", "template": "back_in_stock_2"},
                ],
            },
            "price_drop": {
                "window": "14d",
                "steps": [{"delay": "5m", "template": "price_drop_1"}, {"delay": "2d", "template": "price_drop_2"}],
            },
        },
    }
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    with fresh_database(request.param, tmp_path, "breadcrumb_catalogue") as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest_asyncio.fixture
async def shop(env, store):
    async with running_shop(env, store, POLICY) as harness:
        yield harness


def put(shop, *items: dict) -> None:
    """A catalogue write as the admin API makes it (triggers on)."""
    with transaction(shop.engine) as session:
        catalog.upsert_admin(session, catalog.validate_items(list(items)), POLICY)


def browsed(shop, anon: str, email: str, *events) -> str:
    """A shopper who browsed days ago and whose hub has long gone quiet (stored without a wake-up)."""
    ingest(shop.engine, [identify(anon, email), *events], POLICY, api="test", endpoint="test", wake_hubs=False)
    return shop.person_id(email)


async def sent(shop, person: str, count: int) -> list:
    """Wait (in real time) until `count` messages of the person are final."""
    for _ in range(300):
        final = [m for m in shop.messages(person) if m.status in ("sent", "skipped", "failed")]
        if len(final) >= count:
            return final
        await asyncio.sleep(0.1)
    raise AssertionError(f"{person}: {shop.messages(person)}")


async def test_back_in_stock_sends_one_message_then_ends_when_stock_is_gone(shop):
    put(shop, {"sku": "SER", "name": "Night Serum", "price": 40, "url": "/products/ser", "in_stock": False})
    person = browsed(
        shop, "a1", "wants@example.com", track("a1", "Product Viewed", sku="SER", price=40, at=now() - timedelta(1))
    )
    put(shop, {"sku": "SER", "in_stock": True})
    await shop.dispatch()
    journey = await shop.journey_of(person)
    assert journey.startswith(f"back_in_stock-{person}-")
    await shop.skip(timedelta(minutes=10))
    [first] = await sent(shop, person, 1)
    assert (first.journey, first.step, first.status) == ("back_in_stock", 1, "sent")
    assert first.subject == "Night Serum is back in stock" and [i["sku"] for i in first.items] == ["SER"]

    put(shop, {"sku": "SER", "in_stock": False})
    result = await shop.journey_result(journey)
    assert result.status == "exited" and result.step == 2
    assert [m.step for m in shop.messages(person)] == [1]
    assert ("exit", "out of stock", "back_in_stock", 2) in shop.log(person)


async def test_price_drop_below_the_seen_price_starts_one_journey_per_person_product_and_window(shop):
    put(shop, {"sku": "SER", "name": "Night Serum", "price": 50})
    dear = browsed(shop, "b1", "dear@example.com", track("b1", "Product Viewed", sku="SER", price=50))
    cheap = browsed(shop, "b2", "cheap@example.com", track("b2", "Product Viewed", sku="SER", price=30))
    put(shop, {"sku": "SER", "price": 40})
    await shop.dispatch()
    journey = await shop.journey_of(dear)
    assert journey.startswith(f"price_drop-{dear}-")
    result = await shop.journey_result(journey)
    assert result.status == "completed"
    assert [(m.journey, m.step, m.status) for m in shop.messages(dear)] == [
        ("price_drop", 1, "sent"),
        ("price_drop", 2, "sent"),
    ]

    # Cheaper still, inside the window: the same person and product get no second journey.
    put(shop, {"sku": "SER", "price": 35})
    await shop.dispatch()
    await shop.until(dear, lambda s: s.status == "already_notified")
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE person_id=:p AND route='price_drop'", p=dear) == 1
    refusals = [reason for kind, reason, journey_name, _ in shop.log(dear) if kind == "skipped"]
    assert len(refusals) == 1 and "product SER already had its price_drop journey" in refusals[0]
    assert shop.scalar("SELECT count(*) FROM outbox WHERE person_id=:p", p=cheap) == 0  # saw it cheaper than now


async def test_price_back_up_ends_the_journey_before_its_next_send(shop):
    put(shop, {"sku": "SER", "name": "Night Serum", "price": 50})
    person = browsed(shop, "c1", "watcher@example.com", track("c1", "Product Viewed", sku="SER", price=50))
    put(shop, {"sku": "SER", "price": 40})
    await shop.dispatch()
    journey = await shop.journey_of(person)
    await shop.skip(timedelta(minutes=10))
    await sent(shop, person, 1)
    put(shop, {"sku": "SER", "price": 55})
    result = await shop.journey_result(journey)
    assert result.status == "exited"
    assert ("exit", "price back up (55 ≥ 50 they saw)", "price_drop", 2) in shop.log(person)


async def test_a_buyer_of_the_product_never_enters(shop):
    put(shop, {"sku": "SER", "name": "Night Serum", "price": 40, "in_stock": False})
    buyer = browsed(
        shop,
        "d1",
        "bought@example.com",
        track("d1", "Product Viewed", sku="SER", at=now() - timedelta(2)),
        track("d1", "Order Completed", order_id="o-1", products=[{"sku": "SER", "price": 40}], at=now() - timedelta(1)),
    )
    past_customer = browsed(
        shop,
        "d2",
        "customer@example.com",
        track("d2", "Order Completed", order_id="o-2", products=[{"sku": "MASK"}], at=now() - timedelta(3)),
        track("d2", "Product Viewed", sku="SER", at=now() - timedelta(1)),
    )
    put(shop, {"sku": "SER", "in_stock": True})
    await shop.dispatch()
    journey = await shop.journey_of(past_customer)  # bought something else before: welcome back
    await shop.journey_result(journey)
    assert [m.status for m in shop.messages(past_customer)] == ["sent", "sent"]
    assert shop.scalar("SELECT count(*) FROM outbox WHERE person_id=:p", p=buyer) == 0
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE person_id=:p", p=buyer) == 0


async def test_a_running_cart_recovery_is_not_pre_empted_and_the_reason_is_kept(shop):
    put(shop, {"sku": "SER", "name": "Night Serum", "price": 40, "in_stock": False})
    await shop.shop(
        track("e1", "Product Viewed", sku="SER", price=40),
        track("e1", "Added to Cart", cart_id="c-e1", sku="CREAM", price=80),
        identify("e1", "carting@example.com"),
    )
    person = shop.person_id("carting@example.com")
    cart = await shop.journey_of(person)
    assert cart.startswith("cart_recovery-")
    put(shop, {"sku": "SER", "in_stock": True})
    await shop.dispatch()
    state = await shop.until(person, lambda s: s.decisions[-1].route == "none")
    assert state.journey is not None and state.journey.workflow_id == cart
    assert state.decisions[-1].reason == "back_in_stock of product SER not started: cart_recovery running"
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE person_id=:p AND route='back_in_stock'", p=person) == 0
