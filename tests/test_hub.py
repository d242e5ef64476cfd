"""The hub under races (issue 12), on Temporal's time-skipping server with the real store activities:
no wake-up lost while it decides, journey ids that never repeat, recovered carts routed past, the
journey's abnormal end noticed, a changed journeys.toml picked up at the next decision."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.worker import Worker

from activities.store_activities import StoreActivities
from conftest import settings_for
from journey_harness import Harness, identify, running_shop, track
from test_journeys_timeskipping import BASE_POLICY, policy, shop  # noqa: F401 (the `shop` fixture)
from workflows import ALL_WORKFLOWS
from workflows.hub import hub_id
from workflows.models import HubState, PersonContext, PersonLookup

pytestmark = pytest.mark.asyncio


class SlowLoadStore(StoreActivities):
    """The store activities, with the first `load_person` held after it has read the store until the
    test releases it: the window in which a storefront's next event used to be lost."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.has_read = threading.Event()
        self.release = threading.Event()
        self.held = False

    def all(self) -> list:
        return [self.load_person_slowly, *[a for a in super().all() if a.__name__ != "load_person"]]

    @activity.defn(name="load_person")
    def load_person_slowly(self, lookup: PersonLookup) -> PersonContext | None:
        context = self.load_person(lookup)
        if not self.held:
            self.held = True
            self.has_read.set()
            self.release.wait(60)
        return context


@asynccontextmanager
async def slow_shop(env, engine, chosen):
    settings = settings_for(str(engine.url))
    settings.__dict__["policy"] = chosen
    store = SlowLoadStore(engine, settings=settings)
    async with Worker(env.client, task_queue=settings.task_queue, workflows=ALL_WORKFLOWS, activities=store.all(),
                      activity_executor=ThreadPoolExecutor(max_workers=4)):
        harness = Harness(env.client, engine, settings, chosen, env=env)
        harness.store = store
        yield harness


async def test_cart_added_while_the_hub_decides_ends_on_cart_recovery(env, engine):
    """Email pop-up, then `Added to Cart` stored after `load_person` read the history and signalled
    while the hub is still deciding on welcome: the hub decides again and the cart gets its recovery."""
    async with slow_shop(env, engine, policy()) as shop:
        shop.ingest(identify("pop", "popup@example.com"))
        await shop.dispatch()
        assert await asyncio.to_thread(shop.store.has_read.wait, 60)
        await shop.shop(track("pop", "Added to Cart", cart_id="c-pop", sku="S", price=80))
        shop.store.release.set()
        person = shop.person_id("popup@example.com")
        state = await shop.until(person, lambda s: s.journey is not None and s.journey.route == "cart_recovery")
        assert [d.route for d in state.decisions] == ["welcome", "cart_recovery"]
        assert "open cart c-pop" in state.decisions[-1].reason


async def settled(shop: Harness, person: str) -> HubState:
    """The hub's state once it has decided on every wake-up it was sent (its `busy` query)."""
    handle = shop.client.get_workflow_handle(hub_id(person))
    deadline = asyncio.get_running_loop().time() + 60
    while await handle.query("busy", result_type=bool):
        assert asyncio.get_running_loop().time() < deadline, "the hub never settled"
        await asyncio.sleep(0.1)
    return await shop.hub_state(person)


def loads_of_person(history) -> int:
    """How many times the hub loaded the person (its local activity markers)."""
    return sum(1 for e in history.events if e.HasField("marker_recorded_event_attributes")
               and e.marker_recorded_event_attributes.marker_name == "core_local_activity")


@pytest.mark.policy(hub_debounce="1m")
async def test_a_browsing_burst_is_one_decision(shop):
    """Ten page views in a moment cost one load and one re-route (the hub gathers them for `hub_debounce`)."""
    await shop.shop(identify("burst", "burst@example.com"))
    person = shop.person_id("burst@example.com")
    await shop.until(person, lambda s: len(s.decisions) == 1)
    for i in range(10):
        await shop.shop(track("burst", "Product Viewed", sku=f"B-{i}"))
    await shop.skip(timedelta(minutes=1))
    state = await settled(shop, person)
    assert [d.route for d in state.decisions] == ["welcome", "browse_recovery"]
    assert loads_of_person(await shop.client.get_workflow_handle(hub_id(person)).fetch_history()) == 2
