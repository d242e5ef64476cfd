"""Mia's story, for the timeline tests: a shopper on two devices, merged, through the real code that
writes each line — ingest and identity for events, device links, the merge and a shared-device
conflict; the journey activities for the routing decisions, guardrail wait and skip, the message and
the journey's end; the segment stay and the message's variant as those parts of the store write them.

In time order (the wall clock: merges, links and sends are stamped when they happen):
phone browses and carts → phone identifies (email) → routed to no journey → laptop browses →
laptop signs in (user id) → alias merges the two → enters segment `cart_lovers` → Ben signs up on the
laptop (shared-device conflict) → routed to cart recovery → waits for quiet hours → email step 1
(variant B) → step 2 skipped → order from the shop's server → journey exits → leaves the segment."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, text

from activities.store_activities import StoreActivities
from conftest import fresh_database
from journeys.policy import Policy
from store.db import make_engine
from store.ingest import Incoming, ingest
from store.migrate import upgrade
from store.settings import Settings
from store.models import SegmentMembership, table_of
from workflows.models import JourneyNote, JourneyStart, SendInput

PHONE, LAPTOP = "mia-phone", "mia-laptop"
EMAIL, USER_ID = "mia@example.com", "u-mia"


def now() -> datetime:
    return datetime.now(UTC)


def tick() -> datetime:
    """The next moment, a little after the last: each step of the story at its own time."""
    time.sleep(0.003)
    return now()


@contextmanager
def migrated_store(backend: str, folder: Path) -> Iterator[tuple[Engine, str]]:
    """A fresh, migrated store of `backend`: engine and URL."""
    with fresh_database(backend, folder, "breadcrumb_timeline") as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine, url
        finally:
            engine.dispose()


def _message(kind: str, at: datetime, **fields) -> Incoming:
    return Incoming(type=kind, timestamp=at, received_at=at, message_id=f"{kind}-{uuid.uuid4().hex[:8]}", **fields)


def track(event: str, anon: str | None = None, user_id: str | None = None, **properties) -> Incoming:
    return _message(
        "track",
        tick(),
        original_name=event,
        anonymous_id=anon,
        user_id=user_id,
        properties=properties,
        context={"userAgent": "Mobile Safari" if anon == PHONE else "Firefox"},
        source="client" if anon else "server",
        trusted=anon is None,
    )


def identify(anon: str, user_id: str | None = None, **traits) -> Incoming:
    return _message(
        "identify",
        tick(),
        original_name="Identify",
        anonymous_id=anon,
        user_id=user_id,
        properties=traits,
        trusted=True,
    )


@dataclass
class Story:
    person_id: str  # Mia, after the merge
    absorbed_id: str  # the profile her phone made before she signed in on the laptop
    ben_id: str
    message_id: str
    cart_workflow: str


def tell(engine: Engine, settings: Settings) -> Story:
    """Write Mia's story into `engine`'s store."""
    store = StoreActivities(engine, settings=settings)

    def feed(*messages: Incoming) -> None:
        ingest(engine, list(messages), Policy(), api="test", endpoint="test", wake_hubs=False)

    def owner(kind: str, value: str) -> str:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT person_id FROM identifiers WHERE kind = :k AND value = :v"), {"k": kind, "v": value}
            ).scalar_one()

    feed(track("Product Viewed", PHONE, sku="SERUM-1", name="Glow Serum", price=40))
    feed(track("Product Added", PHONE, sku="SERUM-1", cart_id="cart-9", price=40, quantity=2))
    feed(identify(PHONE, email=EMAIL, first_name="Mia"))
    absorbed = owner("email", EMAIL)
    store.start_journey(
        JourneyStart(
            workflow_id=f"route-{absorbed}-1",
            hub_id=f"hub-{absorbed}",
            person_id=absorbed,
            route="none",
            reason="browse intent 2 below threshold 5",
            at=tick(),
        )
    )
    feed(track("Product Viewed", LAPTOP, sku="MASK-2", name="Clay Mask", price=25))
    feed(identify(LAPTOP, user_id=USER_ID))
    feed(_message("alias", tick(), original_name="Alias", user_id=USER_ID, previous_id=PHONE, trusted=True))
    mia = owner("user_id", USER_ID)
    assert mia != absorbed and owner("anonymous_id", PHONE) == mia, "the alias merged the phone's profile into Mia"
    entered = tick()
    feed(identify(LAPTOP, email="ben@example.com", first_name="Ben"))
    ben = owner("email", "ben@example.com")

    cart = f"cart_recovery-{mia}-1"
    store.start_journey(
        JourneyStart(
            workflow_id=cart,
            hub_id=f"hub-{mia}",
            person_id=mia,
            route="cart_recovery",
            reason="open cart 80.00 at or above cart_min_value 50",
            cart_id="cart-9",
            cart_value=80.0,
            at=tick(),
        )
    )
    waited = tick()
    store.record_journey_note(
        JourneyNote(
            workflow_id=cart,
            person_id=mia,
            journey="cart_recovery",
            kind="waiting",
            reason="quiet hours 21:00-08:00",
            at=waited,
            step=1,
            until=waited + timedelta(hours=9),
        )
    )
    sent = store.send_step(
        SendInput(
            workflow_id=cart,
            person_id=mia,
            route="cart_recovery",
            step=1,
            template="cart_recovery_1",
            channel="email",
            cart_id="cart-9",
            at=tick(),
        )
    )
    assert sent.status == "sent", sent
    with engine.begin() as conn:
        conn.execute(text("UPDATE messages SET variant = 'B' WHERE id = :m"), {"m": sent.message_id})
    store.record_journey_note(
        JourneyNote(
            workflow_id=cart,
            person_id=mia,
            journey="cart_recovery",
            kind="skipped",
            reason="min_hours_between_messages: step 2 (cart_recovery_2) not sent",
            at=tick(),
            step=2,
        )
    )
    feed(track("Order Completed", user_id=USER_ID, order_id="1001", revenue=80.0, cart_id="cart-9"))
    store.record_journey_note(
        JourneyNote(
            workflow_id=cart,
            person_id=mia,
            journey="cart_recovery",
            kind="exit",
            reason="purchased",
            at=tick(),
            final_status="exited",
        )
    )
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(SegmentMembership)).values(
                segment="cart_lovers", person_id=mia, entered_at=entered, left_at=tick()
            )
        )
    return Story(person_id=mia, absorbed_id=absorbed, ben_id=ben, message_id=sent.message_id, cart_workflow=cart)


# The story's lines, in the order they happened: (kind, words the title holds).
MILESTONES = [
    ("event", "Product Viewed"),
    ("event", "Product Added"),
    ("event", "Identify"),
    ("identity", "email linked"),
    ("identity", "device linked"),
    ("routing", "routed: none"),
    ("event", "Product Viewed"),
    ("event", "Identify"),
    ("identity", "user id linked"),
    ("identity", "device linked"),
    ("event", "Alias"),
    ("merge", "merged"),
    ("segment", "entered segment cart_lovers"),
    ("conflict", "shared device"),
    ("routing", "routed: cart_recovery"),
    ("guardrail", "waiting"),
    ("message", "email · cart_recovery step 1"),
    ("guardrail", "skipped"),
    ("purchase", "Order Completed"),
    ("journey", "exit"),
    ("segment", "left segment cart_lovers"),
]
