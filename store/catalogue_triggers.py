"""Where the catalogue is written (admin API, Shopify product and inventory webhooks), notice a
product coming back in stock or getting cheaper, and queue a `catalogue` hub signal for everyone
it concerns — in the same transaction as the write, so a trigger is never lost nor sent for a
write that rolled back. The rules themselves are pure, in journeys/catalogue.py.

Finding the people is one query per product over `events` (views and add-to-carts of it in the
window, person known) and one over their orders in the window; the signal carries only the product
id and the trigger kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, col, select

from journeys import taxonomy
from journeys.catalogue import SEEN_EVENTS, Change, Seen, Stock, changes, who_to_tell
from journeys.history import number
from journeys.policy import Policy
from store import outbox
from store.models import Event, Product, utcnow

KIND = "catalogue"  # the outbox row kind and the hub signal it becomes


def stock_of(session: Session, skus: Iterable[str]) -> dict[tuple[str, str], Stock]:
    """Every variant of these products: in stock, and its price."""
    wanted = sorted(set(skus))
    if not wanted:
        return {}
    rows = session.exec(
        select(col(Product.sku), col(Product.variant), col(Product.in_stock), col(Product.price)).where(
            col(Product.sku).in_(wanted)
        )
    ).all()
    return {(sku, variant): Stock(in_stock=bool(in_stock), price=price) for sku, variant, in_stock, price in rows}


@contextmanager
def watching(session: Session, skus: Iterable[str], policy: Policy | None) -> Iterator[None]:
    """Around a catalogue write of these products: afterwards, queue the triggers it made. Without a
    policy (a backfill of the shop's past) nothing is watched."""
    if policy is None:
        yield
        return
    skus = sorted(set(skus))
    before = stock_of(session, skus)
    yield
    session.flush()
    tell(session, changes(before, stock_of(session, skus)), policy, utcnow())


def tell(session: Session, found: list[Change], policy: Policy, now: datetime) -> int:
    """Queue one `catalogue` signal per person each change concerns; returns how many."""
    signals: list[tuple[str, str, dict | None, str | None]] = []
    for change in found:
        window = policy.catalogue_window(change.trigger)
        since = now - window
        seen = sightings(session, change.product_id, since)
        bought = buyers(session, change.product_id, {s.person_id for s in seen}, since)
        # No dedupe key: a repeated write makes no transition, and the store refuses a second
        # journey for the same person and product within the window.
        signals += [
            (KIND, person, {"product_id": change.product_id, "trigger": change.trigger}, None)
            for person in who_to_tell(change, seen, bought)
        ]
    outbox.queue(session, signals)
    return len(signals)


def sightings(session: Session, product_id: str, since: datetime) -> list[Seen]:
    """Views and add-to-carts of the product since `since` by known people."""
    props = col(Event.properties)
    rows = session.exec(
        select(col(Event.person_id), col(Event.timestamp), props).where(
            col(Event.name).in_(SEEN_EVENTS),
            col(Event.timestamp) >= since,
            col(Event.person_id).is_not(None),
            col(Event.duplicate_of).is_(None),
            or_(props["sku"].as_string() == product_id, props["product_id"].as_string() == product_id),
        )
    ).all()
    return [
        Seen(person_id=person, at=at, price=number((p or {}).get("price")))
        for person, at, p in rows
        if person is not None and taxonomy.product_key(p or {}) == product_id
    ]


def buyers(session: Session, product_id: str, people: set[str], since: datetime) -> set[str]:
    """Which of `people` ordered the product since `since` (an order listing it in `products`)."""
    if not people:
        return set()
    rows = session.exec(
        select(col(Event.person_id), col(Event.properties)).where(
            col(Event.name) == taxonomy.ORDER_COMPLETED,
            col(Event.person_id).in_(sorted(people)),
            col(Event.timestamp) >= since,
        )
    ).all()
    return {person for person, props in rows if person is not None and _lists(props or {}, product_id)}


def _lists(order: dict, product_id: str) -> bool:
    lines = order.get("products")
    return isinstance(lines, list) and any(
        isinstance(line, dict) and taxonomy.product_key(line) == product_id for line in lines
    )
