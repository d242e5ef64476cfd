"""The send rules the store activities and the what-if simulation share (`journeys/send_rules.py`,
`journeys.attribution.credit`): pure functions, no database, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from journeys import taxonomy as t
from journeys.attribution import Order, Touch, credit
from journeys.history import HistoryEvent, PersonHistory
from journeys.send_rules import SendCheck, check_send, recipient, step_cart

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(name: str, minutes: float, *, cart_id: str | None = None, order_id: str | None = None, **props) -> HistoryEvent:
    return HistoryEvent(
        name=name, timestamp=T0 + timedelta(minutes=minutes), properties=props, cart_id=cart_id, order_id=order_id
    )


def history(*events: HistoryEvent) -> PersonHistory:
    return PersonHistory(person_id="p-1", identified_at=T0, events=list(events))


def check(h: PersonHistory, **overrides) -> SendCheck:
    facts = dict(
        route="welcome",
        channel="email",
        cart_id=None,
        timezone="Europe/Berlin",
        suppressed=None,
        email_unsubscribed=False,
        sms_consent=False,
        reachable=True,
        last_message_at=None,
    )
    return check_send(h, **{**facts, **overrides})


@pytest.mark.parametrize(
    ("channel", "emails", "phones", "expected"),
    [
        ("email", ["a@x", "b@x"], ["+1"], "a@x"),
        ("email", [], ["+1"], None),
        ("sms", ["a@x"], ["+1", "+2"], "+1"),
        ("sms", ["a@x"], [], None),
        ("outbox", ["a@x"], ["+1"], "a@x"),
        ("outbox", [], ["+1"], "+1"),
        ("outbox", [], [], "p-1"),
    ],
)
def test_recipient_per_channel(channel, emails, phones, expected):
    assert recipient(channel, emails, phones, "p-1") == expected


def test_step_cart_reads_only_its_cart_and_every_order():
    added = [
        ev(t.ADDED_TO_CART, 0, cart_id="c1", sku="a", price=60),
        ev(t.ADDED_TO_CART, 1, cart_id="c2", sku="b", price=80),
    ]
    assert step_cart(history(*added), "c1").cart_id == "c1"
    assert step_cart(history(*added), "c2").value == 80
    assert step_cart(history(*added), None).cart_id == "c2"  # no id: whichever cart is open
    # An order without a cart id closes every earlier cart, the step's included.
    assert step_cart(history(*added, ev(t.ORDER_COMPLETED, 2, order_id="o-1")), "c1") is None
    # An order for the other cart leaves this one open.
    assert step_cart(history(*added, ev(t.ORDER_COMPLETED, 2, cart_id="c2", order_id="o-1")), "c1").cart_id == "c1"


def test_check_reports_the_latest_purchase_and_keeps_the_facts():
    last = T0 - timedelta(days=1)
    result = check(history(ev(t.ORDER_COMPLETED, 0, order_id="o-1"), ev(t.ORDER_COMPLETED, 5)), last_message_at=last)
    assert result.purchased == f"order without id at {(T0 + timedelta(minutes=5)).isoformat()}"
    assert (result.timezone, result.last_message_at, result.person_exists) == ("Europe/Berlin", last, True)
    assert check(history(ev(t.ORDER_COMPLETED, 0, order_id="o-1"))).purchased == f"order o-1 at {T0.isoformat()}"
    assert check(history(ev(t.PRODUCT_VIEWED, 0))).purchased is None


def test_suppression_ends_before_any_channel_rule():
    result = check(
        history(), suppressed="email a@x is on the suppression list", email_unsubscribed=True, reachable=False
    )
    assert (result.suppressed, result.channel_blocked) == ("email a@x is on the suppression list", None)


@pytest.mark.parametrize(
    ("channel", "overrides", "blocked"),
    [
        ("email", {"email_unsubscribed": True}, "unsubscribed from email"),
        ("email", {"reachable": False}, "no email address"),
        ("sms", {"sms_consent": False}, "no SMS consent"),
        ("sms", {"sms_consent": True, "reachable": False}, "no phone number"),
        ("sms", {"sms_consent": True, "email_unsubscribed": True}, None),  # an email unsubscribe leaves SMS alone
        ("email", {"sms_consent": False}, None),  # SMS consent is not asked of email
    ],
)
def test_channel_rules_only_block_their_channel(channel, overrides, blocked):
    result = check(history(), channel=channel, **overrides)
    assert (result.channel_blocked, result.suppressed, result.reachable) == (
        blocked,
        None,
        overrides.get("reachable", True),
    )


def test_cart_open_is_only_asked_of_cart_recovery():
    closed = history(ev(t.ADDED_TO_CART, 0, cart_id="c1", sku="a", price=60), ev(t.ORDER_COMPLETED, 1))
    assert check(closed, route="cart_recovery", cart_id="c1").cart_open is False
    assert check(closed, route="browse_recovery", cart_id="c1").cart_open is True
    still_open = history(ev(t.ADDED_TO_CART, 0, cart_id="c1", sku="a", price=60))
    assert check(still_open, route="cart_recovery", cart_id="c1").cart_open is True


def test_credit_goes_to_the_last_touch_in_the_window_and_says_so():
    order = Order(order_key="o-9", person_id="p-1", ordered_at=T0, revenue=42.5)
    touches = [
        Touch(message_id="m1", person_id="p-1", journey="cart_recovery", step=1, sent_at=T0 - timedelta(days=2)),
        Touch(message_id="m2", person_id="p-1", journey="cart_recovery", step=2, sent_at=T0 - timedelta(hours=1)),
        Touch(message_id="m3", person_id="p-1", journey="welcome", step=1, sent_at=T0 + timedelta(minutes=1)),
    ]
    credited = credit(order, touches, timedelta(days=5))
    assert credited.touch.message_id == "m2"
    assert credited.note == "order o-9 (42.50) after cart_recovery step 2"
    missed = credit(Order(order_key="", person_id="p-1", ordered_at=T0, revenue=None), touches, timedelta(minutes=30))
    assert (missed.touch, missed.note) == (None, "order without id (unknown value) with no message in the window")


def test_a_recorded_check_without_an_address_is_a_blocked_channel():
    """Histories from before `reachable` and `channel_blocked` replay to the same end of the journey."""
    old = SendCheck.model_validate({"recipient": None, "purchased": None})
    assert (old.reachable, old.channel_blocked) == (False, "no address for this channel")
    assert SendCheck.model_validate({"recipient": "ann@example.com"}).channel_blocked is None
    blocked = SendCheck.model_validate({"recipient": None, "channel_blocked": "no SMS consent"})
    assert blocked.channel_blocked == "no SMS consent"
