"""Last-touch attribution: which message (and so which journey and step) earned an order; and
recovery: which carts and people a journey messaged came back and ordered.

An `Order Completed` goes to the last message the person was sent within the attribution window
(`policy.attribution_window`, default 5 days) before the order; an order with no message in the
window is unattributed. Revenue comes from the order's `revenue`, else `total`, else `value`
property — the first that is a number (strings and booleans are not money; the same rule ingest
uses when it signals the purchase to the hub).

Pure: no I/O, no clock. `store/reports/` runs the same rules as set-based SQL over the whole
store; the tests check the two agree on generated histories, so this module is the readable
specification of the figures the reports print.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Iterable, Mapping

from journeys.history import as_utc

REVENUE_KEYS: tuple[str, ...] = ("revenue", "total", "value")


def order_revenue(properties: Mapping[str, object] | None) -> float | None:
    """The order's value: the first of `revenue`, `total`, `value` that is a finite number."""
    for key in REVENUE_KEYS:
        value = (properties or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


@dataclass(frozen=True)
class Touch:
    """A message that reached the person (status `sent`)."""

    message_id: str
    person_id: str
    journey: str
    step: int
    sent_at: datetime
    cart_id: str | None = None


@dataclass(frozen=True)
class Order:
    order_key: str  # order_id, or the event's message id when the order has none
    person_id: str
    ordered_at: datetime
    revenue: float | None
    cart_id: str | None = None


@dataclass(frozen=True)
class Attribution:
    order: Order
    touch: Touch | None  # None: no message inside the window before the order

    @property
    def journey(self) -> str | None:
        return self.touch.journey if self.touch else None

    @property
    def step(self) -> int | None:
        return self.touch.step if self.touch else None

    @property
    def note(self) -> str:
        """The journal line of the conversion, as the store and a what-if simulation write it."""
        revenue = f"{self.order.revenue:.2f}" if self.order.revenue is not None else "unknown value"
        credited = (
            f"after {self.touch.journey} step {self.touch.step}" if self.touch else "with no message in the window"
        )
        return f"order {self.order.order_key or 'without id'} ({revenue}) {credited}"


def _touch_order(touch: Touch) -> tuple[datetime, int, str]:
    # Latest first; on an exact tie the later step, then the larger id, so the answer never
    # depends on the order rows came back in (the SQL uses the same tie-break).
    return (as_utc(touch.sent_at), touch.step, touch.message_id)


def last_touch(order: Order, touches: Iterable[Touch], window: timedelta) -> Touch | None:
    """The last message to this person sent in [ordered_at − window, ordered_at], or None."""
    ordered_at = as_utc(order.ordered_at)
    eligible = [
        t for t in touches if t.person_id == order.person_id and ordered_at - window <= as_utc(t.sent_at) <= ordered_at
    ]
    return max(eligible, key=_touch_order) if eligible else None


def credit(order: Order, touches: Iterable[Touch], window: timedelta) -> Attribution:
    """One order's attribution (the last touch inside the window)."""
    return Attribution(order, last_touch(order, touches, window))


def attribute(orders: Iterable[Order], touches: Iterable[Touch], window: timedelta) -> list[Attribution]:
    """Attribute every order (last touch inside the window)."""
    by_person: dict[str, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_person[touch.person_id].append(touch)
    return [credit(order, by_person.get(order.person_id, ()), window) for order in orders]


@dataclass
class Credit:
    orders: int = 0
    revenue: float = 0.0


def credit_by_journey(attributions: Iterable[Attribution]) -> dict[str, Credit]:
    """Attributed orders and revenue per journey (unattributed orders are left out)."""
    totals: dict[str, Credit] = defaultdict(Credit)
    for a in attributions:
        if a.touch is not None:
            credit = totals[a.touch.journey]
            credit.orders += 1
            credit.revenue += a.order.revenue or 0.0
    return dict(totals)


def credit_by_step(attributions: Iterable[Attribution]) -> dict[tuple[str, int], Credit]:
    totals: dict[tuple[str, int], Credit] = defaultdict(Credit)
    for a in attributions:
        if a.touch is not None:
            credit = totals[(a.touch.journey, a.touch.step)]
            credit.orders += 1
            credit.revenue += a.order.revenue or 0.0
    return dict(totals)


def revenue_per_recipient(revenue: float, recipients: int) -> float | None:
    """Attributed revenue divided by the people messaged; None when nobody was messaged."""
    return round(revenue / recipients, 2) if recipients else None


# --------------------------------------------------------------------------------------------------
# Recovery


@dataclass
class Recovery:
    messaged: int = 0
    recovered: int = 0
    matched_by_cart_id: int = 0


def recovery_unit(touch: Touch) -> tuple[str, str, str | None]:
    """What a message tries to win back: the cart for cart recovery (a person's two carts are two),
    else the person."""
    return touch.journey, touch.person_id, touch.cart_id if touch.journey == "cart_recovery" else None


def recovering_orders(person_id: str, sent: list[datetime], orders: Iterable[Order], window: timedelta) -> list[Order]:
    """The person's orders at or after the first message and within `window` after the last. An
    order carrying the cart's id gets no more room than any other: another person can order with
    it, and a cart bought weeks later was not won back by the message."""
    first, last = min(sent), max(sent)
    return [o for o in orders if o.person_id == person_id and first <= as_utc(o.ordered_at) <= last + window]


def recovery_by_journey(touches: Iterable[Touch], orders: Iterable[Order], window: timedelta) -> dict[str, Recovery]:
    units: dict[tuple[str, str, str | None], list[datetime]] = defaultdict(list)
    for touch in touches:
        units[recovery_unit(touch)].append(as_utc(touch.sent_at))
    by_person = _orders_by_person(orders)
    totals: dict[str, Recovery] = defaultdict(Recovery)
    for (journey, person_id, cart_id), sent in units.items():
        found = recovering_orders(person_id, sent, by_person.get(person_id, ()), window)
        total = totals[journey]
        total.messaged += 1
        total.recovered += bool(found)
        total.matched_by_cart_id += cart_id is not None and any(o.cart_id == cart_id for o in found)
    return dict(totals)


def people_recovered(touches: Iterable[Touch], orders: Iterable[Order], window: timedelta) -> Recovery:
    """Overall: each person messaged, by the same rule over all their messages."""
    sent: dict[str, list[datetime]] = defaultdict(list)
    for touch in touches:
        sent[touch.person_id].append(as_utc(touch.sent_at))
    by_person = _orders_by_person(orders)
    found = sum(
        bool(recovering_orders(person, times, by_person.get(person, ()), window)) for person, times in sent.items()
    )
    return Recovery(messaged=len(sent), recovered=found)


def _orders_by_person(orders: Iterable[Order]) -> dict[str, list[Order]]:
    by_person: dict[str, list[Order]] = defaultdict(list)
    for order in orders:
        by_person[order.person_id].append(order)
    return by_person
