"""Temporal work per event is bounded (issue 16), against a real Temporal server on SQLite and
PostgreSQL: a person's pending browsing rows become one hub signal and are all marked delivered; an
identify is never coalesced away and each person's signals keep their order; browsing under a more
urgent running journey sends nothing; browsing is held back for the activity window (from its first
row, and from the last wake-up) and goes out as one signal marked gathered; people are signalled in parallel, never more
than `DISPATCH_CONCURRENCY` at once."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput

from conftest import settings_for
from dispatch.dispatcher import Dispatcher
from journeys import taxonomy
from store import outbox
from store.db import transaction
from store.models import JourneyRun, OutboxRow, as_utc, utcnow
from workflows.hub import hub_id
from workflows.models import HubSignal


def person() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def queue(db, person_id: str, *kinds: str) -> None:
    """Outbox rows in this order; `activity:Event Name` for an activity row of that event."""
    with transaction(db.engine) as session:
        for spec in kinds:
            kind, _, event = spec.partition(":")
            outbox.signal(
                session, kind, person_id, {"message_id": uuid.uuid4().hex, **({"event": event} if event else {})}
            )


def undelivered(db, person_id: str) -> list[OutboxRow]:
    with Session(db.engine) as session:
        return list(
            session.exec(
                select(OutboxRow).where(OutboxRow.person_id == person_id, OutboxRow.dispatched_at.is_(None))
            ).all()
        )


async def signals(client: Client, person_id: str) -> list[str]:
    """The signal names in the person's hub history, in order ([] when no hub was started)."""
    try:
        history = await client.get_workflow_handle(hub_id(person_id)).fetch_history()
    except Exception:
        return []
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


VIEW, CART = f"activity:{taxonomy.PRODUCT_VIEWED}", f"activity:{taxonomy.ADDED_TO_CART}"


async def test_browsing_rows_become_one_signal_identify_is_kept_and_order_holds(env, db):
    dispatcher = Dispatcher(db.engine, settings_for(db.url, dispatch_activity_window=0), client=env.client)
    browser, identified, buyer = person(), person(), person()
    queue(db, browser, *[VIEW] * 8, CART)
    queue(db, identified, VIEW, "identified", VIEW, "identified", "purchased", "identified")
    queue(db, buyer, VIEW, "purchased", VIEW)
    assert await dispatcher.dispatch_once() == 9 + 6 + 3
    for someone in (browser, identified, buyer):
        assert undelivered(db, someone) == []
    assert await signals(env.client, browser) == ["activity"]
    # the browsing rides on the identify; two identifies with only browsing between them are one wake-up
    assert await signals(env.client, identified) == ["identified", "purchased", "identified"]
    assert await signals(env.client, buyer) == ["purchased", "activity"]


async def test_browsing_under_a_more_urgent_running_journey_sends_no_signal(env, db):
    dispatcher = Dispatcher(db.engine, settings_for(db.url, dispatch_activity_window=0), client=env.client)
    shopper = person()
    with transaction(db.engine) as session:
        session.add(
            JourneyRun(
                workflow_id=f"cart_recovery-{shopper}-1", person_id=shopper, route="cart_recovery", started_at=utcnow()
            )
        )
    queue(db, shopper, VIEW, VIEW, CART)
    assert await dispatcher.dispatch_once() == 3
    assert undelivered(db, shopper) == []
    assert await signals(env.client, shopper) == []  # not even a hub start
    queue(db, shopper, "purchased")  # a purchase always goes
    assert await dispatcher.dispatch_once() == 1
    assert await signals(env.client, shopper) == ["purchased"]


async def gathered(client: Client, person_id: str) -> list[bool]:
    """For each `activity` signal in the person's hub history: whether the dispatcher sent it gathered."""
    history = await client.get_workflow_handle(hub_id(person_id)).fetch_history()
    flags = []
    for event in history.events:
        attributes = event.workflow_execution_signaled_event_attributes
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and attributes.signal_name == "activity"
        ):
            [signal] = await client.data_converter.decode(attributes.input.payloads, [HubSignal])
            flags.append(signal.gathered)
    return flags


async def until_delivered(dispatcher: Dispatcher) -> int:
    """Dispatch until a pass settles rows (held rows come due when their window ends)."""
    delivered = 0
    deadline = time.monotonic() + 30  # a hang guard
    while delivered == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        delivered = await dispatcher.dispatch_once()
    return delivered


async def test_browsing_is_gathered_for_the_window_then_sent_once_and_marked_gathered(env, db):
    window = 1.0
    dispatcher = Dispatcher(db.engine, settings_for(db.url, dispatch_activity_window=window), client=env.client)
    shopper = person()
    queued = time.monotonic()
    queue(db, shopper, VIEW)
    assert await dispatcher.dispatch_once() == 0  # the first view waits for the window: no hub yet
    assert await signals(env.client, shopper) == []
    queue(db, shopper, VIEW)  # more browsing in the window rides on the same wake-up
    assert await until_delivered(dispatcher) == 2 and time.monotonic() - queued >= window
    woken = time.monotonic()
    assert await signals(env.client, shopper) == ["activity"]
    queue(db, shopper, VIEW, VIEW, CART, "purchased")
    assert await dispatcher.dispatch_once() == 1  # the purchase goes at once; the browsing waits
    held = undelivered(db, shopper)
    assert len(held) == 3 and all(r.claim_owner is None and as_utc(r.available_at) > utcnow() for r in held)
    assert await signals(env.client, shopper) == ["activity", "purchased"]
    assert await until_delivered(dispatcher) == 3 and time.monotonic() - woken >= window
    assert await signals(env.client, shopper) == ["activity", "purchased", "activity"]
    assert undelivered(db, shopper) == []
    # Held once, never again: rows that already waited go at once, though the hub was just woken.
    queue(db, shopper, VIEW)
    assert await dispatcher.dispatch_once() == 0
    [again] = undelivered(db, shopper)
    with transaction(db.engine) as session:  # its window is over
        session.get(OutboxRow, again.id).available_at = utcnow()
    queue(db, shopper, VIEW)
    assert await dispatcher.dispatch_once() == 2
    assert await signals(env.client, shopper) == ["activity", "purchased", "activity", "activity"]
    # every one went gathered: the hub routes it without a debounce of its own
    assert await gathered(env.client, shopper) == [True, True, True]


async def test_without_a_window_browsing_goes_at_once_for_the_hub_to_gather(env, db):
    dispatcher = Dispatcher(db.engine, settings_for(db.url, dispatch_activity_window=0), client=env.client)
    shopper = person()
    queue(db, shopper, VIEW, CART)
    assert await dispatcher.dispatch_once() == 2
    assert await gathered(env.client, shopper) == [False]


class InFlight(Interceptor):
    """Counts signal-with-starts in flight; each is held a moment so overlaps are visible."""

    def __init__(self) -> None:
        self.now = self.most = self.calls = 0

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        counter = self

        class Counting(OutboundInterceptor):
            async def start_workflow(self, input: StartWorkflowInput):
                counter.now += 1
                counter.calls += 1
                counter.most = max(counter.most, counter.now)
                try:
                    await asyncio.sleep(0.05)
                    return await super().start_workflow(input)
                finally:
                    counter.now -= 1

        return Counting(next)


async def test_people_are_signalled_in_parallel_with_bounded_concurrency(env, db):
    counter = InFlight()
    client = Client(**{**env.client.config(), "interceptors": [counter]})
    dispatcher = Dispatcher(db.engine, settings_for(db.url, dispatch_concurrency=3), client=client)
    people = [person() for _ in range(10)]
    for someone in people:
        queue(db, someone, "identified", "purchased")
    assert await dispatcher.dispatch_once() == 20
    assert counter.calls == 20 and counter.most == 3
    for someone in people:
        assert await signals(env.client, someone) == ["identified", "purchased"]
