"""The hub's view of a person is projected and bounded (issue 12): routing answers on the projected
history exactly as on the full one, nothing the shopper typed is in it, and a shopper with 10 000
events costs a small, constant payload."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, UTC

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from activities.store_activities import StoreActivities, person_history
from conftest import settings_for
from journeys.history import HistoryEvent, PersonHistory
from journeys.policy import parse_policy
from journeys.routing import decide_route, project_history
from store.models import Person
from store.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.hub_history import heavy_shopper  # noqa: E402
from workflows.models import PersonLookup

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NAMES = [
    "Product Viewed",
    "Added to Cart",
    "Removed from Cart",
    "Checkout Started",
    "Order Completed",
    "Collection Viewed",
    "Quiz Answered",
    "Email Captured",
    "Page Viewed",
]

properties = st.fixed_dictionaries(
    {},
    optional={
        "sku": st.sampled_from(["A", "B", "C"]),
        "product_id": st.sampled_from(["A", "p-9"]),
        "url": st.sampled_from(["/p/a", "/p/b"]),
        "variant": st.sampled_from(["s", "m"]),
        "quantity": st.sampled_from([0, 1, 2, "3", -1, "x"]),
        "price": st.sampled_from([10, 25.5, 60, "x", None]),
        "value": st.sampled_from([40, 120.0, None]),
        "order_id": st.sampled_from(["o-1", "o-2"]),
        "email": st.just("shopper@example.com"),
        "products": st.lists(
            st.fixed_dictionaries(
                {
                    "sku": st.sampled_from(["A", "B"]),
                    "price": st.sampled_from([20, 45]),
                    "quantity": st.sampled_from([1, 2]),
                }
            ),
            max_size=2,
        ),
    },
)
events = st.lists(
    st.builds(
        lambda name, minutes, props, cart: HistoryEvent(
            name=name, timestamp=NOW + timedelta(minutes=minutes), properties=props, cart_id=cart
        ),
        st.sampled_from(NAMES),
        st.integers(-60 * 24 * 10, 60),
        properties,
        st.sampled_from([None, "c1", "c2"]),
    ),
    max_size=60,
)
policies = st.builds(
    lambda weights, lookback, minimum, threshold: parse_policy(
        {
            "intent": {"weights": weights, "lookback": lookback},
            "cart_min_value": minimum,
            "browse_intent_threshold": threshold,
        }
    ),
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from([0.5, 1.0, 2.0, 0.1]), max_size=5),
    st.sampled_from(["1h", "1d", "7d"]),
    st.sampled_from([0, 50]),
    st.sampled_from([0, 1, 2.5, 5]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=events,
    policy=policies,
    keep=st.integers(0, 4),
    recovered=st.sets(st.sampled_from(["c1", "c2"])),
    cooled=st.sets(st.sampled_from(["cart_recovery", "browse_recovery", "welcome"])),
)
def test_routing_the_projected_history_answers_as_the_full_history(events, policy, keep, recovered, cooled):
    policy = policy.model_copy(
        update={
            "journeys": {
                name: journey.model_copy(update={"reentry_cooldown": timedelta(days=1)})
                for name, journey in policy.journeys.items()
            }
        }
    )
    history = PersonHistory(person_id="p-1", identified_at=NOW - timedelta(days=2), events=events)
    last_started = {route: NOW - timedelta(hours=3) for route in cooled}
    projected = project_history(history, policy, NOW, keep=keep)
    assert len(projected.events) <= keep + 1
    assert decide_route(projected, policy, NOW, last_started=last_started, recovered_carts=recovered) == decide_route(
        history, policy, NOW, last_started=last_started, recovered_carts=recovered
    )
    assert "shopper@example.com" not in projected.model_dump_json()


def test_a_recovered_cart_falls_through_to_browse_or_welcome():
    policy = parse_policy({"browse_intent_threshold": 2})
    cart = HistoryEvent(
        name="Added to Cart", timestamp=NOW - timedelta(hours=1), cart_id="c1", properties={"sku": "A", "price": 80}
    )
    views = [
        HistoryEvent(name="Product Viewed", timestamp=NOW - timedelta(minutes=10 * i), properties={"sku": f"S{i}"})
        for i in range(3)
    ]
    history = PersonHistory(person_id="p", identified_at=NOW, events=[cart])
    assert decide_route(history, policy, NOW).route == "cart_recovery"
    fell = decide_route(history, policy, NOW, recovered_carts={"c1"})
    assert (fell.route, fell.reason) == ("welcome", "open cart c1 already had its recovery, browse intent 0.0 < 2.0")
    browsing = history.model_copy(update={"events": [cart, *views]})
    assert decide_route(browsing, policy, NOW, recovered_carts={"c1"}).route == "browse_recovery"


def test_ten_thousand_events_cost_a_small_constant_payload(db):
    engine = db.engine
    activities = StoreActivities(engine, settings=settings_for(str(engine.url)))
    policy = activities.policies.current()
    sizes = {}
    for count in (10, 1_000, 10_000):
        at = datetime.now(UTC)
        person_id = heavy_shopper(engine, count, at)
        context = activities.load_person(PersonLookup(person_id=person_id, at=at, policy_version=policy.version))
        payload = context.model_dump_json()
        sizes[count] = len(payload)
        assert "heavy@example.com" not in payload and "Night cream" not in payload
        with Session(engine) as session:
            full = person_history(session, session.get(Person, person_id), at)
        assert len(full.events) == count
        assert decide_route(context.history, policy, at) == decide_route(full, policy, at)
    assert sizes[10_000] < 64 * 1024, sizes
    assert sizes[10_000] < 2 * sizes[1_000], sizes  # constant, not growing with the history


def test_a_lookup_scheduled_by_an_older_hub_is_read():
    """Hubs scheduled before the lookup existed ask `load_person` with the bare person id."""
    lookup = PersonLookup.model_validate("p-1")
    assert (lookup.person_id, lookup.at, lookup.policy_version) == ("p-1", None, None)
