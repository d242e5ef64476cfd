"""Which journey a newly identified person gets, decided from their history alone.

Pure and deterministic (the caller passes `now`), so the hub workflow can call it directly and
replays give the same answer. The reason string is what the marketer reads in the admin and
the Temporal UI, so it says which numbers decided.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from journeys import taxonomy
from journeys.history import CartSummary, HistoryEvent, HistorySummary, PersonHistory, as_utc, number
from journeys.policy import JourneyName, Policy

Route = Literal["cart_recovery", "browse_recovery", "welcome", "back_in_stock", "price_drop", "control", "none"]

# A second view of the same product this soon after the previous one is a page refresh.
REFRESH_WINDOW = timedelta(minutes=1)
# The intent events a projected history keeps in full (the newest); the rest are summed up.
PROJECTED_EVENTS = 50


class CartItem(BaseModel):
    sku: str | None = None
    variant: str | None = None
    name: str | None = None
    quantity: int
    price: float
    image_url: str | None = None
    category: str | None = None


class OpenCart(BaseModel):
    cart_id: str | None
    value: float
    items: list[CartItem]
    updated_at: datetime


@dataclass
class _Cart:
    cart_id: str | None
    items: dict[tuple[str | None, str | None], CartItem] = field(default_factory=dict)
    updated_at: datetime | None = None
    seq: int = 0
    # True while no item has changed since the latest checkout, so its value still holds.
    checkout_current: bool = False
    checkout_value: float | None = None


def open_cart(events: list[HistoryEvent]) -> OpenCart | None:
    """The cart the shopper most recently touched and has not paid for, or None.

    Carts are keyed by cart_id (events without one share a default cart). An order with a
    cart_id closes that cart; an order without one closes every cart touched before it,
    because we cannot tell which it paid for and must not chase a shopper who already bought.
    """
    carts: dict[str | None, _Cart] = {}
    for seq, event in enumerate(sorted(events, key=lambda e: e.timestamp)):
        props = event.properties or {}
        if event.name == taxonomy.ORDER_COMPLETED:
            if event.cart_key is not None:
                carts.pop(event.cart_key, None)
            else:
                carts.clear()
            continue
        if event.name not in (taxonomy.ADDED_TO_CART, taxonomy.REMOVED_FROM_CART, taxonomy.CHECKOUT_STARTED):
            continue
        cart = carts.setdefault(event.cart_key, _Cart(cart_id=event.cart_key))

        if event.name == taxonomy.ADDED_TO_CART:
            item = _item(props)
            if item is None:
                continue
            key = (item.sku, item.variant)
            if key in cart.items:
                held = cart.items[key]
                cart.items[key] = held.model_copy(
                    update={"quantity": held.quantity + item.quantity, "price": item.price}
                )
            else:
                cart.items[key] = item
            cart.checkout_current = False
        elif event.name == taxonomy.REMOVED_FROM_CART:
            key = (_text(props.get("sku") or props.get("product_id")), _text(props.get("variant")))
            in_cart = cart.items.get(key)
            if in_cart is None:
                continue  # removing something we never saw added: nothing to change
            quantity = _quantity(props.get("quantity"))
            if quantity is not None and quantity <= 0:
                continue
            if quantity is None or quantity >= in_cart.quantity:
                del cart.items[key]
            else:
                cart.items[key] = in_cart.model_copy(update={"quantity": in_cart.quantity - quantity})
            cart.checkout_current = False
        else:  # Checkout Started
            products = props.get("products")
            if isinstance(products, list) and products:
                items: dict[tuple[str | None, str | None], CartItem] = {}
                for product in products:
                    item = _item(product) if isinstance(product, dict) else None
                    if item is None:
                        continue
                    key = (item.sku, item.variant)
                    if key in items:
                        item = item.model_copy(update={"quantity": items[key].quantity + item.quantity})
                    items[key] = item
                if items:
                    cart.items = items
            cart.checkout_current = True
            cart.checkout_value = number(props.get("value"))
        cart.updated_at = event.timestamp
        cart.seq = seq

    open_carts = [c for c in carts.values() if c.updated_at is not None and (c.items or c.checkout_current)]
    if not open_carts:
        return None
    latest = max(open_carts, key=lambda c: (c.updated_at, c.seq))
    return OpenCart(
        cart_id=latest.cart_id,
        value=_cart_value(latest),
        items=list(latest.items.values()),
        updated_at=latest.updated_at,
    )


def _cart_value(cart: _Cart) -> float:
    """The checkout's own total when nothing changed after it (it knows discounts and shipping);
    otherwise what the items add up to."""
    if cart.checkout_current and cart.checkout_value is not None:
        return round(cart.checkout_value, 2)
    return round(sum(i.price * i.quantity for i in cart.items.values()), 2)


def _item(props: dict[str, Any]) -> CartItem | None:
    quantity = _quantity(props.get("quantity"))
    if quantity is None:
        quantity = 1
    if quantity <= 0:
        return None
    return CartItem(
        sku=_text(props.get("sku") or props.get("product_id")),
        variant=_text(props.get("variant")),
        name=_text(props.get("name")),
        quantity=quantity,
        price=number(props.get("price")) or 0.0,
        image_url=_text(props.get("image_url")),
        category=_text(props.get("category")),
    )


def _quantity(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _viewed_product(event: HistoryEvent) -> str | None:
    props = event.properties or {}
    return _text(props.get("sku") or props.get("product_id") or props.get("url"))


def intent_score(events: list[HistoryEvent], weights: dict[str, float], lookback: timedelta, now: datetime) -> float:
    """Weighted count of what the shopper did in [now - lookback, now].

    A Product Viewed of the same product within a minute of the previous view of it is a page
    refresh and adds nothing, so one product reloaded five times is not five views.
    """
    return round(sum(weights.get(e.name, 0.0) for e in _counted_intent(events, lookback, now)), 6)
    # (rounded: keep 0.1 + 0.2 style sums from missing a threshold by a hair)


def _counted_intent(events: list[HistoryEvent], lookback: timedelta, now: datetime) -> list[HistoryEvent]:
    """The events of [now - lookback, now] that count towards intent (page refreshes left out), oldest first."""
    now = as_utc(now)
    since = now - lookback
    last_view: dict[str, datetime] = {}
    counted = []
    for event in sorted(events, key=lambda e: e.timestamp):
        if not since <= event.timestamp <= now:
            continue
        if event.name == taxonomy.PRODUCT_VIEWED:
            product = _viewed_product(event)
            if product is not None:
                previous = last_view.get(product)
                last_view[product] = event.timestamp
                if previous is not None and event.timestamp - previous <= REFRESH_WINDOW:
                    continue
        counted.append(event)
    return counted


def _last_order(events: list[HistoryEvent]) -> HistoryEvent | None:
    orders = [e for e in events if e.name == taxonomy.ORDER_COMPLETED]
    return max(orders, key=lambda e: e.timestamp) if orders else None


def holdout_bucket(person_id: str) -> float:
    """Where a person falls in [0, 100): stable across processes and replays (unlike hash())."""
    digest = hashlib.sha256(person_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


class RouteDecision(BaseModel):
    route: Route
    reason: str
    cart_id: str | None = None
    cart_value: float | None = None
    intent_score: float = 0.0
    product_id: str | None = None  # the product of a catalogue journey (journeys.catalogue)


def decide_route(
    history: PersonHistory,
    policy: Policy,
    now: datetime,
    last_started: dict[str, datetime] | None = None,
    recovered_carts: frozenset[str] | set[str] | list[str] = frozenset(),
    segments: frozenset[str] | set[str] | list[str] = frozenset(),
) -> RouteDecision:
    """Pick the journey: already purchased → none; holdout → control; open cart at or above the
    minimum → cart recovery; browse intent at or above the threshold → browse recovery; else
    welcome. A route still in its re-entry cooldown (from `last_started`) falls through to the
    next one down; when even welcome is cooling down the person gets nothing. A cart that already
    had its one recovery journey (`recovered_carts`) falls through the same way, and so does a
    journey whose `only_if`/`unless` segments the person (in `segments`) does not satisfy.

    A projected history (`project_history`) is routed as its full history would be at its
    `summary.as_of`, which is the `now` the hub routes with."""
    now = as_utc(now)
    last_started = last_started or {}
    events = history.events
    summary = history.summary
    score = intent_score(events, policy.intent.weights, policy.intent.lookback, now)
    if summary is not None:
        score = round(score + summary.intent_left_out, 6)

    order = _last_order(events)
    if order is not None:
        order_ref = f"order {order.order_key} at" if order.order_key else "order at"
        return RouteDecision(
            route="none",
            reason=f"already purchased ({order_ref} {order.timestamp.isoformat()})",
            intent_score=score,
        )

    if policy.holdout_percent > 0:
        bucket = holdout_bucket(history.person_id)
        if bucket < policy.holdout_percent:
            shown = math.floor(bucket * 10) / 10  # never round up to look equal to the cut-off
            return RouteDecision(
                route="control",
                reason=f"holdout group (bucket {shown:.1f} < {policy.holdout_percent:g}%)",
                intent_score=score,
            )

    member_of = frozenset(segments)

    def held_back(route: JourneyName) -> str | None:
        """Why `route` cannot start now: its re-entry cooldown, or its segment rules."""
        journey = policy.journeys[route]
        started = last_started.get(route)
        until = as_utc(started) + journey.reentry_cooldown if started is not None else None
        if until is not None and now < until:
            return f"{route} cooldown until {until.isoformat()}"
        blocked = policy.segment_block(route, member_of)
        return f"{route} not allowed: {blocked}" if blocked else None

    notes: list[str] = []

    cart = summary.open_cart if summary is not None else open_cart(events)
    if cart is None:
        cart_note = "no open cart"
    else:
        label = f"open cart {cart.cart_id}" if cart.cart_id is not None else "open cart"
        value, minimum = _pair(cart.value, policy.cart_min_value, 2)
        if cart.cart_id is not None and cart.cart_id in recovered_carts:
            cart_note = f"{label} already had its recovery"
        elif cart.value >= policy.cart_min_value:
            cart_note = f"{label}, value {value} ≥ {minimum}"
            hold = held_back("cart_recovery")
            if hold is None:
                return RouteDecision(
                    route="cart_recovery",
                    reason=cart_note,
                    cart_id=cart.cart_id,
                    cart_value=cart.value,
                    intent_score=score,
                )
            cart_note += f" but {hold}"
        else:
            cart_note = f"{label}, value {value} < {minimum}"
    if cart is not None:
        notes.append(cart_note)

    shown_score, threshold = _pair(score, policy.browse_intent_threshold, 1)
    if score >= policy.browse_intent_threshold:
        browse_note = f"browse intent {shown_score} ≥ {threshold}"
        hold = held_back("browse_recovery")
        if hold is None:
            return RouteDecision(route="browse_recovery", reason=", ".join([*notes, browse_note]), intent_score=score)
        browse_note += f" but {hold}"
    else:
        browse_note = f"browse intent {shown_score} < {threshold}"

    reason = ", ".join([cart_note, browse_note])
    hold = held_back("welcome")
    if hold is None:
        return RouteDecision(route="welcome", reason=reason, intent_score=score)
    return RouteDecision(route="none", reason=f"{reason}, {hold}", intent_score=score)


def project_history(
    history: PersonHistory, policy: Policy, now: datetime, keep: int = PROJECTED_EVENTS
) -> PersonHistory:
    """The smallest history `decide_route` answers the same on at `now`, whatever its length: the
    latest order (purchased → none), the open cart and its value (not its events), and at most
    `keep` of the intent events that count, the newest, with the weight of the others summed up.
    Kept events carry only their product key (`sku`/`product_id`) and cart/order ids — no other
    property, so nothing the shopper typed (an email in an identify) leaves the store."""
    now = as_utc(now)
    order = _last_order(history.events)
    counted = [
        e
        for e in _counted_intent(history.events, policy.intent.lookback, now)
        if policy.intent.weights.get(e.name, 0.0) and e is not order
    ]  # the order is kept anyway
    split = max(len(counted) - keep, 0)
    kept, left_out = counted[split:], counted[:split]
    cart = open_cart(history.events)
    events = ([order] if order is not None else []) + kept
    return history.model_copy(
        update={
            "events": [_projected(e) for e in sorted(events, key=lambda e: e.timestamp)],
            "summary": HistorySummary(
                as_of=now,
                events_left_out=len(history.events) - len(events),
                open_cart=CartSummary(cart_id=cart.cart_id, value=cart.value) if cart is not None else None,
                intent_left_out=round(sum(policy.intent.weights.get(e.name, 0.0) for e in left_out), 6),
            ),
        }
    )


def _projected(event: HistoryEvent) -> HistoryEvent:
    """The routing fields of one event: name, time, source, cart/order id and product key."""
    props = event.properties or {}
    return HistoryEvent(
        name=event.name,
        timestamp=event.timestamp,
        source=event.source,
        cart_id=event.cart_key,
        order_id=event.order_key,
        properties={key: props[key] for key in ("sku", "product_id") if _text(props.get(key))},
    )


def _pair(value: float, limit: float, decimals: int) -> tuple[str, str]:
    """Both numbers with enough decimals that the printed comparison tells the truth
    (49.999 against 50 prints as 49.999 < 50.000, not 50.00 < 50.00)."""
    for places in range(decimals, 7):
        shown, cut = f"{value:.{places}f}", f"{limit:.{places}f}"
        if (float(shown) >= float(cut)) == (value >= limit):
            return shown, cut
    return repr(value), repr(limit)
