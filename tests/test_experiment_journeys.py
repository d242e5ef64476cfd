"""Message experiments on Temporal's time-skipping server with the real workflows, store activities
on SQLite and the outbox dispatcher: the split follows the person's hash, the variant is recorded on
the message, and the auto-winner takes over only once its rule is met."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest_asyncio

from journey_harness import identify, running_shop, track
from journeys.experiments import assign
from store.experiments import Checks
from simulation.activities import find_person
from test_journeys_timeskipping import policy
from test_simulate import cart_shopper, noon, run, simulator  # noqa: F401  (simulator: the module's fixture)
from test_simulate import policy as simulation_policy

SUBJECT_B = "{{ first_name or 'Friend' }}, a gift for joining"


def _welcome(**auto_winner) -> dict:
    step: dict = {
        "delay": "5m",
        "variants": [
            {"template": "welcome_1", "weight": 50},
            {"template": "welcome_1", "name": "gift_subject", "subject": SUBJECT_B, "weight": 50},
        ],
    }
    if auto_winner:
        step["auto_winner"] = auto_winner
    return {"steps": [step]}


def _experiment_policy(**auto_winner):
    base = policy()
    journeys = {name: j.model_dump(mode="json") for name, j in base.journeys.items()}
    return policy(journeys={**journeys, "welcome": _welcome(**auto_winner)})


@pytest_asyncio.fixture
async def split_shop(env, engine):
    async with running_shop(env, engine, _experiment_policy()) as harness:
        yield harness


@pytest_asyncio.fixture
async def winner_shop(env, engine, monkeypatch):
    monkeypatch.setattr(Checks, "every", 0.0)  # every send may compute the figures (a worker: once a minute)
    async with running_shop(env, engine, _experiment_policy(min_recipients=2, probability=0.9)) as harness:
        yield harness


async def _sign_up(shop, n: int):
    """Sign person n up, wait for their welcome to be sent, and return (person_id, message)."""
    await shop.shop(identify(f"x{n}", f"p{n}@example.com", first_name=f"P{n}"))
    person = shop.person_id(f"p{n}@example.com")
    state = await shop.journey_result(await shop.journey_of(person))
    [message] = shop.messages(person)
    assert message.status == "sent"
    assert state.sent == [f"step 1: sent [{message.variant}]"]  # the variant's name, never its content
    return person, message


async def test_variants_split_by_the_persons_hash_and_are_recorded_on_the_message(split_shop):
    variants = split_shop.policy.journeys["welcome"].steps[0].variants
    seen: dict[str, int] = {}
    for n in range(20):
        person, message = await _sign_up(split_shop, n)
        expected = assign(variants, person, "welcome", 1)
        assert message.variant == expected.label
        assert message.template == "welcome_1"
        assert message.subject == (f"P{n}, a gift for joining" if expected.subject else f"Welcome, P{n}!")
        seen[message.variant] = seen.get(message.variant, 0) + 1
        if len(seen) == 2 and n >= 3:
            break
    assert set(seen) == {"welcome_1", "gift_subject"}
    assert split_shop.scalar("SELECT count(*) FROM experiment_decisions") == 0  # no rule, no decision


async def test_auto_winner_switches_after_the_threshold_and_not_before(winner_shop):
    """People sent `welcome_1` each order 100, people sent `gift_subject` never do. Until both have two
    recipients every send follows the hash and nothing is decided; the first send after that decides
    `welcome_1` (P ≈ 0.96 ≥ 0.9) and from then on everyone gets it, whatever their hash says."""
    shop = winner_shop
    variants = shop.policy.journeys["welcome"].steps[0].variants
    recipients = {"welcome_1": 0, "gift_subject": 0}
    n = 0
    while min(recipients.values()) < 2:
        person, message = await _sign_up(shop, n)
        assert message.variant == assign(variants, person, "welcome", 1).label
        assert shop.scalar("SELECT count(*) FROM experiment_decisions") == 0
        recipients[message.variant] += 1
        if message.variant == "welcome_1":
            await shop.shop(
                track(
                    f"x{n}", "Order Completed", order_id=f"o{n}", revenue=100, at=message.sent_at + timedelta(minutes=1)
                )
            )
        n += 1
    switched = None
    for later in range(n, n + 20):
        person, message = await _sign_up(shop, later)
        assert message.variant == "welcome_1"
        if assign(variants, person, "welcome", 1).label == "gift_subject":
            switched = person
            break
    assert switched is not None, "no later person drew gift_subject by hash"
    [(winner, figures, decided_at)] = shop.rows("SELECT winner, figures, decided_at FROM experiment_decisions")
    assert winner == "welcome_1" and decided_at is not None
    figures = figures if isinstance(figures, list) else json.loads(figures)  # SQLite returns the JSON text
    by_name = {f["variant"]: f for f in figures}
    assert by_name["welcome_1"]["revenue_per_recipient"] == 100.0
    assert by_name["gift_subject"]["revenue_per_recipient"] == 0.0
    assert by_name["welcome_1"]["probability_best"] >= 0.9
    # Decided on the figures as they stood when the rule was first met: the messages sent before.
    assert {name: f["recipients"] for name, f in by_name.items()} == recipients


async def test_the_what_if_simulation_sends_each_person_their_variant(simulator, engine):
    """The simulator's dry-run send picks the variant with the same hash as the store's send."""
    start = noon(10)
    cart_shopper(engine, "ada@example.com", start, "dev-ada")
    chosen = simulation_policy()
    steps = chosen.journeys["cart_recovery"].model_dump(mode="json")["steps"]
    steps[0] = {
        "delay": "1h",
        "variants": [
            {"template": "cart_recovery_1", "weight": 1},
            {"template": "cart_recovery_2", "name": "second_copy", "weight": 1},
        ],
    }
    journeys = {name: j.model_dump(mode="json") for name, j in chosen.journeys.items()}
    experiment = simulation_policy(journeys={**journeys, "cart_recovery": {"steps": steps}})
    timeline = await run(simulator, engine, "ada@example.com", experiment, "experiment.toml")
    variants = experiment.journeys["cart_recovery"].steps[0].variants
    expected = assign(variants, find_person(engine, "ada@example.com"), "cart_recovery", 1)
    first = timeline.sent[0]
    assert (first.variant, first.template) == (expected.label, expected.template)
    assert [e.variant for e in timeline.sent[1:]] == [None, None]  # the other steps are plain
