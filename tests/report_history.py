"""A hand-built shop history for the report tests, inserted row by row with exact timestamps.

March 2025. Fifteen people identify in the month (A–O), one (P) the month before. What each
did is spelled out below, and the report tests compute every expected figure from this story by
hand. `NOW` is 2025-04-10: every 14-day conversion window of the cohort has closed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, UTC

from sqlalchemy import Engine, insert

from journeys import taxonomy as t
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person

NOW = datetime(2025, 4, 10, tzinfo=UTC)
SINCE, UNTIL = "2025-03-01", "2025-03-31"  # until as a date includes that whole day


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


class History:
    def __init__(self) -> None:
        self.people: list[dict] = []
        self.identifiers: list[dict] = []
        self.events: list[dict] = []
        self.messages: list[dict] = []
        self.runs: list[dict] = []
        self.log: list[dict] = []
        self.pids: dict[str, str] = {}

    def pid(self, name: str) -> str:
        return self.pids.setdefault(name, str(uuid.uuid5(uuid.NAMESPACE_URL, f"report-test/{name}")))

    def person(self, name: str, identified_at: datetime, anonymous_ids: int = 1) -> str:
        pid = self.pid(name)
        self.people.append(
            dict(
                id=pid,
                traits={"first_name": name},
                created_at=identified_at,
                identified_at=identified_at,
                updated_at=identified_at,
            )
        )
        self.identifiers.append(
            dict(person_id=pid, kind="email", value=f"{name.lower()}@example.com", created_at=identified_at)
        )
        for i in range(1, anonymous_ids + 1):
            self.identifiers.append(
                dict(person_id=pid, kind="anonymous_id", value=f"{name.lower()}-{i}", created_at=identified_at)
            )
        return pid

    def event(
        self,
        name: str,
        when: datetime,
        person: str | None = None,
        anonymous_id: str | None = None,
        user_id: str | None = None,
        type: str = "track",
        source: str = "client",
        duplicate_of: str | None = None,
        message_id: str | None = None,
        **properties,
    ) -> str:
        message_id = message_id or f"ev-{len(self.events) + 1}"
        canonical = t.canonical_name(name)
        self.events.append(
            dict(
                message_id=message_id,
                type=type,
                name=canonical,
                original_name=name,
                anonymous_id=anonymous_id,
                user_id=user_id,
                person_id=self.pid(person) if person else None,
                properties=properties,
                context={},
                timestamp=when,
                received_at=when,
                source=source,
                cart_id=properties.get("cart_id"),
                order_id=properties.get("order_id"),
                missing_properties=t.missing_recommended(canonical, properties) if type == "track" else [],
                duplicate_of=duplicate_of,
            )
        )
        return message_id

    def order(self, person: str, when: datetime, order_id: str, **properties) -> str:
        return self.event(t.ORDER_COMPLETED, when, person, user_id=f"u-{person}", order_id=order_id, **properties)

    def page(self, when: datetime, anonymous_id: str, person: str | None = None) -> str:
        return self.event(t.PAGE_VIEWED, when, person, anonymous_id=anonymous_id, type="page", url="/")

    def message(
        self,
        person: str,
        journey: str,
        step: int,
        sent_at: datetime,
        cart_id: str | None = None,
        status: str = "sent",
        reason: str | None = None,
        variant: str | None = None,
    ) -> str:
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"msg/{person}/{journey}/{step}/{status}"))
        self.messages.append(
            dict(
                id=message_id,
                person_id=self.pid(person),
                workflow_id=f"{journey}-{self.pid(person)}-1",
                journey=journey,
                step=step,
                template=f"{journey}_{step}",
                channel="email",
                recipient=f"{person.lower()}@example.com",
                subject="Hello",
                body="…",
                items=[],
                status=status,
                reason=reason,
                idempotency_key=f"{journey}-{person}:{step}:{status}",
                cart_id=cart_id,
                created_at=sent_at,
                sent_at=sent_at if status == "sent" else None,
                variant=variant,
            )
        )
        return message_id

    def run(self, person: str, route: str, started_at: datetime, cart_id: str | None = None) -> None:
        n = sum(1 for r in self.runs if r["person_id"] == self.pid(person)) + 1
        self.runs.append(
            dict(
                workflow_id=f"{route}-{self.pid(person)}-{n}",
                person_id=self.pid(person),
                route=route,
                status="completed",
                reason="",
                cart_id=cart_id,
                started_at=started_at,
            )
        )

    def note(
        self, person: str, kind: str, journey: str, reason: str, when: datetime, step: int | None = None, run: int = 1
    ) -> None:
        """A journey log line of the person's `run`-th run of that journey (step None: between steps)."""
        self.log.append(
            dict(
                person_id=self.pid(person),
                workflow_id=f"{journey}-{self.pid(person)}-{run}",
                journey=journey,
                step=step,
                kind=kind,
                reason=reason,
                at=when,
            )
        )

    def insert(self, engine: Engine) -> None:
        with engine.begin() as conn:
            for model, rows in (
                (Person, self.people),
                (Identifier, self.identifiers),
                (Event, self.events),
                (Message, self.messages),
                (JourneyRun, self.runs),
                (JourneyLog, self.log),
            ):
                if rows:
                    conn.execute(insert(model.__table__), rows)


def march() -> History:
    h = History()
    # A: cart recovery, two messages, ordered cart c-A two days after identifying (120, as `revenue`).
    h.person("A", at(1, 10))
    h.page(at(1, 9), "a-1", "A")
    h.event("Product Added", at(1, 9, 30), "A", anonymous_id="a-1", sku="S1", price=120, quantity=1, cart_id="c-A")
    h.event("Identify", at(1, 10), "A", anonymous_id="a-1", type="identify")
    h.run("A", "cart_recovery", at(1, 10), "c-A")
    h.message("A", "cart_recovery", 1, at(1, 11), "c-A")
    h.message("A", "cart_recovery", 2, at(2, 10), "c-A")
    h.order("A", at(3, 10), "o-A", cart_id="c-A", revenue=120)
    # B: three devices; cart recovery for c-B; ordered another cart 8 days later (80, as `total`):
    # converted (≤ 14 d) but outside the 5-day attribution window and not a recovery of c-B.
    h.person("B", at(2, 9), anonymous_ids=3)
    h.page(at(1, 9), "b-1", "B")
    h.run("B", "cart_recovery", at(2, 9), "c-B")
    h.message("B", "cart_recovery", 1, at(2, 10), "c-B")
    h.order("B", at(10, 10), "o-B", cart_id="c-B-2", total=80)
    # C: identified at checkout (Checkout Started with email); ordered without a cart id two days
    # after the recovery message: recovered by person; revenue from `value` (the string is ignored).
    h.person("C", at(3, 12))
    h.event("Product Viewed", at(3, 11, 50), "C", anonymous_id="c-1", sku="S2")
    h.event("Checkout Started", at(3, 12), "C", anonymous_id="c-1", cart_id="c-C", value=50, email="c@example.com")
    h.run("C", "cart_recovery", at(3, 12), "c-C")
    h.message("C", "cart_recovery", 1, at(3, 13), "c-C")
    h.order("C", at(5, 13), "o-C", revenue="50 USD", value=50)
    # D: browse recovery, two messages, no order.
    h.person("D", at(4, 12))
    h.page(at(4, 11, 59), "d-1", "D")
    h.run("D", "browse_recovery", at(4, 12))
    h.message("D", "browse_recovery", 1, at(4, 14))
    h.message("D", "browse_recovery", 2, at(6, 14))
    # E: five devices; browse recovery; ordered (40) — the server's copy is a caught duplicate and a
    # repeat of the same order id is counted once.
    h.person("E", at(5, 8), anonymous_ids=5)
    h.page(at(2, 8), "e-1", "E")
    h.run("E", "browse_recovery", at(5, 8))
    h.message("E", "browse_recovery", 1, at(5, 10))
    first = h.order("E", at(7, 10), "o-E", cart_id="c-E", revenue=40, value=40)
    h.order("E", at(7, 10, 1), "o-E", cart_id="c-E", revenue=40, value=40, source="server", duplicate_of=first)
    h.order("E", at(7, 10, 2), "o-E", cart_id="c-E", revenue=40, value=40)
    # F: welcome; ordered 19 days later (30): not a 14-day conversion, not attributed.
    h.person("F", at(6))
    h.run("F", "welcome", at(6))
    h.message("F", "welcome", 1, at(6, 0, 5))
    h.order("F", at(25), "o-F", revenue=30)
    # G: welcome, then re-routed to cart recovery; the cart message is the last touch (200).
    h.person("G", at(7, 10))
    h.event(
        "Product Viewed",
        at(7, 9, 30),
        "G",
        anonymous_id="g-1",
        sku="S3",
        variant="M",
        price=200,
        category="coats",
        url="/p/s3",
    )
    h.run("G", "welcome", at(7, 10))
    h.message("G", "welcome", 1, at(7, 10, 5))
    h.run("G", "cart_recovery", at(8, 10), "c-G")
    h.message("G", "cart_recovery", 1, at(8, 11), "c-G")
    h.order("G", at(9, 11), "o-G", cart_id="c-G", revenue=200, value=200)
    # H: cart recovery, no order; step 2 failed to deliver.
    h.person("H", at(8, 11))
    h.run("H", "cart_recovery", at(8, 11), "c-H")
    h.message("H", "cart_recovery", 1, at(8, 12), "c-H")
    h.message("H", "cart_recovery", 2, at(9, 12), "c-H", status="failed", reason="SMTP 550 mailbox unavailable")
    # I: welcome, ordered two hours later (25); a cart recovery started after the order is ignored.
    h.person("I", at(9, 10))
    h.run("I", "welcome", at(9, 10))
    h.message("I", "welcome", 1, at(9, 10, 5))
    h.order("I", at(9, 12), "o-I", cart_id="c-I", revenue=25, value=25)
    h.run("I", "cart_recovery", at(10), "c-I2")
    # J, K, L: the holdout (control). J ordered (60); K identified 3 minutes before checking out;
    # L 10 minutes before (not "at checkout"), and L's checkout also came from the server.
    h.person("J", at(10))
    h.run("J", "control", at(10))
    h.order("J", at(12), "o-J", cart_id="c-J", value=60)
    h.person("K", at(10, 10))
    h.run("K", "control", at(10, 10))
    h.event("Checkout Started", at(10, 10, 3), "K", anonymous_id="k-1", email="k@example.com")
    h.person("L", at(10, 10))
    h.run("L", "control", at(10, 10))
    client_copy = h.event("Checkout Started", at(10, 10, 10), "L", anonymous_id="l-1", cart_id="c-L", value=10)
    h.event(
        "Checkout Started",
        at(10, 10, 10),
        "L",
        user_id="u-L",
        cart_id="c-L",
        value=10,
        source="server",
        duplicate_of=client_copy,
    )
    # M: routed to nothing (welcome cooldown). N: bought before identifying (70): already a customer.
    h.person("M", at(11))
    h.run("M", "none", at(11))
    h.person("N", at(12, 10))
    h.order("N", at(12, 9), "o-N", cart_id="c-N", value=70)
    h.run("N", "none", at(12, 10))
    # O: identified through the Customer.io API (no device), never routed.
    h.person("O", at(13), anonymous_ids=0)
    # P: identified in February; a cart message and order in March still count for revenue.
    h.person("P", at(20, month=2))
    h.message("P", "cart_recovery", 1, at(1, 9), "c-P")
    h.order("P", at(2, 9), "o-P", cart_id="c-P", value=90)
    # Devices that never identified: x-1 and x-4 one page view each, x-2 two events, x-3 one product view.
    h.page(at(15), "x-1")
    h.page(at(16), "x-2")
    h.event("Product Viewed", at(16, 0, 1), anonymous_id="x-2", url="/p/1")
    h.event("Product Viewed", at(16, 1), anonymous_id="x-3", sku="S", variant="v", price=1, category="c")
    h.page(at(2), "x-4")
    h.page(at(10, month=1), "y-january")  # outside the period
    # What the journeys logged. Deferred: A and H waited for the frequency cap before step 2, F's
    # welcome step 2 for quiet hours.
    h.note("A", "waiting", "cart_recovery", "frequency cap until 2025-03-02T10:00:00+00:00", at(1, 11), step=2)
    h.note("H", "waiting", "cart_recovery", "frequency cap until 2025-03-09T12:00:00+00:00", at(8, 12), step=2)
    h.note("F", "waiting", "welcome", "quiet hours until 2025-03-07T08:00:00+00:00", at(6, 23), step=2)
    # Steps not sent, one skip each:
    h.note("A", "exit", "cart_recovery", "purchased: order o-A at 2025-03-03T10:00:00+00:00", at(3, 10), step=3)
    h.note("C", "exit", "cart_recovery", "purchased (order o-C)", at(5, 13), step=2)
    # E unsubscribed before browse step 2: the engine logs the step skipped, then the journey's
    # exit, both for step 2 — one skip, not two.
    h.note(
        "E",
        "skipped",
        "browse_recovery",
        "unsubscribed from email: step 2 (browse_recovery_2) not sent",
        at(7, 9),
        step=2,
    )
    h.note("E", "exit", "browse_recovery", "unsubscribed from email: no later step can reach them", at(7, 9), step=2)
    h.note("F", "exit", "welcome", "suppressed", at(7), step=2)
    h.note("H", "exit", "cart_recovery", "cart no longer open", at(11, 12), step=3)
    h.note("H", "skipped", "cart_recovery", "cart c-H already had its recovery journey", at(9, 13), run=2)
    # B: nothing in the cart in stock at step 2 (skipped, the journey goes on); all sold out at step 3.
    h.note(
        "B",
        "skipped",
        "cart_recovery",
        "out of stock: nothing to show, step 2 (cart_recovery_2) not sent",
        at(3, 10),
        step=2,
    )
    h.note("B", "exit", "cart_recovery", "out of stock: every item in the cart sold out", at(5, 10), step=3)
    h.note("G", "exit", "welcome", "re-routed to cart_recovery: open cart c-G, value 200.00 ≥ 50.00", at(8, 10))
    h.note("I", "exit", "cart_recovery", "journey timed out", at(11), run=2)
    # Not skips: a send and a completion; and an exit after the period.
    h.note("D", "sent", "browse_recovery", "Hello", at(6, 14), step=2)
    h.note("D", "completed", "browse_recovery", "all 2 steps done", at(6, 14), step=2)
    h.note("G", "exit", "cart_recovery", "purchased: order o-Z", at(5, month=4), step=2)
    return h
