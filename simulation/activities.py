"""Dry-run activities for what-if simulations: the same activity names and typed I/O as
`StoreActivities`, so the production hub and journey workflows run unchanged against them.

They never write and never deliver. The store is read once, up front, into `PersonSnapshot`s
(`load_snapshots`: a handful of set-based queries for any number of people), and from then on
everything is answered in memory:

- the history is cut at the simulated moment: an activity sees the events with a timestamp at or
  before the workflow's clock (the time-skipping server's clock, see `simulation/simulator.py`), so a
  purchase later in the history is invisible until simulated time passes it;
- sends go to an in-memory message log (the dry-run channel), with the items personalisation
  would show; the frequency cap reads that log plus the person's real messages sent before the
  simulation starts;
- journey starts, notes, skips, exits and conversions go to the same in-memory log, which
  `simulation/simulator.py` turns into the timeline.

Timestamps inside a simulation are shifted onto the test server's clock (`SimPerson.offset`);
`SimEntry.at` is kept shifted and converted back by the runner.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast
from collections.abc import Iterable

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from activities.store_activities import (  # the same look-back, catalog rows and sales ranking
    HISTORY_HORIZON,
    JourneyActivities,
    catalog_entry,
    ranked_catalog,
)
from journeys import taxonomy
from journeys.attribution import Order, Touch, credit
from journeys.experiments import assign
from journeys.history import HistoryEvent, PersonHistory, as_utc
from journeys.personalise import Catalog, nothing_to_show, personalise, skus_in
from journeys.policy import JOURNEY_NAMES, Policy
from journeys.routing import open_cart, project_history
from journeys.segments import PersonFacts, StoredEvent, channel_consent, facts_of, members_of
from journeys.send_rules import check_send, recipient, step_cart
from store.models import Event, Identifier, JourneyRun, Message, Person, Product
from workflows.models import (
    Conversion,
    JourneyNote,
    JourneyStart,
    PersonContext,
    PersonLookup,
    SendCheck,
    SendCheckInput,
    SendInput,
    SendResult,
)

CHUNK = 500  # ids per IN (...) list


@dataclass
class PersonSnapshot:
    """What the store says about one person, read once. Times are real (unshifted), UTC."""

    person_id: str
    identified_at: datetime
    timezone: str | None
    traits: dict
    suppressed: bool
    email_unsubscribed: bool
    sms_consent: bool
    emails: list[str]
    phones: list[str]
    user_ids: list[str]
    events: list[HistoryEvent]  # every non-duplicate event, oldest first, including later ones
    sent_at: list[datetime]  # the person's real messages with status sent
    runs: list[tuple[str, datetime, str | None]]  # real journey runs: (route, started_at, cart_recovery_key)

    @property
    def label(self) -> str:
        return self.emails[0] if self.emails else self.user_ids[0] if self.user_ids else self.person_id


@dataclass
class TimelineEntry:
    """One line of a simulated timeline, as shown to the marketer."""

    at: datetime
    kind: str  # decision | waiting | sent | skipped | exit | completed | conversion | event
    journey: str = ""
    reason: str = ""
    step: int | None = None
    until: datetime | None = None
    template: str | None = None
    variant: str | None = None  # the experiment variant (journeys/experiments.py), when the step has some
    channel: str | None = None
    items: list[dict] = field(default_factory=list)
    cart_value: float | None = None
    category: str | None = None
    route: str | None = None

    def as_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if v not in (None, [], "")}
        data["at"] = self.at.isoformat()
        if self.until:
            data["until"] = self.until.isoformat()
        return data


@dataclass
class SimEntry(TimelineEntry):
    """A timeline line while the simulation runs: `at` / `until` on the simulation clock (shifted)."""

    workflow_id: str | None = None


@dataclass
class RouteAsked:
    """The hub routed at `at` with this context (its `decide_route` input), on the simulation clock."""

    at: datetime
    context: PersonContext


@dataclass
class SendTimeAsked:
    """A journey asked at `at` when it may send (its `earliest_send` input), on the simulation clock."""

    at: datetime
    last_message_at: datetime | None
    timezone: str | None


@dataclass
class AttributionAsked:
    """The hub credited the order placed at `at`: the last-touch rule's input but the window."""

    at: datetime
    order: Order
    touches: list[Touch]


@dataclass
class SimPerson:
    """A snapshot placed on the simulation clock (every time + `offset`), plus what the simulation
    has done to it so far."""

    snapshot: PersonSnapshot
    offset: timedelta
    start: datetime  # simulated start, shifted
    events: list[HistoryEvent] = field(default_factory=list)
    sent_before: datetime | None = None  # last real message sent before the start, shifted
    runs_before: list[tuple[str, datetime, str | None]] = field(default_factory=list)
    log: list[SimEntry] = field(default_factory=list)
    messages: dict[str, SimEntry] = field(default_factory=dict)  # idempotency key → sent entry
    runs: dict[str, tuple[str, datetime, str | None]] = field(default_factory=dict)  # workflow id → run
    # Every question the policy answered for this person, with its inputs: a backtest re-asks them
    # under the other policy to find whose timeline cannot differ (`simulation/simulator.py`).
    asked: list[RouteAsked | SendTimeAsked | AttributionAsked] = field(default_factory=list)

    @classmethod
    def place(cls, snapshot: PersonSnapshot, start_real: datetime, offset: timedelta) -> SimPerson:
        start_real = as_utc(start_real)
        events = [e.model_copy(update={"timestamp": e.timestamp + offset}) for e in snapshot.events]
        before = [t for t in snapshot.sent_at if t < start_real]
        return cls(
            snapshot=snapshot,
            offset=offset,
            start=start_real + offset,
            events=events,
            sent_before=max(before) + offset if before else None,
            runs_before=[
                (route, started + offset, key) for route, started, key in snapshot.runs if started < start_real
            ],
        )

    def history(self, now: datetime) -> PersonHistory:
        """The merged history as the store activities would load it at `now`: nothing later than
        `now`, and only `HISTORY_HORIZON` back (orders: always)."""
        since = now - HISTORY_HORIZON
        visible = [
            e
            for e in self.events
            if e.timestamp <= now and (e.timestamp >= since or e.name == taxonomy.ORDER_COMPLETED)
        ]
        return PersonHistory(
            person_id=self.snapshot.person_id,
            identified_at=self.snapshot.identified_at + self.offset,
            timezone=self.snapshot.timezone,
            events=visible,
        )

    def asked_until(self, horizon: timedelta) -> list[RouteAsked | SendTimeAsked | AttributionAsked]:
        """The questions asked up to `horizon` after the start (what the timeline shows)."""
        return [question for question in self.asked if question.at <= self.start + horizon]

    def recipient(self, channel: str) -> str | None:
        return recipient(channel, self.snapshot.emails, self.snapshot.phones, self.snapshot.person_id)

    def facts(self) -> PersonFacts:
        """What segments read, as the store loads it (`store/segments.load_facts`), on the simulation clock."""
        snap = self.snapshot
        return facts_of(
            snap.person_id,
            snap.traits,
            [
                StoredEvent(
                    message_id=f"{i:09d}", name=e.name, at=e.timestamp, properties=e.properties, order_id=e.order_id
                )
                for i, e in enumerate(self.events)
            ],
            consent=channel_consent(snap.suppressed, snap.email_unsubscribed, snap.sms_consent),
            address={"email": bool(snap.emails), "sms": bool(snap.phones)},
        )

    def last_message_at(self, now: datetime) -> datetime | None:
        simulated = [m.at for m in self.messages.values() if m.at <= now]
        candidates = simulated + ([self.sent_before] if self.sent_before else [])
        return max(candidates) if candidates else None


SIMULATED_NOW_HEADER = "breadcrumb-simulated-now"
_simulated_now: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("simulated_now", default=None)


def sim_now() -> datetime:
    """The simulated moment inside an activity: the calling workflow's clock when it scheduled the
    activity (stamped into a header by `SimulatedExecution`; the test server's own activity timestamps
    are wall-clock times, not its skipped clock)."""
    now = _simulated_now.get()
    if now is None:
        raise RuntimeError("simulated activities need the SimulatedExecution interceptor on their worker")
    return now


def _stamp(input: StartActivityInput | StartLocalActivityInput) -> None:
    stamp = Payload(metadata={"encoding": b"binary/plain"}, data=workflow.now().isoformat().encode())
    input.headers = {**input.headers, SIMULATED_NOW_HEADER: stamp}


class _InProcessOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput):
        """Run it as a local activity: same name, input, timeouts and retries, no server round trip."""
        _stamp(input)
        return super().start_local_activity(
            StartLocalActivityInput(
                activity=input.activity,
                args=input.args,
                activity_id=input.activity_id,
                schedule_to_close_timeout=input.schedule_to_close_timeout,
                schedule_to_start_timeout=input.schedule_to_start_timeout,
                start_to_close_timeout=input.start_to_close_timeout,
                retry_policy=input.retry_policy,
                local_retry_threshold=None,
                cancellation_type=input.cancellation_type,
                headers=input.headers,
                summary=input.summary,
                arg_types=input.arg_types,
                ret_type=input.ret_type,
            )
        )

    def start_local_activity(self, input: StartLocalActivityInput):
        _stamp(input)
        return super().start_local_activity(input)


class _InProcessInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_InProcessOutbound(outbound))


class _ClockInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput):
        stamp = input.headers.get(SIMULATED_NOW_HEADER)
        token = _simulated_now.set(as_utc(datetime.fromisoformat(stamp.data.decode())) if stamp else None)
        try:
            return await super().execute_activity(input)
        finally:
            _simulated_now.reset(token)


class SimulatedExecution(Interceptor):
    """Worker interceptor of the simulation worker; the workflows are untouched.

    - Every activity a workflow schedules carries the workflow's `now`, which the simulated
      activities read as the present.
    - Every activity runs in the worker's own process, as a local activity. The dry-run activities
      are in-memory look-ups, so scheduling each through the server (a workflow task to schedule it,
      an activity task, another workflow task for its result) was most of a simulation's cost:
      in-process, a backtest takes about a third less CPU. The order of events within the workflow
      is the same, and so is the timeline; what a real worker gains from regular activities
      (durable before they run, retried across worker crashes) does not matter to a run in memory."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput):
        return _InProcessInbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ClockInbound(next)


class SimulatedActivities(JourneyActivities):
    """The dry-run twin of `StoreActivities`: same names, same models, memory only.

    One instance serves one simulation run (one policy); people are keyed by person id."""

    def __init__(self, people: dict[str, SimPerson], catalog: Catalog, policy: Policy | None = None) -> None:
        self.people = people
        self.catalog = catalog
        self.policy = policy  # the run's policy: hubs get their history projected for it, as in production
        self._lock = threading.Lock()

    # -- the activities ---------------------------------------------------------------------------

    @activity.defn(name="load_person")
    async def load_person(self, lookup: PersonLookup) -> PersonContext | None:
        """The hub loads the person right before it routes them (`workflows/hub.py`). The backtest
        re-asks the question under another policy, so it records the full history; the hub gets it
        projected for the run's policy, as the store activities do."""
        now = sim_now()
        context = self.context(lookup.person_id, now)
        if context is None:
            return None
        self.people[lookup.person_id].asked.append(RouteAsked(at=now, context=context))
        if self.policy is None:
            return context
        return context.model_copy(
            update={
                "history": project_history(context.history, self.policy, now),
                "policy": self.policy if self.policy.version != lookup.policy_version else None,
            }
        )

    @activity.defn(name="start_journey")
    async def start_journey(self, start: JourneyStart) -> bool:
        return self.record_start(start)

    @activity.defn(name="check_before_send")
    async def check_before_send(self, check: SendCheckInput) -> SendCheck:
        """A journey checks right before it asks when it may send (`workflows/journey.py`)."""
        now = sim_now()
        result = self.check(check, now)
        if person := self.people.get(check.person_id):
            person.asked.append(SendTimeAsked(at=now, last_message_at=result.last_message_at, timezone=result.timezone))
        return result

    @activity.defn(name="send_step")
    async def send_step(self, send: SendInput) -> SendResult:
        return self.send(send)

    @activity.defn(name="record_journey_note")
    async def record_journey_note(self, note: JourneyNote) -> None:
        self.note(note)

    @activity.defn(name="record_conversion")
    async def record_conversion(self, conversion: Conversion) -> None:
        self.conversion(conversion)

    # -- their bodies, with the simulated moment passed in (unit-testable without a worker) ------

    def context(self, person_id: str, now: datetime) -> PersonContext | None:
        person = self.people.get(person_id)
        if person is None:
            return None
        runs = [(route, started) for route, started, _ in person.runs_before] + [
            (route, started) for route, started, _ in person.runs.values()
        ]
        runs = [(route, started) for route, started in runs if route in JOURNEY_NAMES]
        last_started: dict[str, datetime] = {}
        for route, started in runs:
            last_started[route] = max(started, last_started.get(route, started))
        recovered = sorted({key for _, _, key in [*person.runs_before, *person.runs.values()] if key})
        named = self.policy.journey_segments() if self.policy is not None else {}
        return PersonContext(
            history=person.history(now),
            last_started=last_started,
            journeys_count=len(runs),
            recovered_carts=recovered,
            segments=sorted(members_of(named, person.facts(), now)) if named else [],
        )

    def _person(self, person_id: str) -> SimPerson:
        person = self.people.get(person_id)
        if person is None:  # not part of this simulation: fail the workflow rather than retry forever
            raise ApplicationError(f"person {person_id} is not in this simulation", non_retryable=True)
        return person

    def record_start(self, start: JourneyStart) -> bool:
        person = self._person(start.person_id)
        cart_key = start.cart_id if start.route == "cart_recovery" and start.cart_id else None
        with self._lock:
            if start.workflow_id in person.runs:
                return True
            keys = {key for _, _, key in person.runs_before} | {key for _, _, key in person.runs.values()}
            if cart_key and cart_key in keys:
                person.log.append(
                    SimEntry(
                        at=start.at,
                        kind="skipped",
                        journey=start.route,
                        route=start.route,
                        reason=f"cart {cart_key} already had its recovery journey",
                        workflow_id=start.workflow_id,
                    )
                )
                return False
            person.runs[start.workflow_id] = (start.route, start.at, cart_key)
            person.log.append(
                SimEntry(
                    at=start.at,
                    kind="decision",
                    journey=start.route,
                    route=start.route,
                    reason=start.reason,
                    cart_value=start.cart_value,
                    workflow_id=start.workflow_id,
                )
            )
        return True

    def check(self, check: SendCheckInput, now: datetime) -> SendCheck:
        """What `StoreActivities.check_before_send` answers, from the snapshot at `now`
        (tests/test_simulate.py checks the two agree)."""
        person = self.people.get(check.person_id)
        if person is None:
            return SendCheck(person_exists=False)
        snap = person.snapshot
        result = check_send(
            person.history(now),
            route=check.route,
            channel=check.channel,
            cart_id=check.cart_id,
            timezone=snap.timezone,
            suppressed="suppressed" if snap.suppressed else None,
            email_unsubscribed=snap.email_unsubscribed,
            sms_consent=snap.sms_consent,
            reachable=bool(person.recipient(check.channel)),
            last_message_at=person.last_message_at(now),
        )
        named = self.policy.route_segments(check.route) if self.policy is not None else {}
        if self.policy is not None and named:
            member_of = members_of(named, person.facts(), now)
            result.segment = self.policy.segment_block(check.route, member_of, started=True)
        return result

    def send(self, send: SendInput) -> SendResult:
        person = self._person(send.person_id)
        key = f"{send.workflow_id}:{send.step}"
        with self._lock:
            known = person.messages.get(key)
        if known is not None:
            return SendResult(message_id=key, status="sent")
        history = person.history(send.at)
        cart = step_cart(history, send.cart_id) if send.route == "cart_recovery" else None
        shown = personalise(send.route, history.events, self.catalog, cart)
        # The person's variant by the send's own hash; an auto-winner is not simulated (no decision store).
        variant = assign(send.variants, send.person_id, send.route, send.step) if send.variants else None
        template, label = (variant.template, variant.label) if variant else (send.template, None)
        if reason := nothing_to_show(send.route, shown, history.events):
            with self._lock:
                person.log.append(
                    SimEntry(
                        at=send.at,
                        kind="skipped",
                        journey=send.route,
                        step=send.step,
                        template=template,
                        variant=label,
                        channel=send.channel,
                        reason=reason,
                        workflow_id=send.workflow_id,
                    )
                )
            return SendResult(message_id=key, status="skipped", reason=reason, variant=label)
        items = [item.model_dump(exclude_none=True) for item in shown.items]
        entry = SimEntry(
            at=send.at,
            kind="sent",
            journey=send.route,
            step=send.step,
            template=template,
            variant=label,
            channel=send.channel,
            items=items,
            cart_value=shown.cart_value,
            category=shown.category,
            workflow_id=send.workflow_id,
            reason=f"{template} via {send.channel} (dry run)",
        )
        with self._lock:
            if key not in person.messages:
                person.messages[key] = entry
                person.log.append(entry)
        return SendResult(message_id=key, status="sent", variant=label)

    def note(self, note: JourneyNote) -> None:
        person = self.people.get(note.person_id)
        if person is None:
            return
        with self._lock:
            person.log.append(
                SimEntry(
                    at=note.at,
                    kind=note.kind,
                    journey=note.journey,
                    reason=note.reason,
                    step=note.step,
                    until=note.until,
                    workflow_id=note.workflow_id,
                )
            )

    def conversion(self, conversion: Conversion) -> None:
        person = self.people.get(conversion.person_id)
        if person is None:
            return
        ordered_at = conversion.ordered_at or conversion.at
        touches = [
            Touch(message_id=key, person_id=conversion.person_id, journey=m.journey, step=m.step or 0, sent_at=m.at)
            for key, m in person.messages.items()
        ]
        order = Order(
            order_key=conversion.order_id or "",
            person_id=conversion.person_id,
            ordered_at=ordered_at,
            revenue=conversion.revenue,
        )
        attribution = credit(order, touches, conversion.attribution_window)
        touch = attribution.touch
        with self._lock:
            person.asked.append(AttributionAsked(at=ordered_at, order=order, touches=touches))
            person.log.append(
                SimEntry(
                    at=ordered_at,
                    kind="conversion",
                    journey=touch.journey if touch else "none",
                    reason=attribution.note,
                    step=touch.step if touch else None,
                )
            )


# -- reading the store, once ----------------------------------------------------------------------


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for index in range(0, len(values), CHUNK):
        yield values[index : index + CHUNK]


def find_person(engine: Engine, who: str) -> str | None:
    """A person id from an email, a user id or a person id."""
    with Session(engine) as session:
        if session.get(Person, who) is not None:
            return who
        value = who.strip()
        for kind, candidate in (("email", value.lower()), ("user_id", value), ("phone", value)):
            found = session.exec(
                select(col(Identifier.person_id)).where(
                    col(Identifier.kind) == kind, col(Identifier.value) == candidate
                )
            ).first()
            if found:
                return found
    return None


def people_identified(
    engine: Engine, since: datetime, until: datetime | None = None, limit: int | None = None
) -> list[str]:
    """Ids of the people identified in [since, until), oldest first."""
    with Session(engine) as session:
        query = select(col(Person.id)).where(col(Person.identified_at) >= since)
        if until is not None:
            query = query.where(col(Person.identified_at) < until)
        query = query.order_by(col(Person.identified_at), col(Person.id))
        if limit:
            query = query.limit(limit)
        return list(session.exec(query).all())


def load_snapshots(engine: Engine, person_ids: list[str]) -> dict[str, PersonSnapshot]:
    """Everything the simulation needs about these people, in five queries per chunk of ids."""
    snapshots: dict[str, PersonSnapshot] = {}
    with Session(engine) as session:
        for ids in _chunks(list(dict.fromkeys(person_ids))):
            people = session.exec(select(Person).where(col(Person.id).in_(ids))).all()
            identifiers: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for person_id, kind, value in session.exec(
                select(col(Identifier.person_id), col(Identifier.kind), col(Identifier.value))
                .where(col(Identifier.person_id).in_(ids))
                .order_by(col(Identifier.id))
            ).all():
                identifiers[person_id].append((kind, value))
            events: dict[str, list[HistoryEvent]] = defaultdict(list)
            for e in session.exec(
                select(Event)
                .where(col(Event.person_id).in_(ids), col(Event.duplicate_of).is_(None))
                .order_by(col(Event.timestamp), col(Event.id))
            ).all():
                events[cast(str, e.person_id)].append(
                    HistoryEvent(  # selected by person id: never None
                        name=e.name,
                        timestamp=e.timestamp,
                        properties=e.properties or {},
                        cart_id=e.cart_id,
                        order_id=e.order_id,
                        source=e.source,
                    )
                )
            sent: dict[str, list[datetime]] = defaultdict(list)
            for person_id, sent_at in session.exec(
                select(col(Message.person_id), col(Message.sent_at)).where(
                    col(Message.person_id).in_(ids), col(Message.status) == "sent", col(Message.sent_at).is_not(None)
                )
            ).all():
                sent[person_id].append(as_utc(cast(datetime, sent_at)))  # selected where not null
            runs: dict[str, list[tuple[str, datetime, str | None]]] = defaultdict(list)
            for person_id, route, started_at, key in session.exec(
                select(
                    col(JourneyRun.person_id),
                    col(JourneyRun.route),
                    col(JourneyRun.started_at),
                    col(JourneyRun.cart_recovery_key),
                ).where(col(JourneyRun.person_id).in_(ids))
            ).all():
                runs[person_id].append((route, as_utc(started_at), key))
            for person in people:
                ids_of = identifiers[person.id]
                snapshots[person.id] = PersonSnapshot(
                    person_id=person.id,
                    identified_at=as_utc(person.identified_at),
                    timezone=person.timezone,
                    traits=person.traits or {},
                    suppressed=bool(person.suppressed),
                    email_unsubscribed=bool(person.email_unsubscribed),
                    sms_consent=bool(person.sms_consent),
                    emails=[v for k, v in ids_of if k == "email"],
                    phones=[v for k, v in ids_of if k == "phone"],
                    user_ids=[v for k, v in ids_of if k == "user_id"],
                    events=events[person.id],
                    sent_at=sent[person.id],
                    runs=runs[person.id],
                )
    return snapshots


def load_catalog_for(engine: Engine, snapshots: Iterable[PersonSnapshot]) -> Catalog:
    """The catalog rows any of these people's messages could use: every product their histories
    mention, and the ranked in-stock products of the shop and of each category they looked at
    (`ranked_catalog`, the store activities' ranking) — a superset of what the store activities
    load per message, so personalisation picks the same. Bestsellers rank by the sales the workers
    last counted (`products.recent_orders`): a dry run reads, it does not count them again."""
    snapshots = list(snapshots)
    skus: set[str] = set()
    for snap in snapshots:
        skus |= skus_in(snap.events, open_cart(snap.events))
    rows: list[Product] = []
    with Session(engine) as session:
        for chunk in _chunks(sorted(skus)):
            rows += list(session.exec(select(Product).where(col(Product.sku).in_(chunk))))
        known = Catalog(catalog_entry(r) for r in rows)
        # Any category a cut of a history could anchor on: those its events name, or their products'.
        categories = {
            c.strip()
            for snap in snapshots
            for e in snap.events
            if isinstance(c := (e.properties or {}).get("category"), str) and c.strip()
        }
        categories |= {c for sku in skus if (c := known.category_of(sku))}
        return ranked_catalog(session, rows, sorted(categories))
