"""Last-touch attribution is pure: window edges, ties, other people's messages, revenue keys."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.attribution import (
    Order,
    Touch,
    attribute,
    credit_by_journey,
    credit_by_step,
    last_touch,
    order_revenue,
    people_recovered,
    recovery_by_journey,
    revenue_per_recipient,
)
from journeys.policy import Policy

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = Policy().attribution_window


def touch(
    message_id: str,
    hours: float,
    journey: str = "cart_recovery",
    step: int = 1,
    person: str = "p1",
    cart: str | None = None,
) -> Touch:
    return Touch(
        message_id=message_id,
        person_id=person,
        journey=journey,
        step=step,
        sent_at=T0 + timedelta(hours=hours),
        cart_id=cart,
    )


def order(
    hours: float, revenue: float | None = 100.0, person: str = "p1", key: str = "o1", cart: str | None = None
) -> Order:
    return Order(order_key=key, person_id=person, ordered_at=T0 + timedelta(hours=hours), revenue=revenue, cart_id=cart)


def test_default_window_is_five_days():
    assert timedelta(days=5) == WINDOW


def test_the_last_message_before_the_order_wins():
    touches = [touch("m1", 0, "welcome", 1), touch("m2", 10, "cart_recovery", 1), touch("m3", 30, "cart_recovery", 2)]
    found = last_touch(order(40), touches, WINDOW)
    assert found is not None and (found.message_id, found.journey, found.step) == ("m3", "cart_recovery", 2)


def test_messages_after_the_order_do_not_count():
    touches = [touch("m1", 1, "welcome"), touch("after", 5, "cart_recovery")]
    assert last_touch(order(4), touches, WINDOW).message_id == "m1"


def test_window_edges_are_inclusive_and_older_messages_are_out():
    exactly = [touch("edge", -24 * 5)]
    assert last_touch(order(0), exactly, WINDOW).message_id == "edge"
    just_out = [Touch("old", "p1", "welcome", 1, T0 - WINDOW - timedelta(seconds=1))]
    assert last_touch(order(0), just_out, WINDOW) is None
    same_moment = [touch("same", 0)]
    assert last_touch(order(0), same_moment, WINDOW).message_id == "same"


def test_a_configured_window_is_respected():
    touches = [touch("m1", -30)]
    assert last_touch(order(0), touches, timedelta(days=1)) is None
    assert last_touch(order(0), touches, timedelta(days=2)).message_id == "m1"


def test_only_the_buyers_own_messages_count():
    touches = [touch("theirs", -1, person="p2"), touch("mine", -3, person="p1")]
    assert last_touch(order(0, person="p1"), touches, WINDOW).message_id == "mine"
    assert last_touch(order(0, person="p3"), touches, WINDOW) is None


def test_a_tie_goes_to_the_later_step():
    touches = [touch("a", -1, "cart_recovery", 1), touch("b", -1, "cart_recovery", 2)]
    assert last_touch(order(0), touches, WINDOW).step == 2


@pytest.mark.parametrize(
    "properties, expected",
    [
        ({"revenue": 64}, 64.0),
        ({"revenue": 10.5, "total": 99, "value": 1}, 10.5),
        ({"total": 80}, 80.0),
        ({"value": 50.25}, 50.25),
        ({"revenue": "99", "total": None, "value": 50}, 50.0),  # a string is not money
        ({"revenue": True, "value": 7}, 7.0),  # nor is a boolean
        ({"revenue": float("nan"), "total": 3}, 3.0),
        ({}, None),
        (None, None),
    ],
)
def test_revenue_comes_from_revenue_total_or_value(properties, expected):
    assert order_revenue(properties) == expected


def test_credit_per_journey_and_step_and_revenue_per_recipient():
    touches = [
        touch("w1", -100, "welcome", 1),
        touch("c1", -50, "cart_recovery", 1, person="p2"),
        touch("c2", -2, "cart_recovery", 2, person="p2"),
        touch("b1", -1, "browse_recovery", 1, person="p3"),
    ]
    orders = [
        order(0, 30.0, "p1", "o1"),
        order(0, 120.0, "p2", "o2"),
        order(1, None, "p3", "o3"),
        order(0, 500.0, "p4", "o4"),
    ]
    result = attribute(orders, touches, WINDOW)
    assert [a.journey for a in result] == ["welcome", "cart_recovery", "browse_recovery", None]
    by_journey = credit_by_journey(result)
    assert {k: (v.orders, v.revenue) for k, v in by_journey.items()} == {
        "welcome": (1, 30.0),
        "cart_recovery": (1, 120.0),
        "browse_recovery": (1, 0.0),
    }
    by_step = credit_by_step(result)
    assert (by_step[("cart_recovery", 2)].orders, by_step[("cart_recovery", 2)].revenue) == (1, 120.0)
    assert ("cart_recovery", 1) not in by_step
    assert revenue_per_recipient(120.0, 3) == 40.0
    assert revenue_per_recipient(100.0, 3) == 33.33
    assert revenue_per_recipient(10.0, 0) is None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-200, 200), st.integers(1, 3)), max_size=12),
    st.lists(st.tuples(st.integers(0, 3), st.integers(-200, 200)), min_size=1, max_size=6),
)
def test_last_touch_is_the_latest_eligible_message(raw_touches, raw_orders):
    touches = [
        Touch(f"m{i}", f"p{p}", "welcome", step, T0 + timedelta(hours=h)) for i, (p, h, step) in enumerate(raw_touches)
    ]
    for p, h in raw_orders:
        o = order(h, person=f"p{p}")
        found = last_touch(o, touches, WINDOW)
        eligible = [
            t for t in touches if t.person_id == o.person_id and o.ordered_at - WINDOW <= t.sent_at <= o.ordered_at
        ]
        if not eligible:
            assert found is None
        else:
            assert found.sent_at == max(t.sent_at for t in eligible)
            assert all(t.sent_at <= found.sent_at for t in eligible)


def test_a_cart_is_recovered_by_its_persons_order_inside_the_window():
    touches = [
        touch("a1", 0, cart="c-a"),
        touch("a2", 24, step=2, cart="c-a"),  # p1, two messages for c-a
        touch("b1", 0, person="p2", cart="c-b"),
        touch("c1", 0, person="p3", cart="c-c"),
        touch("d1", 0, person="p4", cart="c-d"),
    ]
    orders = [
        order(24 + 5 * 24, cart="c-a"),  # p1: the window runs from the last message: in, by cart id
        order(1, person="p5", key="o2", cart="c-b"),  # someone else with p2's cart id: not p2's recovery
        order(5 * 24 + 1, person="p3", key="o3", cart="c-c"),  # p3's cart, an hour past the window
        order(2, person="p4", key="o4"),
    ]  # p4, no cart id: recovered by person
    got = recovery_by_journey(touches, orders, WINDOW)["cart_recovery"]
    assert (got.messaged, got.recovered, got.matched_by_cart_id) == (4, 2, 1)


def test_an_order_before_the_first_message_recovers_nothing_and_units_are_per_journey():
    touches = [
        touch("w", 0, "welcome"),
        touch("c1", 10, cart="c-1"),
        touch("c2", 10, cart="c-2"),
        touch("b", 0, "browse_recovery", person="p2"),
    ]
    orders = [order(5, key="o1", cart="c-1"), order(-1, person="p2", key="o2")]
    got = recovery_by_journey(touches, orders, WINDOW)
    # p1's order came after the welcome but before either cart message; p2's before the browse one.
    assert {k: (v.messaged, v.recovered) for k, v in got.items()} == {
        "welcome": (1, 1),
        "cart_recovery": (2, 0),
        "browse_recovery": (1, 0),
    }
    overall = people_recovered(touches, orders, WINDOW)
    assert (overall.messaged, overall.recovered) == (2, 1)  # p1 (first message at 0, order at 5), not p2
