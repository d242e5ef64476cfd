"""Every journey path on Temporal's time-skipping test server, with the real workflows, the real
store activities on SQLite and the real outbox dispatcher."""

from __future__ import annotations

from datetime import timedelta

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from journeys.policy import parse_policy
from store.db import make_engine
from store.migrate import upgrade
from conftest import settings_for, venv_binary
from journey_harness import Harness, identify, now, track
from worker.temporal import register_search_attributes
from worker.worker import build_worker

BASE_POLICY = {
    "cart_min_value": 50, "browse_intent_threshold": 5, "min_hours_between_messages": 20,
    "quiet_hours": {"enabled": False}, "hub_idle_timeout": "1h",
    "journeys": {
        "cart_recovery": {"steps": [{"delay": "1h", "template": "cart_recovery_1"},
                                    {"delay": "23h", "template": "cart_recovery_2"},
                                    {"delay": "2d", "template": "cart_recovery_3"}]},
        "browse_recovery": {"steps": [{"delay": "2h", "template": "browse_recovery_1"},
                                      {"delay": "2d", "template": "browse_recovery_2"}]},
        "welcome": {"steps": [{"delay": "5m", "template": "welcome_1"}, {"delay": "2d", "template": "welcome_2"},
                              {"delay": "4d", "template": "welcome_3"}]},
    },
}


def policy(**changes):
    data = {**BASE_POLICY, **changes}
    return parse_policy(data)


@pytest_asyncio.fixture(scope="session")
async def env():
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(environment.client)
    yield environment
    await environment.shutdown()


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'journeys.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest_asyncio.fixture
async def shop(env, engine, request):
    marker = request.node.get_closest_marker("policy")
    chosen = policy(**(marker.kwargs if marker else {}))
    settings = settings_for(str(engine.url))
    settings.__dict__["policy"] = chosen
    async with build_worker(env.client, engine, settings):
        yield Harness(env.client, engine, settings, chosen, env=env)


async def test_cart_recovery_sends_three_steps(shop):
    await shop.shop(
        track("a1", "Product Added", cart_id="c1", sku="SKU-1", name="Serum", price=40, quantity=2),
        identify("a1", "cart@example.com"),
    )
    person = shop.person_id("cart@example.com")
    journey = await shop.journey_of(person)
    assert journey.startswith("cart_recovery-")
    result = await shop.journey_result(journey)
    assert result.status == "completed"
    messages = shop.messages(person)
    assert [(m.journey, m.step, m.status) for m in messages] == [("cart_recovery", i, "sent") for i in (1, 2, 3)]
    assert [m.idempotency_key for m in messages] == [f"{journey}:{i}" for i in (1, 2, 3)]
    gaps = [(b.sent_at - a.sent_at) for a, b in zip(messages, messages[1:])]
    for gap, delay in zip(gaps, [timedelta(hours=23), timedelta(days=2)]):
        assert delay <= gap < delay + timedelta(minutes=1)
    decision = (await shop.hub_state(person)).decisions[-1]
    assert decision.route == "cart_recovery" and "value 80.00 ≥ 50.00" in decision.reason
