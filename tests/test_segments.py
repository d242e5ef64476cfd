"""Segment definitions and the pure membership rule: config errors name the key, and `is_member`
agrees with a brute-force judge over generated histories (windows, property filters, orders,
consent, combinations, and every window boundary)."""

from __future__ import annotations

import tomllib
from datetime import timedelta

import pytest
from hypothesis import given, settings

from journeys.policy import PolicyError, parse_policy
from journeys.segments import (
    Condition,
    FactEvent,
    OrderFact,
    PersonFacts,
    StoredEvent,
    channel_consent,
    facts_of,
    is_member,
)
from journeys.segments import membership_block
from segment_histories import NOW, RawPerson, brute_force, conditions, people


def facts(person: RawPerson) -> PersonFacts:
    stored = [
        StoredEvent(message_id=f"m{i:03d}", name=e.name, at=person.at(e), properties=e.properties, order_id=e.order_id)
        for i, e in enumerate(person.events)
        if not e.duplicate  # the store never hands over the other copy of an event
    ]
    return facts_of(
        "p1",
        person.traits,
        stored,
        consent=channel_consent(person.suppressed, person.email_unsubscribed, person.sms_consent),
        address={"email": person.has_email, "sms": person.has_phone},
    )


@settings(max_examples=400, deadline=None)
@given(condition=conditions, person=people)
def test_is_member_agrees_with_brute_force(condition, person):
    assert is_member(Condition.model_validate(condition), facts(person), NOW) == brute_force(condition, person)


def _viewed(hours_ago: float, **properties) -> FactEvent:
    return FactEvent(name="Product Viewed", at=NOW - timedelta(hours=hours_ago), properties=properties)


@pytest.mark.parametrize(
    ("hours_ago", "inside"), [(0, True), (167.99, True), (168, True), (168.01, False), (-0.01, False)]
)
def test_a_window_includes_its_start_and_now_and_nothing_later(hours_ago, inside):
    segment = Condition.model_validate({"event": {"name": "Product Viewed", "within": "7d"}})
    assert is_member(segment, PersonFacts(person_id="p", events=[_viewed(hours_ago)]), NOW) is inside


def test_property_filters_compare_numbers_by_value_and_never_as_booleans():
    two = Condition.model_validate({"event": {"name": "product viewed", "where": {"size": 2}}})  # name: any case
    assert is_member(two, PersonFacts(person_id="p", events=[_viewed(1, size=2.0)]), NOW)
    assert not is_member(two, PersonFacts(person_id="p", events=[_viewed(1, size="2")]), NOW)
    one = Condition.model_validate({"event": {"name": "Product Viewed", "where": {"size": 1}}})
    assert not is_member(one, PersonFacts(person_id="p", events=[_viewed(1, size=True)]), NOW)


def test_at_least_and_at_most_count_the_matching_events():
    segment = Condition.model_validate(
        {"event": {"name": "Product Viewed", "at_least": 2, "at_most": 3, "where": {"category": "serum"}}}
    )
    views = [_viewed(h, category="serum") for h in (1, 2, 3, 4)] + [_viewed(5, category="cream")]
    assert [is_member(segment, PersonFacts(person_id="p", events=views[:n]), NOW) for n in range(6)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]


def test_a_cancelled_order_stops_counting_from_its_cancellation():
    order = OrderFact(order_key="o1", at=NOW - timedelta(days=3), revenue=80, cancelled_at=NOW - timedelta(days=1))
    buyer = Condition.model_validate({"orders": {"purchased": True}})
    assert not is_member(buyer, PersonFacts(person_id="p", orders=[order]), NOW)
    assert is_member(buyer, PersonFacts(person_id="p", orders=[order]), NOW - timedelta(days=2))


def test_lapsed_and_recent_buyers_split_at_the_window():
    order = OrderFact(order_key="o1", at=NOW - timedelta(days=30), revenue=10)
    person = PersonFacts(person_id="p", orders=[order])
    recent = Condition.model_validate({"orders": {"last_within": "30d"}})
    lapsed = Condition.model_validate({"orders": {"last_older_than": "30d"}})
    assert (is_member(recent, person, NOW), is_member(lapsed, person, NOW)) == (True, False)
    later = NOW + timedelta(seconds=1)
    assert (is_member(recent, person, later), is_member(lapsed, person, later)) == (False, True)
    assert not is_member(lapsed, PersonFacts(person_id="p"), NOW)  # never ordered: not lapsed


def test_reachable_needs_consent_and_an_address():
    segment = Condition.model_validate({"reachable": "sms"})
    assert is_member(segment, PersonFacts(person_id="p", consent={"sms": True}, address={"sms": True}), NOW)
    assert not is_member(segment, PersonFacts(person_id="p", consent={"sms": True}, address={"sms": False}), NOW)
    assert not is_member(segment, PersonFacts(person_id="p", consent={"sms": False}, address={"sms": True}), NOW)


def test_time_based_segments_are_the_ones_with_a_window():
    assert Condition.model_validate(
        {"not": {"any": [{"consent": "email"}, {"orders": {"last_within": "1d"}}]}}
    ).is_time_based()
    assert not Condition.model_validate(
        {"all": [{"event": {"name": "Product Viewed"}}, {"orders": {"purchased": True}}]}
    ).is_time_based()


def test_membership_block_names_the_segment():
    assert membership_block(["vip"], ["recent_buyers"], {"vip"}) is None
    assert membership_block(["vip"], [], set()) == "not in segment vip"
    assert membership_block(["vip"], [], set(), started=True) == "left segment vip"
    assert membership_block([], ["recent_buyers"], {"recent_buyers"}) == "in segment recent_buyers"


@pytest.mark.parametrize(
    ("segments", "journeys", "message"),
    [
        ({"x": {"evnt": {}}}, {}, "segments.x.evnt: Extra inputs are not permitted"),
        ({"x": {"event": {"name": "A"}, "consent": "email"}}, {}, "exactly one of event, trait, orders"),
        ({"x": {}}, {}, "found: none"),
        (
            {"x": {"event": {"name": "A", "within": "soon"}}},
            {},
            "segments.x.event.within: Value error, invalid duration",
        ),
        (
            {"x": {"event": {"name": "A", "at_least": 3, "at_most": 1}}},
            {},
            "segments.x.event: Value error, at_most is below",
        ),
        ({"x": {"orders": {}}}, {}, "segments.x.orders: Value error, say what the orders must be"),
        ({"x": {"trait": {"key": "tier"}}}, {}, "segments.x.trait: Value error, say what the trait must be"),
        ({"x": {"consent": "pigeon"}}, {}, "segments.x.consent: Input should be 'email' or 'sms'"),
        ({"x": {"all": []}}, {}, "segments.x.all: List should have at least 1 item"),
        ({"x": {"not": {"trait": {"key": "a", "bogus": 1}}}}, {}, "segments.x.not.trait.bogus"),
        ({}, {"welcome": {"unless": ["recent_buyers"]}}, "journeys.welcome.unless: unknown segment 'recent_buyers'"),
        (
            {"vip": {"consent": "email"}},
            {"cart_recovery": {"only_if": ["vipp"]}},
            "journeys.cart_recovery.only_if: unknown segment 'vipp'",
        ),
    ],
)
def test_a_bad_segment_is_a_config_error_naming_the_key(segments, journeys, message):
    data = {"segments": segments, "journeys": {}}
    steps = {"steps": [{"delay": "1h", "template": "t"}]}
    data["journeys"] = {
        name: {**steps, **journeys.get(name, {})} for name in ("cart_recovery", "browse_recovery", "welcome")
    }
    with pytest.raises(PolicyError) as error:
        parse_policy(data)
    assert message in str(error.value)


def test_the_segments_journeys_toml_shows_parse_when_uncommented(repo_root):
    text = (repo_root / "journeys.toml").read_text()
    examples = text[text.index("# [segments.") :]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in examples.splitlines())
    data = tomllib.loads(text + "\n" + uncommented)
    data["journeys"]["welcome"]["unless"] = ["recent_buyers", "wholesale"]
    policy = parse_policy(data)
    assert list(policy.segments) == ["recent_buyers", "vip", "serum_browsers", "lapsed", "wholesale"]
    assert {name for name, s in policy.segments.items() if s.is_time_based()} == {
        "recent_buyers",
        "serum_browsers",
        "lapsed",
    }
    assert list(policy.journey_segments()) == ["recent_buyers", "wholesale"]
