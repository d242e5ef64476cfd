"""What-if simulation: the production hub and journeys on the time-skipping test server with the
dry-run activities — timelines, purchases replayed at their real times, never a write or a delivery,
parity of the guardrail look-up with the store activities, the backtest and its API."""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlmodel import Session

from simulation.activities import (
    SimPerson,
    SimulatedActivities,
    find_person,
    load_catalog_for,
    load_snapshots,
    people_identified,
)
from activities.store_activities import StoreActivities, load_catalog, person_history, refresh_recent_orders
from conftest import free_port
from journey_harness import identify, track
from journeys.personalise import Catalog, nothing_to_show, personalise
from journeys.policy import parse_policy
from store import catalog
from store.db import transaction
from store.ingest import ingest
from store.models import Person
from store.settings import REPO_ROOT
from simulation.simulator import (
    PolicyChange,
    Simulator,
    backtest,
    choose_offset,
    keeps_timeline,
    policy_change,
)
from workflows.models import SendCheckInput, SendInput

sys.path.insert(0, str(REPO_ROOT))
from bench.shoppers import populate  # noqa: E402

STEPS = {
    "cart_recovery": [("1h", "cart_recovery_1"), ("23h", "cart_recovery_2"), ("2d", "cart_recovery_3")],
    "browse_recovery": [("2h", "browse_recovery_1"), ("2d", "browse_recovery_2")],
    "welcome": [("5m", "welcome_1"), ("2d", "welcome_2"), ("4d", "welcome_3")],
}


def policy(first_cart_delay: str = "1h", quiet: bool = False, **changes):
    journeys = {name: {"steps": [{"delay": d, "template": t} for d, t in steps]} for name, steps in STEPS.items()}
    journeys["cart_recovery"]["steps"][0]["delay"] = first_cart_delay
    return parse_policy(
        {
            "cart_min_value": 50,
            "browse_intent_threshold": 5,
            "min_hours_between_messages": 20,
            "quiet_hours": {"enabled": quiet},
            "hub_idle_timeout": "1d",
            "journeys": journeys,
            **changes,
        }
    )


def noon(days_ago: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days_ago)).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def simulator():
    """One time-skipping server for the module, as a CLI run or an API job reuses one for every person."""
    async with Simulator(engine=None) as running:
        yield running


async def run(simulator: Simulator, engine, email: str, chosen, name: str = "policy"):
    simulator.engine = engine
    person_id = find_person(engine, email)
    snapshots = load_snapshots(engine, [person_id])
    return (await simulator.simulate(chosen, list(snapshots.values()), policy_name=name))[0]


def shop(engine, *messages) -> None:
    ingest(engine, list(messages), policy(), api="test", endpoint="test")


def cart_shopper(engine, email: str, at: datetime, anon: str, *later) -> None:
    shop(
        engine,
        track(
            anon,
            "Product Added",
            cart_id="cart-1",
            sku="SER-30",
            name="Night Serum",
            price=40,
            quantity=2,
            at=at - timedelta(minutes=3),
        ),
        identify(anon, email, at=at),
        *later,
    )


async def test_open_cart_under_one_hour_and_four_hour_first_delay(simulator, engine):
    start = noon(10)
    cart_shopper(engine, "ada@example.com", start, "dev-ada")
    fast = await run(simulator, engine, "ada@example.com", policy("1h"), "1h.toml")
    slow = await run(simulator, engine, "ada@example.com", policy("4h"), "4h.toml")
    for timeline, first in ((fast, timedelta(hours=1)), (slow, timedelta(hours=4))):
        assert timeline.start == start
        decision = timeline.entries[0]
        assert (decision.kind, decision.route, decision.reason) == (
            "decision",
            "cart_recovery",
            "open cart cart-1, value 80.00 ≥ 50.00",
        )
        sends = [(e.template, e.at - start) for e in timeline.sent]
        expected = [
            ("cart_recovery_1", first),
            ("cart_recovery_2", first + timedelta(hours=23)),
            ("cart_recovery_3", first + timedelta(hours=71)),
        ]
        assert [t for t, _ in sends] == [t for t, _ in expected]
        for (_, got), (_, want) in zip(sends, expected, strict=False):
            assert want <= got < want + timedelta(seconds=5), (got, want)
        assert [(i["sku"], i["name"], i["quantity"]) for i in timeline.sent[0].items] == [("SER-30", "Night Serum", 2)]
        assert timeline.sent[0].cart_value == 80.0
        assert timeline.entries[-1].kind == "completed" and timeline.ended == "all 3 steps done"
        assert not timeline.capped and not timeline.quiet
    assert slow.first_message_after - fast.first_message_after > timedelta(hours=2, minutes=59)


async def test_purchase_in_history_ends_the_journey_at_its_real_time(simulator, engine):
    start = noon(12)
    ordered = start + timedelta(hours=30)
    cart_shopper(
        engine,
        "bea@example.com",
        start,
        "dev-bea",
        track("dev-bea", "Order Completed", order_id="o-1", cart_id="cart-1", revenue=80, at=ordered),
    )
    timeline = await run(simulator, engine, "bea@example.com", policy("1h"))
    assert [e.template for e in timeline.sent] == ["cart_recovery_1", "cart_recovery_2"]
    exit_ = next(e for e in timeline.entries if e.kind == "exit")
    assert exit_.reason == "purchased (order o-1)"
    assert ordered <= exit_.at < ordered + timedelta(seconds=5)
    assert all(e.at < ordered for e in timeline.sent)
    replayed = next(e for e in timeline.entries if e.kind == "event")
    assert replayed.at == ordered and "Order Completed o-1 (80.00)" in replayed.reason
    conversion = next(e for e in timeline.entries if e.kind == "conversion")
    assert conversion.reason == "order o-1 (80.00) after cart_recovery step 2"


async def test_purchase_before_the_first_step_means_no_message(simulator, engine):
    start = noon(12)
    cart_shopper(
        engine,
        "cy@example.com",
        start,
        "dev-cy",
        track(
            "dev-cy", "Order Completed", order_id="o-2", cart_id="cart-1", revenue=80, at=start + timedelta(minutes=30)
        ),
    )
    timeline = await run(simulator, engine, "cy@example.com", policy("1h"))
    assert timeline.sent == []
    exit_ = next(e for e in timeline.entries if e.kind == "exit")
    assert exit_.reason == "purchased (order o-2)"
    assert exit_.at - start < timedelta(minutes=30, seconds=5)
    # Simulated from before the order, the same history is a cart recovery; from after it, nothing.
    later = await simulator.simulate(
        policy(),
        list(load_snapshots(engine, [timeline.person_id]).values()),
        starts={timeline.person_id: start + timedelta(hours=2)},
    )
    assert later[0].route == "none" and "already purchased (order o-2 at" in later[0].route_reason
    assert (start + timedelta(minutes=30)).isoformat() in later[0].route_reason  # the real time, not the shifted one


async def test_quiet_hours_in_the_persons_timezone(simulator, engine):
    zone = ZoneInfo("America/New_York")
    local = (datetime.now(zone) - timedelta(days=9)).replace(hour=20, minute=30, second=0, microsecond=0)
    start = local.astimezone(UTC)
    shop(
        engine,
        track(
            "dev-dee",
            "Product Added",
            cart_id="cart-9",
            sku="SER-30",
            name="Night Serum",
            price=90,
            at=start - timedelta(minutes=2),
        ),
        identify("dev-dee", "dee@example.com", at=start, timezone="America/New_York"),
    )
    timeline = await run(simulator, engine, "dee@example.com", policy("1h", quiet=True))
    wait = next(e for e in timeline.entries if e.kind == "waiting")
    opens = (local + timedelta(days=1)).replace(hour=8, minute=0).astimezone(UTC)
    assert wait.reason.startswith("quiet hours until") and wait.until == opens
    assert opens <= timeline.sent[0].at < opens + timedelta(seconds=5)
    assert timeline.quiet and timeline.sent[0].at.astimezone(zone).hour == 8


def test_clock_shift_is_whole_days_and_keeps_the_utc_offset():
    start = datetime(2026, 3, 20, 23, 0, tzinfo=UTC)  # before the EU switch to summer time
    earliest = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)
    shift = choose_offset(start, earliest, "Europe/Berlin", timedelta(days=3))
    assert shift.seconds == 0 and shift.microseconds == 0 and start + shift >= earliest
    zone = ZoneInfo("Europe/Berlin")
    for day in range(4):
        moment = start + timedelta(days=day)
        assert (moment + shift).astimezone(zone).utcoffset() == moment.astimezone(zone).utcoffset()
    assert choose_offset(start, earliest, "UTC") == timedelta(days=21)


def test_guardrail_lookup_agrees_with_the_store_activities(engine):
    start = noon(3)
    cart_shopper(engine, "eve@example.com", start, "dev-eve")
    cart_shopper(
        engine,
        "fay@example.com",
        start,
        "dev-fay",
        track(
            "dev-fay", "Order Completed", order_id="o-9", cart_id="cart-1", revenue=80, at=start + timedelta(hours=1)
        ),
    )
    shop(engine, identify("dev-gus", "gus@example.com", at=start))
    gus = find_person(engine, "gus@example.com")
    with engine.begin() as conn:
        conn.execute(text("UPDATE people SET email_unsubscribed=:t WHERE id=:p"), {"t": True, "p": gus})
    store = StoreActivities(engine)
    now = datetime.now(UTC)
    for email in ("eve@example.com", "fay@example.com", "gus@example.com"):
        person_id = find_person(engine, email)
        snapshot = load_snapshots(engine, [person_id])[person_id]
        simulated = SimulatedActivities({person_id: SimPerson.place(snapshot, now, timedelta(0))}, Catalog())
        for route, cart_id in (("cart_recovery", "cart-1"), ("welcome", None)):
            for channel in ("email", "sms", "outbox"):
                ask = SendCheckInput(person_id=person_id, route=route, channel=channel, cart_id=cart_id)
                assert simulated.check(ask, now) == store.check_before_send(ask), (email, route, channel)


def test_personalisation_and_skips_agree_with_the_store_activities(engine):
    """The dry run picks what a real send would show — bestsellers ranked by real sales when the
    admin ranked nothing, never a sold-out item — and skips what a real send would skip."""
    start = noon(3)
    shop(
        engine,
        *(
            track(
                "dev-shop",
                "Product Viewed",
                sku=sku,
                name=name,
                price=10,
                category="balms",
                at=start - timedelta(days=1),
            )
            for sku, name in (("X", "Xylo Balm"), ("Y", "Yuzu Mist"), ("S", "Sold Out Serum"))
        ),
        track("dev-a", "Order Completed", order_id="o-1", products=[{"sku": "X"}, {"sku": "Y"}], at=start),
        track("dev-b", "Order Completed", order_id="o-2", products=[{"sku": "X"}], at=start),
        identify("dev-wes", "wes@example.com", at=start),
        track("dev-bea", "Product Viewed", sku="S", name="Sold Out Serum", price=10, at=start - timedelta(hours=1)),
        identify("dev-bea", "bea@example.com", at=start),
    )
    with transaction(engine) as session:
        catalog.upsert_admin(session, catalog.validate_items([{"sku": "S", "in_stock": False}]))
    now = datetime.now(UTC)
    refresh_recent_orders(engine, now)  # as a worker does every few minutes
    for email, route in (
        ("wes@example.com", "welcome"),
        ("bea@example.com", "browse_recovery"),
        ("bea@example.com", "welcome"),
    ):
        person_id = find_person(engine, email)
        with Session(engine) as session:
            history = person_history(session, session.get(Person, person_id), now)
            real = personalise(route, history.events, load_catalog(session, history.events, None), None)
        snapshot = load_snapshots(engine, [person_id])[person_id]
        simulated = SimulatedActivities(
            {person_id: SimPerson.place(snapshot, now, timedelta(0))}, load_catalog_for(engine, [snapshot])
        )
        dry = personalise(route, simulated.people[person_id].history(now).events, simulated.catalog, None)
        assert dry == real, (email, route)
        sent = simulated.send(
            SendInput(
                workflow_id=f"{route}-{person_id}-1",
                person_id=person_id,
                route=route,
                step=1,
                template=f"{route}_1",
                channel="email",
                at=now,
            )
        )
        assert (sent.status, sent.reason) == (
            ("skipped", nothing_to_show(route, real, history.events))
            if nothing_to_show(route, real, history.events)
            else ("sent", None)
        )
    assert [pick.sku for pick in real.picks] == ["X", "Y"]  # by sales: X in two orders, Y in one; S sold out
    assert sent.status == "sent"
    assert (
        simulated.send(
            SendInput(
                workflow_id="b-1",
                person_id=person_id,
                route="browse_recovery",
                step=1,
                template="browse_recovery_1",
                channel="email",
                at=now,
            )
        ).reason
        == "out of stock: nothing they viewed is in stock"
    )


class Sink:
    def __init__(self) -> None:
        self.received: list = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_sink():
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, controller
    finally:
        controller.stop()


def counts(database) -> dict[str, int]:
    return {t: database.scalar(f"SELECT count(*) FROM {t}") for t in database.table_names() if t != "alembic_version"}


def test_simulate_never_writes_or_delivers(db, smtp_sink):
    sink, controller = smtp_sink
    start = noon(5)
    cart_shopper(db.engine, "hal@example.com", start, "dev-hal")
    before = counts(db)
    env = {
        **os.environ,
        "BREADCRUMB_DATABASE_URL": db.url,
        "BREADCRUMB_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
        "BREADCRUMB_SMTP_FROM": "Shop <shop@example.com>",
        "BREADCRUMB_SHOP_URL": "https://shop.example",
        "BREADCRUMB_PUBLIC_BASE_URL": "https://breadcrumb.example",
        "BREADCRUMB_UNSUBSCRIBE_SECRET": "s" * 32,
        "BREADCRUMB_JOURNEYS": str(REPO_ROOT / "journeys.toml"),
    }
    out = subprocess.run(
        [str(Path(sys.executable).parent / "breadcrumb"), "simulate", "--person", "hal@example.com", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["route"] == "cart_recovery" and result["messages"] == 3
    assert counts(db) == before  # not a message, journey run, log line or outbox row more
    assert db.scalar("SELECT count(*) FROM messages") == 0
    assert sink.received == []
    with smtplib.SMTP("127.0.0.1", controller.port) as control:  # the sink does receive what is sent to it
        control.sendmail("a@example.com", ["b@example.com"], "Subject: control\r\n\r\nhi")
    deadline = time.monotonic() + 5
    while not sink.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sink.received) == 1


@pytest.mark.parametrize("shards", [1, 2])
async def test_backtest_compares_two_policies_without_writing(engine, shards):
    populate(engine, policy(), 30, days=20, seed=3)
    with engine.connect() as conn:
        before = {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("messages", "journey_runs", "journey_log", "outbox", "events", "people")
        }
    seen = []
    result = await backtest(
        engine,
        policy("4h"),
        policy("1h"),
        timedelta(days=30),
        new_name="4h",
        current_name="1h",
        progress=lambda done, total: seen.append((done, total)),
        shards=shards,
        min_per_shard=1,
    )
    assert result["people"] == 30 and seen[-1] == (60, 60) and result["shards"] == shards
    current, new = result["policies"]["current"], result["policies"]["new"]
    assert sum(current["routes"].values()) == sum(new["routes"].values()) == 30
    assert current["routes"] == new["routes"]  # the first delay does not change routing
    assert current["routes"].get("cart_recovery", 0) > 0
    assert new["median_first_message_seconds"] is not None
    for row in result["top"]:
        assert row["reason"] and row["current"]["messages"] != row["new"]["messages"]
    assert result["changed"] + result["timing_only"] > 0
    with engine.connect() as conn:
        after = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in before}
    assert after == before


def test_which_policy_changes_let_a_backtest_keep_timelines():
    base = policy("1h")
    assert policy_change(base, policy("1h")) == PolicyChange(steps=frozenset(), asked=False)
    assert policy_change(base, policy("4h")) == PolicyChange(steps=frozenset({"cart_recovery"}), asked=False)
    both = policy("4h").model_dump(mode="json")
    both["journeys"]["welcome"]["steps"][0]["template"] = "welcome_2"
    assert policy_change(base, parse_policy(both)).steps == {"cart_recovery", "welcome"}
    # Routing and send-time fields: each person's questions are asked again.
    assert policy_change(base, policy("4h", min_hours_between_messages=12)) == PolicyChange(
        steps=frozenset({"cart_recovery"}), asked=True
    )
    assert policy_change(base, policy(quiet=True)).asked and policy_change(base, policy(cart_min_value=80)).asked
    cooldown = base.model_dump(mode="json")
    cooldown["journeys"]["welcome"]["reentry_cooldown"] = "1d"
    assert policy_change(base, parse_policy(cooldown)) == PolicyChange(steps=frozenset(), asked=True)
    # Ingest settings are not simulated: nothing to run again.
    assert policy_change(base, policy(merge_window="2d")) == PolicyChange(steps=frozenset(), asked=False)
    # What no recorded question covers moves anyone: everyone runs under both.
    assert policy_change(base, policy(attribution_window="1d")) == PolicyChange(steps=frozenset(), asked=True)
    for other in (
        {"hub_idle_timeout": "2d"},
        {"identify_events": ["Email Captured"]},
        {"default_timezone": "Europe/Paris"},
    ):
        assert policy_change(base, policy(**other)) is None, other


def same_timeline(a, b) -> bool:
    """Equal lines at equal times, give or take the test server's sub-second jitter; lines of two
    workflows at the same moment (a journey's exit, the hub's next decision) may come in either order."""

    def lines(timeline):  # times inside reasons ("frequency cap until …") to the minute
        return sorted(
            (
                (
                    e.kind,
                    e.journey,
                    e.step or 0,
                    e.template or "",
                    re.sub(r"(T\d{2}:\d{2}):\d{2}(\.\d+)?", r"\1", e.reason),
                    round(e.until.timestamp()) if e.until else 0,
                ),
                e.at.timestamp(),
            )
            for e in timeline.entries
        )

    first, second = lines(a), lines(b)
    return len(first) == len(second) and all(
        x[0][:5] == y[0][:5] and abs(x[0][5] - y[0][5]) <= 2 and abs(x[1] - y[1]) <= 2
        for x, y in zip(first, second, strict=False)
    )


@pytest.mark.parametrize(
    "new",
    [
        pytest.param(policy(min_hours_between_messages=30), id="longer-cap"),
        pytest.param(policy(min_hours_between_messages=6), id="shorter-cap"),
        pytest.param(policy(cart_min_value=80), id="cart-threshold"),
        pytest.param(policy("4h", quiet=True), id="quiet-hours-and-a-step"),
        pytest.param(policy(attribution_window="4h"), id="attribution-window"),
    ],
)
async def test_a_kept_timeline_is_the_persons_timeline_under_the_new_policy(simulator, engine, new):
    """Everyone under both policies: wherever the rule keeps a current timeline, the new policy's
    own run gives that very timeline — and the rule keeps some, not all."""
    populate(engine, policy(), 40, days=20, seed=11)
    simulator.engine = engine
    now = datetime.now(UTC)
    snapshots = list(load_snapshots(engine, people_identified(engine, now - timedelta(days=30), now)).values())
    current = policy()
    [before] = await simulator.simulate_many([(current, "current")], snapshots, compare_with=new)
    [after] = await simulator.simulate_many([(new, "new")], snapshots)
    change = policy_change(current, new)
    kept = [(b, a) for b, a in zip(before, after, strict=False) if keeps_timeline(b, change)]
    assert 0 < len(kept) < len(snapshots)
    for b, a in kept:
        assert same_timeline(b, a), (b.label, b.entries, a.entries)


async def test_backtest_reuse_gives_what_simulating_everyone_twice_gives(engine):
    """The people who never entered the changed journey keep their timeline: same figures as running all."""
    populate(engine, policy(), 40, days=20, seed=11)
    reused = await backtest(engine, policy("4h"), policy("1h"), timedelta(days=30), shards=1)
    full = await backtest(engine, policy("4h"), policy("1h"), timedelta(days=30), shards=1, reuse=False)
    assert full["reused"] == 0 and full["simulations"] == 80 and full["changed_steps"] is None
    assert reused["changed_steps"] == ["cart_recovery"]
    cart = reused["policies"]["current"]["routes"].get("cart_recovery", 0)
    assert 0 < cart < 40 and 0 < reused["reused"] <= 40 - cart  # cart people (and any re-routed to cart) run again
    assert reused["simulations"] == 80 - reused["reused"]

    def figures(result):
        return {
            name: {k: v for k, v in metrics.items() if k != "median_first_message_seconds"}
            for name, metrics in result["policies"].items()
        }

    assert figures(reused) == figures(full)
    for name in ("current", "new"):
        a, b = (r["policies"][name]["median_first_message_seconds"] for r in (reused, full))
        assert abs(a - b) < 60
    assert (reused["changed"], [row["person_id"] for row in reused["top"]]) == (
        full["changed"],
        [row["person_id"] for row in full["top"]],
    )
