"""Segments: named groups of people defined on their merged behaviour (`[segments.NAME]` in
journeys.toml), and the pure rule that says whether one person is in one.

A segment is one condition: on events (how many of an event, optionally with given properties,
inside a window), a trait, their orders, consent, or channel reachability; or `all`/`any`/`not` of
conditions. `is_member` reads plain facts (`PersonFacts`) that the store loads for many people at
once (`store/segments.py`), so the rule is tested without a database and the store cannot drift
from it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from journeys import taxonomy
from journeys.attribution import order_revenue
from journeys.history import as_utc

Scalar = str | int | float | bool
Channel = Literal["email", "sms"]


def _duration(value: object) -> timedelta:
    from journeys.policy import parse_duration  # the policy's own duration syntax ("30d", "4h", …)

    return parse_duration(value)


Window = Annotated[timedelta, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventRule(_Strict):
    """At least `at_least` (and at most `at_most`) `name` events inside `within` before now (ever
    when left out), counting only events whose properties equal every `where` pair."""

    name: str = Field(min_length=1)
    at_least: int = Field(default=1, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    within: Window | None = None
    where: dict[str, Scalar] = {}

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        return taxonomy.canonical_name(name)

    @model_validator(mode="after")
    def _range(self) -> EventRule:
        if self.at_most is not None and self.at_most < self.at_least:
            raise ValueError("at_most is below at_least")
        return self


class TraitRule(_Strict):
    """A trait of the person: present (`exists`), equal to a value, one of values, or a number in a range."""

    key: str = Field(min_length=1)
    exists: bool | None = None
    equals: Scalar | None = None
    one_of: list[Scalar] | None = None
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_test(self) -> TraitRule:
        tests = [self.exists, self.equals, self.one_of, self.at_least, self.at_most]
        if all(test is None for test in tests):
            raise ValueError("say what the trait must be: exists, equals, one_of, at_least or at_most")
        return self


class OrdersRule(_Strict):
    """Their orders (`Order Completed`, one per order id, cancelled ones left out): ever purchased or
    not, how many, how much in total, how long since the last one. Every field given must hold."""

    purchased: bool | None = None
    count_at_least: int | None = Field(default=None, ge=0)
    count_at_most: int | None = Field(default=None, ge=0)
    spent_at_least: float | None = None
    spent_at_most: float | None = None
    last_within: Window | None = None  # ordered, the last time at most this long ago
    last_older_than: Window | None = None  # ordered, the last time longer ago than this (lapsed)

    @model_validator(mode="after")
    def _one_test(self) -> OrdersRule:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError(
                "say what the orders must be: purchased, count_at_least, count_at_most, spent_at_least, "
                "spent_at_most, last_within or last_older_than"
            )
        return self


class Condition(_Strict):
    """Exactly one of: `event`, `trait`, `orders`, `consent` (the channel may message them),
    `reachable` (consent and an address), `all`, `any`, `not`."""

    event: EventRule | None = None
    trait: TraitRule | None = None
    orders: OrdersRule | None = None
    consent: Channel | None = None
    reachable: Channel | None = None
    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            keys = "event, trait, orders, consent, reachable, all, any or not"
            found = ", ".join(name.rstrip("_") for name in given) or "none"
            raise ValueError(f"a condition is exactly one of {keys} (found: {found})")
        return self

    def is_time_based(self) -> bool:
        """Whether membership can change with nothing new happening (a window sliding by)."""
        if self.event is not None:
            return self.event.within is not None
        if self.orders is not None:
            return self.orders.last_within is not None or self.orders.last_older_than is not None
        return any(child.is_time_based() for child in self.children())

    def children(self) -> list[Condition]:
        return self.all or self.any or ([self.not_] if self.not_ is not None else [])

    def event_rules(self) -> list[EventRule]:
        """Every event rule inside, for the store to load just those events."""
        if self.event is not None:
            return [self.event]
        return [rule for child in self.children() for rule in child.event_rules()]

    def reads_orders(self) -> bool:
        return self.orders is not None or any(child.reads_orders() for child in self.children())


Segment = Condition  # a segment is its one (possibly combined) condition


class FactEvent(BaseModel):
    name: str
    at: datetime
    properties: dict[str, Any] = {}


class OrderFact(BaseModel):
    order_key: str
    at: datetime
    revenue: float = 0.0
    cancelled_at: datetime | None = None  # an `Order Cancelled` naming it: from then on it does not count


class StoredEvent(BaseModel):
    """One stored event (not the other copy of one) as the store hands it to `facts_of`."""

    message_id: str
    name: str
    at: datetime
    properties: dict[str, Any] = {}
    order_id: str | None = None


class PersonFacts(BaseModel):
    """What segments read about one person: the events the segments name, their orders (each with
    its cancellation, if any), traits, and per channel whether they consent and have an address."""

    person_id: str
    traits: dict[str, Any] = {}
    events: list[FactEvent] = []
    orders: list[OrderFact] = []
    consent: dict[str, bool] = {}  # channel → may be messaged (not unsubscribed, not suppressed)
    address: dict[str, bool] = {}  # channel → has an email / phone


def facts_of(
    person_id: str,
    traits: dict[str, Any],
    events: list[StoredEvent],
    consent: dict[str, bool],
    address: dict[str, bool],
) -> PersonFacts:
    """A person's facts from their stored events: orders are the `Order Completed` events, one per
    order id (the first one's time and revenue; an order without id is its own order), each marked
    with the first `Order Cancelled` naming it."""
    ordered = sorted(events, key=lambda e: (as_utc(e.at), e.message_id))
    orders: dict[str, OrderFact] = {}
    cancelled: dict[str, datetime] = {}
    for event in ordered:
        key = event.order_id or _text(event.properties.get("order_id"))
        if event.name == taxonomy.ORDER_COMPLETED:
            key = key or f"message:{event.message_id}"
            if key not in orders:
                orders[key] = OrderFact(order_key=key, at=event.at, revenue=order_revenue(event.properties) or 0.0)
        elif event.name == taxonomy.ORDER_CANCELLED and key is not None:
            cancelled.setdefault(key, event.at)
    return PersonFacts(
        person_id=person_id,
        traits=traits,
        events=[FactEvent.model_construct(name=e.name, at=e.at, properties=e.properties) for e in ordered],
        orders=[order.model_copy(update={"cancelled_at": cancelled.get(key)}) for key, order in orders.items()],
        consent=consent,
        address=address,
    )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def channel_consent(suppressed: bool, email_unsubscribed: bool, sms_consent: bool) -> dict[str, bool]:
    """Per channel, whether the person's own flags let it message them (the `consent` condition)."""
    return {"email": not (suppressed or email_unsubscribed), "sms": not suppressed and sms_consent}


def members_of(segments: dict[str, Condition], facts: PersonFacts, now: datetime) -> set[str]:
    """The names of the segments (of `segments`) the person is in at `now`."""
    return {name for name, segment in segments.items() if is_member(segment, facts, now)}


def is_member(segment: Condition, facts: PersonFacts, now: datetime) -> bool:
    """Whether the person these facts describe is in the segment at `now` (facts after `now` do not count)."""
    now = as_utc(now)
    if segment.event is not None:
        return _events_hold(segment.event, facts, now)
    if segment.trait is not None:
        return _trait_holds(segment.trait, facts.traits)
    if segment.orders is not None:
        return _orders_hold(segment.orders, facts, now)
    if segment.consent is not None:
        return facts.consent.get(segment.consent, False)
    if segment.reachable is not None:
        return facts.consent.get(segment.reachable, False) and facts.address.get(segment.reachable, False)
    if segment.all is not None:
        return all(is_member(child, facts, now) for child in segment.all)
    if segment.any is not None:
        return any(is_member(child, facts, now) for child in segment.any)
    assert segment.not_ is not None  # a condition is exactly one of its fields
    return not is_member(segment.not_, facts, now)


def _events_hold(rule: EventRule, facts: PersonFacts, now: datetime) -> bool:
    since = now - rule.within if rule.within is not None else None
    count = sum(
        1
        for event in facts.events
        if event.name == rule.name
        and as_utc(event.at) <= now
        and (since is None or as_utc(event.at) >= since)
        and all(_same(event.properties.get(key), value) for key, value in rule.where.items())
    )
    return count >= rule.at_least and (rule.at_most is None or count <= rule.at_most)


def _same(found: object, wanted: Scalar) -> bool:
    """A property equals a `where` value: numbers by value (2 == 2.0, never True), text as written."""
    if isinstance(wanted, bool) or isinstance(found, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found == wanted
    if isinstance(wanted, (int, float)):
        return isinstance(found, (int, float)) and float(found) == float(wanted)
    return found == wanted


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _trait_holds(rule: TraitRule, traits: dict[str, Any]) -> bool:
    value = traits.get(rule.key)
    present = value is not None and value != ""
    if rule.exists is not None and present != rule.exists:
        return False
    if rule.equals is not None and not _same(value, rule.equals):
        return False
    if rule.one_of is not None and not any(_same(value, option) for option in rule.one_of):
        return False
    if rule.at_least is not None or rule.at_most is not None:
        number = _number(value)
        if number is None:
            return False
        if rule.at_least is not None and number < rule.at_least:
            return False
        if rule.at_most is not None and number > rule.at_most:
            return False
    return True


def _orders_hold(rule: OrdersRule, facts: PersonFacts, now: datetime) -> bool:
    orders = [
        order
        for order in facts.orders
        if as_utc(order.at) <= now and (order.cancelled_at is None or as_utc(order.cancelled_at) > now)
    ]
    count, spent = len(orders), round(sum(order.revenue for order in orders), 2)
    last = max((as_utc(order.at) for order in orders), default=None)
    checks = [
        rule.purchased is None or (count > 0) == rule.purchased,
        rule.count_at_least is None or count >= rule.count_at_least,
        rule.count_at_most is None or count <= rule.count_at_most,
        rule.spent_at_least is None or spent >= rule.spent_at_least,
        rule.spent_at_most is None or spent <= rule.spent_at_most,
        rule.last_within is None or (last is not None and now - last <= rule.last_within),
        rule.last_older_than is None or (last is not None and now - last > rule.last_older_than),
    ]
    return all(checks)


def membership_block(
    only_if: list[str], unless: list[str], member_of: frozenset[str] | set[str], started: bool = False
) -> str | None:
    """Why a journey with these rules may not run for a person in segments `member_of`, or None: the
    first `only_if` segment they are not in ("not in segment vip", or "left segment vip" once the
    journey has `started`), else the first `unless` segment they are in ("in segment recent_buyers")."""
    for name in only_if:
        if name not in member_of:
            return f"{'left' if started else 'not in'} segment {name}"
    for name in unless:
        if name in member_of:
            return f"in segment {name}"
    return None
