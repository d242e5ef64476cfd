"""Canonical shop event names, the Segment e-commerce v2 aliases we accept, and the
properties each event should carry (missing ones are counted, never rejected)."""

from __future__ import annotations

from typing import Any

PRODUCT_VIEWED = "Product Viewed"
COLLECTION_VIEWED = "Collection Viewed"
ADDED_TO_CART = "Added to Cart"
REMOVED_FROM_CART = "Removed from Cart"
CHECKOUT_STARTED = "Checkout Started"
EMAIL_CAPTURED = "Email Captured"
QUIZ_ANSWERED = "Quiz Answered"
ORDER_COMPLETED = "Order Completed"
# Not a journey trigger: a shop's cancellation of an order (order_id); reports leave that order's revenue out.
ORDER_CANCELLED = "Order Cancelled"

CANONICAL_EVENTS: tuple[str, ...] = (
    PRODUCT_VIEWED,
    COLLECTION_VIEWED,
    ADDED_TO_CART,
    REMOVED_FROM_CART,
    CHECKOUT_STARTED,
    EMAIL_CAPTURED,
    QUIZ_ANSWERED,
    ORDER_COMPLETED,
)

SEGMENT_ALIASES: dict[str, str] = {
    "Product List Viewed": COLLECTION_VIEWED,
    "Product Added": ADDED_TO_CART,
    "Product Removed": REMOVED_FROM_CART,
}

# Names given to the non-track calls when they are stored as events.
IDENTIFY = "Identify"
PAGE_VIEWED = "Page Viewed"
SCREEN_VIEWED = "Screen Viewed"
ALIAS = "Alias"
GROUP = "Group"

RECOMMENDED_PROPERTIES: dict[str, tuple[str, ...]] = {
    PRODUCT_VIEWED: ("sku", "variant", "price", "category", "url"),
    COLLECTION_VIEWED: ("category", "url"),
    ADDED_TO_CART: ("sku", "variant", "price", "quantity", "cart_id"),
    REMOVED_FROM_CART: ("sku", "variant", "quantity", "cart_id"),
    CHECKOUT_STARTED: ("cart_id", "value"),
    EMAIL_CAPTURED: ("email",),
    QUIZ_ANSWERED: ("category",),
    ORDER_COMPLETED: ("cart_id", "value"),
}

_LOOKUP: dict[str, str] = {name.casefold(): name for name in CANONICAL_EVENTS}
_LOOKUP.update({alias.casefold(): canonical for alias, canonical in SEGMENT_ALIASES.items()})


def canonical_name(name: str) -> str:
    """The canonical name of an event; names we do not know are kept as they came."""
    return _LOOKUP.get(name.strip().casefold(), name)


def product_key(properties: dict[str, Any]) -> str | None:
    """The product an event is about: its `sku`, else Segment's `product_id` (catalog key)."""
    for key in ("sku", "product_id"):
        value = properties.get(key)
        if value not in (None, "") and not isinstance(value, (dict, list, bool)):
            return str(value)[:255]
    return None


def missing_recommended(canonical: str, properties: dict[str, Any]) -> list[str]:
    """Recommended properties this event lacks (empty for events without recommendations)."""
    return [p for p in RECOMMENDED_PROPERTIES.get(canonical, ()) if properties.get(p) in (None, "")]


# Events that wake a known person's hub (it may start or re-route a journey); an order ends journeys.
ACTIVITY_EVENTS: frozenset[str] = frozenset({ADDED_TO_CART, REMOVED_FROM_CART, CHECKOUT_STARTED, PRODUCT_VIEWED})
PURCHASE_EVENTS: frozenset[str] = frozenset({ORDER_COMPLETED})
