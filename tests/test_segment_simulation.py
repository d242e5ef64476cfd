"""Segments in the what-if simulation: the dry-run activities judge `only_if`/`unless` as the store
activities do (parity, at routing and before a send), and a simulated run keeps a buyer out."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from activities.store_activities import StoreActivities
from conftest import settings_for
from journey_harness import identify, track
from journeys.personalise import Catalog
from journeys.policy import parse_policy
from simulation.activities import SimPerson, SimulatedActivities, find_person, load_snapshots
from simulation.simulator import Simulator
from store.ingest import ingest
from test_journeys_timeskipping import BASE_POLICY
from workflows.models import PersonLookup, SendCheckInput

SEGMENTS = {
    "recent_buyers": {"orders": {"last_within": "30d"}},
    "gold": {"all": [{"trait": {"key": "tier", "equals": "gold"}}, {"reachable": "email"}]},
}


def segment_policy():
    journeys = {name: dict(steps) for name, steps in BASE_POLICY["journeys"].items()}
    journeys["welcome"]["unless"] = ["recent_buyers"]
    journeys["cart_recovery"]["only_if"] = ["gold"]
    return parse_policy({**BASE_POLICY, "segments": SEGMENTS, "journeys": journeys})


def test_the_dry_run_judges_segments_as_the_store_does(engine):
    policy = segment_policy()
    start = datetime.now(UTC) - timedelta(days=2)
    ingest(
        engine,
        [
            identify("a1", "gold@example.com", tier="gold", at=start),
            identify("a2", "buyer@example.com", tier="silver", at=start),
            track("a2", "Order Completed", order_id="o1", revenue=20, at=start + timedelta(hours=1)),
            identify("a3", "plain@example.com", at=start),
        ],
        policy,
        api="test",
        endpoint="test",
    )
    settings = settings_for(str(engine.url))
    settings.__dict__["policy"] = policy
    store = StoreActivities(engine, settings=settings)
    now = datetime.now(UTC)
    seen = {}
    for email in ("gold@example.com", "buyer@example.com", "plain@example.com"):
        person_id = find_person(engine, email)
        snapshot = load_snapshots(engine, [person_id])[person_id]
        simulated = SimulatedActivities({person_id: SimPerson.place(snapshot, now, timedelta(0))}, Catalog(), policy)
        context = simulated.context(person_id, now)
        assert context is not None
        seen[email] = context.segments
        assert context.segments == store.load_person(PersonLookup(person_id=person_id, at=now)).segments
        for route in ("cart_recovery", "welcome", "browse_recovery"):
            ask = SendCheckInput(person_id=person_id, route=route, channel="email")
            assert simulated.check(ask, now).segment == store.check_before_send(ask).segment, (email, route)
    assert seen == {"gold@example.com": ["gold"], "buyer@example.com": ["recent_buyers"], "plain@example.com": []}
    buyer = find_person(engine, "buyer@example.com")
    assert store.check_before_send(SendCheckInput(person_id=buyer, route="welcome", channel="email")).segment == (
        "in segment recent_buyers"
    )
    plain = find_person(engine, "plain@example.com")
    assert store.check_before_send(SendCheckInput(person_id=plain, route="cart_recovery", channel="email")).segment == (
        "left segment gold"
    )


async def test_a_simulated_cart_is_not_recovered_for_someone_outside_only_if(engine):
    policy = segment_policy()
    start = datetime.now(UTC) - timedelta(days=3)
    ingest(
        engine,
        [
            track("c1", "Product Added", cart_id="k1", sku="S", price=90, at=start - timedelta(minutes=1)),
            identify("c1", "silver@example.com", tier="silver", at=start),
            track("c2", "Product Added", cart_id="k2", sku="S", price=90, at=start - timedelta(minutes=1)),
            identify("c2", "gold@example.com", tier="gold", at=start),
        ],
        policy,
        api="test",
        endpoint="test",
    )
    ids = [find_person(engine, e) for e in ("silver@example.com", "gold@example.com")]
    async with Simulator(engine=engine) as simulator:
        silver, gold = await simulator.simulate(policy, list(load_snapshots(engine, ids).values()))
    first = {t.label: next(e for e in t.entries if e.kind == "decision") for t in (silver, gold)}
    assert first["gold@example.com"].route == "cart_recovery"
    assert first["silver@example.com"].route == "welcome"
    assert "cart_recovery not allowed: not in segment gold" in first["silver@example.com"].reason
