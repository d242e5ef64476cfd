"""Catalogue triggers: a product back in stock, or cheaper than a shopper saw it, brings back the
people who looked at it. Pure: the store hands in what it read, so every rule is tested alone.

- A trigger is a transition the catalogue write made: out of stock → in stock (`back_in_stock`),
  or a lower price than the row had, the product in stock (`price_drop`).
- Who is told (`who_to_tell`): people who viewed or carted the product within the journey's
  `window` and ordered nothing containing it within that window (a buyer never enters); for a
  price drop, only those who saw it at a higher price than the new one.
- The hub starts the journey unless a more urgent one runs (`decide_catalogue`; cart recovery
  outranks both, they outrank browse recovery and welcome); the store refuses a second journey of
  the same kind for the same person and product within the window.
- Before every send the product is read again (`product_stop`): sold out, or (price drop) no
  longer cheaper than they saw it, ends the journey with that reason.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from journeys import taxonomy
from journeys.history import HistoryEvent, as_utc, number
from journeys.policy import CATALOGUE_JOURNEYS, Policy
from journeys.routing import RouteDecision, holdout_bucket
from journeys.wakeups import replaces

Trigger = Literal["back_in_stock", "price_drop"]
SEEN_EVENTS = (taxonomy.PRODUCT_VIEWED, taxonomy.ADDED_TO_CART)


@dataclass(frozen=True)
class Stock:
    """One catalogue row (a variant) as far as triggers care: in stock, and at what price."""

    in_stock: bool
    price: float | None


@dataclass(frozen=True)
class Change:
    """A product whose catalogue write made a trigger; `was_price` is its price before."""

    product_id: str
    trigger: Trigger
    was_price: float | None = None
    price: float | None = None


def changes(before: dict[tuple[str, str], Stock], after: dict[tuple[str, str], Stock]) -> list[Change]:
    """The triggers a write made, at most one of each kind per product (rows are variants). A row
    the write created is not a transition: nobody can have waited for it. Back in stock wins over a
    price drop of the same product (its message says both)."""
    found: dict[str, Change] = {}
    for key, now in sorted(after.items()):
        old = before.get(key)
        if old is None or not now.in_stock:
            continue
        sku = key[0]
        if not old.in_stock:
            found[sku] = Change(sku, "back_in_stock", old.price, now.price)
        elif old.price is not None and now.price is not None and now.price < old.price:
            held = found.get(sku)
            if held is None or (held.trigger == "price_drop" and now.price < (held.price or math.inf)):
                found[sku] = Change(sku, "price_drop", old.price, now.price)
    return list(found.values())


@dataclass(frozen=True)
class Seen:
    """A shopper's view or add-to-cart of the product (`price` as the event said, if it did)."""

    person_id: str
    at: datetime
    price: float | None


def who_to_tell(change: Change, seen: list[Seen], bought: set[str]) -> list[str]:
    """The people a change reaches, sorted: everyone who saw the product and did not buy it; for a
    price drop only those whose latest sighting was dearer than the new price (the catalogue's old
    price stands in when the event had none)."""
    latest: dict[str, Seen] = {}
    for s in sorted(seen, key=lambda s: as_utc(s.at)):
        latest[s.person_id] = s
    people = []
    for person, s in sorted(latest.items()):
        if person in bought:
            continue
        if change.trigger == "price_drop":
            saw = s.price if s.price is not None else change.was_price
            if saw is None or change.price is None or change.price >= saw:
                continue
        people.append(person)
    return people


def seen_price(events: list[HistoryEvent], product_id: str) -> float | None:
    """The price the shopper last saw the product at (their latest view or add-to-cart with a price)."""
    for event in sorted(events, key=lambda e: e.timestamp, reverse=True):
        props = event.properties or {}
        if event.name in SEEN_EVENTS and taxonomy.product_key(props) == product_id:
            price = number(props.get("price"))
            if price is not None:
                return price
    return None


def product_stop(route: str, rows: list[Stock], seen_at: float | None) -> str | None:
    """Why a catalogue journey must not send now, or None: the product sold out (or left the
    catalogue), or — price drop — its lowest in-stock price is no longer below what they saw."""
    in_stock = [row for row in rows if row.in_stock]
    if not in_stock:
        return "out of stock"
    prices = [row.price for row in in_stock if row.price is not None]
    if route == "price_drop" and seen_at is not None and prices and min(prices) >= seen_at:
        return f"price back up ({min(prices):g} ≥ {seen_at:g} they saw)"
    return None


def decide_catalogue(
    person_id: str,
    product_id: str,
    trigger: str,
    policy: Policy,
    running: str | None,
    segments: frozenset[str] | set[str] | list[str] = frozenset(),
) -> RouteDecision:
    """Whether the hub starts the trigger's journey: not for the holdout group, not when the
    journey's `only_if`/`unless` rules out the person (in `segments`), not over a journey at least as
    urgent (a running cart recovery keeps going), else yes."""
    what = f"{trigger} of product {product_id}"
    if trigger not in CATALOGUE_JOURNEYS:
        return RouteDecision(route="none", reason=f"{what}: not a catalogue trigger")
    if policy.holdout_percent > 0 and holdout_bucket(person_id) < policy.holdout_percent:
        return RouteDecision(route="none", reason=f"{what} not started: holdout group")
    blocked = policy.segment_block(trigger, frozenset(segments))
    if blocked:
        return RouteDecision(route="none", reason=f"{what} not started: {blocked}", product_id=product_id)
    if running is not None and not replaces(running, trigger):
        return RouteDecision(route="none", reason=f"{what} not started: {running} running", product_id=product_id)
    reason = f"product {product_id} " + ("back in stock" if trigger == "back_in_stock" else "price dropped")
    return RouteDecision(route=trigger, reason=reason, product_id=product_id)


def journey_id(route: str, person_id: str, product_id: str, at: datetime, window: timedelta) -> str:
    """`{route}-{person}-{product digest}-{window number}`: two starts for the same person and product
    in one window would share it (the store refuses the second first; see `start_journey`)."""
    digest = hashlib.sha256(product_id.encode()).hexdigest()[:12]
    span = int(as_utc(at).timestamp() // max(window.total_seconds(), 1))
    return f"{route}-{person_id}-{digest}-{span}"
