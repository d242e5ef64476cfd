"""Generated shop histories and segments for the segment tests, and a brute-force judge written
from the rules as docs/segments.md states them — apart from the code under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC

from hypothesis import strategies as st

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ["Product Viewed", "Added to Cart", "Order Completed", "Order Cancelled"]
WINDOWS = ["1h", "1d", "7d", "30d"]
WINDOW_HOURS = {"1h": 1, "1d": 24, "7d": 168, "30d": 720}
VALUES = ["serum", "cream", 1, 2.0, True]  # 1 and True, 2 and 2.0: the equality rules matter


@dataclass
class RawEvent:
    name: str
    hours_ago: int  # negative: in the future
    properties: dict
    order_id: str | None = None
    duplicate: bool = False  # the other copy (client/server) of an event: never counts


@dataclass
class RawPerson:
    traits: dict
    events: list[RawEvent] = field(default_factory=list)
    email_unsubscribed: bool = False
    suppressed: bool = False
    sms_consent: bool = False
    has_email: bool = False
    has_phone: bool = False

    def at(self, event: RawEvent) -> datetime:
        return NOW - timedelta(hours=event.hours_ago)


# Hours that sit on, just inside and just outside every window (plus some spread and the future).
HOURS = st.sampled_from([-2, 0, 1, 2, 23, 24, 25, 100, 167, 168, 169, 719, 720, 721, 2000])


@st.composite
def raw_events(draw) -> RawEvent:
    name = draw(st.sampled_from(NAMES))
    properties = draw(st.dictionaries(st.sampled_from(["category", "size"]), st.sampled_from(VALUES), max_size=2))
    order_id = None
    if name in ("Order Completed", "Order Cancelled"):
        order_id = draw(st.sampled_from([None, "o1", "o2", "o3"]))
        if name == "Order Completed":
            properties = {**properties, **draw(st.sampled_from([{}, {"revenue": 40}, {"total": 25.5}, {"value": 100}]))}
    return RawEvent(name, draw(HOURS), properties, order_id, duplicate=draw(st.sampled_from([False, False, True])))


people = st.builds(
    RawPerson,
    traits=st.dictionaries(
        st.sampled_from(["tier", "orders_count", "vip"]), st.sampled_from(["gold", 0, 3, 7.5, True, ""])
    ),
    events=st.lists(raw_events(), max_size=12),
    email_unsubscribed=st.booleans(),
    suppressed=st.booleans(),
    sms_consent=st.booleans(),
    has_email=st.booleans(),
    has_phone=st.booleans(),
)


def leaf_conditions() -> st.SearchStrategy[dict]:
    event = st.fixed_dictionaries(
        {"name": st.sampled_from(NAMES[:3]), "at_least": st.integers(0, 3)},
        optional={
            "within": st.sampled_from(WINDOWS),
            "where": st.dictionaries(st.sampled_from(["category", "size"]), st.sampled_from(VALUES), max_size=1),
            "at_most": st.integers(3, 5),
        },
    )
    trait = st.one_of(
        st.fixed_dictionaries({"key": st.sampled_from(["tier", "vip"]), "equals": st.sampled_from(["gold", True, 3])}),
        st.fixed_dictionaries({"key": st.sampled_from(["tier", "vip"]), "exists": st.booleans()}),
        st.fixed_dictionaries({"key": st.just("orders_count"), "at_least": st.sampled_from([1, 3, 5])}),
        st.fixed_dictionaries({"key": st.just("tier"), "one_of": st.just(["gold", 3])}),
    )
    orders = st.fixed_dictionaries(
        {},
        optional={
            "purchased": st.booleans(),
            "count_at_least": st.integers(0, 3),
            "count_at_most": st.integers(0, 3),
            "spent_at_least": st.sampled_from([25.5, 40, 65.5, 100]),
            "spent_at_most": st.sampled_from([40, 140]),
            "last_within": st.sampled_from(WINDOWS),
            "last_older_than": st.sampled_from(WINDOWS),
        },
    ).filter(bool)
    return st.one_of(
        st.builds(lambda e: {"event": e}, event),
        st.builds(lambda t: {"trait": t}, trait),
        st.builds(lambda o: {"orders": o}, orders),
        st.builds(lambda c: {"consent": c}, st.sampled_from(["email", "sms"])),
        st.builds(lambda c: {"reachable": c}, st.sampled_from(["email", "sms"])),
    )


conditions = st.recursive(
    leaf_conditions(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=5,
)


def _equal(found, wanted) -> bool:
    if type(found) is bool or type(wanted) is bool:
        return found is wanted
    if type(found) in (int, float) and type(wanted) in (int, float):
        return found == wanted
    return type(found) is str and type(wanted) is str and found == wanted


def brute_force(condition: dict, person: RawPerson) -> bool:
    """Whether `person` is in `condition` at NOW, straight from the raw history."""
    if "all" in condition:
        return all(brute_force(c, person) for c in condition["all"])
    if "any" in condition:
        return any(brute_force(c, person) for c in condition["any"])
    if "not" in condition:
        return not brute_force(condition["not"], person)
    if "consent" in condition or "reachable" in condition:
        channel = condition.get("consent") or condition["reachable"]
        allowed = not person.suppressed and (
            not person.email_unsubscribed if channel == "email" else person.sms_consent
        )
        address = person.has_email if channel == "email" else person.has_phone
        return allowed and ("consent" in condition or address)
    if "trait" in condition:
        rule, value = condition["trait"], person.traits.get(condition["trait"]["key"])
        if "exists" in rule:
            return (value not in (None, "")) == rule["exists"]
        if "equals" in rule:
            return _equal(value, rule["equals"])
        if "one_of" in rule:
            return any(_equal(value, option) for option in rule["one_of"])
        return type(value) in (int, float) and value >= rule["at_least"]
    counted = [e for e in person.events if not e.duplicate and e.hours_ago >= 0]
    if "event" in condition:
        rule = condition["event"]
        hours = WINDOW_HOURS.get(rule.get("within"), 10**9)
        n = 0
        for e in counted:
            if e.name != rule["name"] or e.hours_ago > hours:
                continue
            if all(k in e.properties and _equal(e.properties[k], v) for k, v in rule.get("where", {}).items()):
                n += 1
        return n >= rule["at_least"] and n <= rule.get("at_most", 10**9)
    rule = condition["orders"]
    orders: dict[str, tuple[int, float]] = {}  # key → (hours ago, revenue) of its first event
    for i, e in enumerate(sorted(counted, key=lambda e: -e.hours_ago)):
        if e.name == "Order Completed":
            key = e.order_id or f"#{i}"
            if key not in orders:
                revenue = next((e.properties[k] for k in ("revenue", "total", "value") if k in e.properties), 0)
                orders[key] = (e.hours_ago, revenue)
    cancelled = {e.order_id for e in counted if e.name == "Order Cancelled" and e.order_id}
    live = [v for k, v in orders.items() if k not in cancelled]
    count, spent = len(live), sum(r for _, r in live)
    last = min((h for h, _ in live), default=None)
    tests = {
        "purchased": lambda want: (count > 0) == want,
        "count_at_least": lambda n: count >= n,
        "count_at_most": lambda n: count <= n,
        "spent_at_least": lambda x: spent >= x,
        "spent_at_most": lambda x: spent <= x,
        "last_within": lambda w: last is not None and last <= WINDOW_HOURS[w],
        "last_older_than": lambda w: last is not None and last > WINDOW_HOURS[w],
    }
    return all(tests[key](value) for key, value in rule.items())
