"""The hub under races (issue 12), on Temporal's time-skipping server with the real store activities:
no wake-up lost while it decides, journey ids that never repeat, recovered carts routed past, the
journey's abnormal end noticed, a changed journeys.toml picked up at the next decision."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio import activity
from temporalio.worker import Worker

from activities.store_activities import StoreActivities
from conftest import CONVERTER, settings_for
from journey_harness import Harness, identify, now, running_shop, track
from store.settings import REPO_ROOT
from test_journeys_timeskipping import policy, shop  # noqa: F401 (the `shop` fixture)
from workflows.registry import ALL_WORKFLOWS
from workflows.hub import hub_id
from workflows.models import HubState, JourneyInput, PersonContext, PersonLookup


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
    async with Worker(
        env.client,
        task_queue=settings.task_queue,
        workflows=ALL_WORKFLOWS,
        activities=store.all(),
        activity_executor=ThreadPoolExecutor(max_workers=4),
    ):
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
    return sum(
        1
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )


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
    history = await shop.client.get_workflow_handle(hub_id(person)).fetch_history()
    assert loads_of_person(history) == 2
    assert debounce_timers(history, timedelta(minutes=1)) == 1  # what a gathered burst saves (below)


def debounce_timers(history, debounce: timedelta) -> int:
    return sum(
        1
        for e in history.events
        if e.HasField("timer_started_event_attributes")
        and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() == debounce
    )


@pytest.mark.policy(hub_debounce="1m")
async def test_browsing_the_dispatcher_gathered_is_routed_at_once_without_a_debounce_timer(shop):
    """Issue 16: the dispatcher gathers a burst for its activity window and marks the signal gathered;
    the hub routes it in the task that signal wakes: no debounce timer, no second workflow task for
    it, the same decision as when the hub gathers the burst itself (the test above)."""
    await shop.shop(identify("gathered", "gathered@example.com"))
    person = shop.person_id("gathered@example.com")
    await shop.until(person, lambda s: len(s.decisions) == 1)
    for i in range(10):
        shop.ingest(track("gathered", "Product Viewed", sku=f"G-{i}"))
    shop.dispatcher.window = 0.05  # real seconds: the burst's first row is older than that below
    await asyncio.sleep(0.1)
    assert await shop.dispatch() == 10
    state = await shop.until(person, lambda s: len(s.decisions) == 2)  # no time skipped
    assert [d.route for d in state.decisions] == ["welcome", "browse_recovery"]
    history = await shop.client.get_workflow_handle(hub_id(person)).fetch_history()
    assert loads_of_person(history) == 2
    assert debounce_timers(history, timedelta(minutes=1)) == 0


async def test_a_hub_that_idled_out_numbers_its_next_journey_afresh(shop):
    """A cart recovered, the same cart topped up and emptied (the old hub spent a number on a refused
    start there), a welcome; the hub idles out; the next identify starts a new run whose welcome must
    not reuse a journey id — a reused id found the old messages and sent nothing."""
    await shop.shop(
        track("idle", "Added to Cart", cart_id="c-idle", sku="S", price=75), identify("idle", "idle@example.com")
    )
    person = shop.person_id("idle@example.com")
    await shop.journey_result(await shop.journey_of(person))
    await shop.shop(track("idle", "Added to Cart", cart_id="c-idle", sku="T", price=20))
    await settled(shop, person)
    await shop.shop(
        track("idle", "Removed from Cart", cart_id="c-idle", sku="S"),
        track("idle", "Removed from Cart", cart_id="c-idle", sku="T"),
    )
    state = await settled(shop, person)
    assert state.journey is not None and state.journey.route == "welcome"
    await shop.journey_result(state.journey.workflow_id)
    handle = shop.client.get_workflow_handle(hub_id(person), result_type=HubState)
    async with shop.env.time_skipping_unlocked():
        assert (await handle.result()).status == "idle_completed"

    await shop.shop(identify("idle", "idle@example.com"))
    again = await shop.journey_of(person)
    await shop.journey_result(again)
    runs = [row[0] for row in shop.rows("SELECT workflow_id FROM journey_runs WHERE person_id=:p", p=person)]
    assert len(runs) == len(set(runs)) and again in runs
    assert [(m.step, m.status) for m in shop.messages(person) if m.workflow_id == again] == [
        (1, "sent"),
        (2, "sent"),
        (3, "sent"),
    ]


async def test_a_recovered_cart_falls_through_without_stopping_the_running_journey(shop):
    """After its recovery journey, the cart routes past cart recovery: a view starts welcome, and a
    later change to the same cart neither stops welcome nor asks the store for a refused start."""
    await shop.shop(
        track("once", "Added to Cart", cart_id="c-once", sku="S", price=75), identify("once", "once@example.com")
    )
    person = shop.person_id("once@example.com")
    await shop.journey_result(await shop.journey_of(person))
    await shop.shop(track("once", "Product Viewed", sku="S"))
    state = await settled(shop, person)
    assert state.journey is not None and state.journey.route == "welcome"
    assert "open cart c-once already had its recovery" in state.decisions[-1].reason
    welcome = state.journey.workflow_id
    await shop.shop(track("once", "Added to Cart", cart_id="c-once", sku="T", price=20))
    state = await settled(shop, person)
    assert state.journey is not None and state.journey.workflow_id == welcome
    assert (await shop.journey_result(welcome)).status == "completed"
    assert shop.scalar("SELECT count(*) FROM journey_runs WHERE route='cart_recovery' AND person_id=:p", p=person) == 1
    assert not any("already had its recovery journey" in reason for _, reason, *_ in shop.log(person))


@pytest_asyncio.fixture
async def dev_env(request):
    """A real Temporal dev server: the time-skipping test server never tells a parent that its
    abandoned child was terminated."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from conftest import record_if_asked, venv_binary
    from workflows import search

    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search.ALL,
        ui=False,
    )
    Harness.opened.clear()
    yield environment
    await record_if_asked(request, environment.client)
    await environment.shutdown()


@pytest.mark.parametrize("end", ["terminate", "cancel"])
async def test_a_journey_ended_by_an_operator_is_noticed_and_the_person_re_routed(dev_env, engine, end):
    """Terminated or cancelled, the journey never says it ended: the hub notices by itself."""
    async with running_shop(dev_env, engine, policy()) as shop:
        shop.env = None  # a real server: no time to skip
        await shop.shop(
            track("term", "Added to Cart", cart_id="c-term", sku="S", price=90), identify("term", "term@example.com")
        )
        person = shop.person_id("term@example.com")
        journey = await shop.journey_of(person)
        await getattr(shop.client.get_workflow_handle(journey), end)()
        state = await shop.until(person, lambda s: s.journey is not None and s.journey.workflow_id != journey)
        # The cart had its recovery (the journey that was ended): the person falls through to welcome.
        assert state.journey.route == "welcome"
        assert "open cart c-term already had its recovery" in state.decisions[-1].reason


async def test_after_continue_as_new_the_hub_still_notices_its_journey_end(shop):
    """A run that continued as new no longer holds its journey as a child: it checks every hour that
    the journey still runs, and re-routes when it is gone without having reported its end."""
    from workflows.models import HubInput, RunningJourney

    shop.ingest(identify("can", "can@example.com"))
    person = shop.person_id("can@example.com")
    gone = f"welcome-{person}-of-an-earlier-run"  # never reported its end; no longer on the server
    carried = HubState(status="in_journey", journey=RunningJourney(workflow_id=gone, route="welcome", started_at=now()))
    await shop.client.start_workflow(
        "hub", HubInput(person_id=person, policy=shop.policy, state=carried), id=hub_id(person), task_queue="breadcrumb"
    )
    await shop.until(person, lambda s: s.journey is not None)
    assert (await shop.hub_state(person)).decisions == []  # nothing decided before the check
    await shop.skip(timedelta(hours=1, minutes=1))
    state = await shop.until(person, lambda s: s.journey is not None and s.journey.workflow_id != gone)
    assert state.journey.route == "welcome" and [d.route for d in state.decisions] == ["welcome"]


async def test_a_changed_journeys_toml_reaches_the_hub_at_its_next_decision(env, engine, tmp_path):
    """Cart of 40 under a 50 minimum: welcome. The marketer lowers the minimum to 30 in journeys.toml;
    the shopper's next event re-routes under the new file, to cart recovery, with no restart."""
    from journeys.policy import load_policy
    from worker.worker import build_worker

    path = tmp_path / "journeys.toml"
    path.write_text((Path(REPO_ROOT) / "journeys.toml").read_text())
    settings = settings_for(str(engine.url), journeys=path)
    first = settings.policy
    async with build_worker(env.client, engine, settings):
        shop = Harness(env.client, engine, settings, first, env=env)
        await shop.shop(
            track("edit", "Added to Cart", cart_id="c-edit", sku="S", price=40), identify("edit", "edit@example.com")
        )
        person = shop.person_id("edit@example.com")
        assert (await shop.until(person, lambda s: s.journey is not None)).journey.route == "welcome"
        path.write_text(path.read_text().replace("cart_min_value = 50", "cart_min_value = 30"))
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
        assert load_policy(path).cart_min_value == 30
        await shop.shop(track("edit", "Product Viewed", sku="S"))
        state = await shop.until(person, lambda s: s.journey is not None and s.journey.route == "cart_recovery")
        assert "value 40.00 ≥ 30.00" in state.decisions[-1].reason
        started = await shop.client.get_workflow_handle(state.journey.workflow_id).fetch_history()
        given = started.events[0].workflow_execution_started_event_attributes.input.payloads
        journey_input = (await CONVERTER.decode(given, [JourneyInput]))[0]
        assert journey_input.policy.cart_min_value == 30  # the journey runs with the policy it was started under


def test_a_journey_id_taken_by_another_request_fails_loudly(db):
    """A retried `start_journey` finds its own row; a different request under the same id is a bug
    (its journey would find another journey's messages as its own) and must not pass as a retry."""
    from temporalio.exceptions import ApplicationError

    from workflows.models import JourneyStart

    store = StoreActivities(db.engine)
    start = JourneyStart(
        workflow_id="welcome-p-1", hub_id="hub-p", person_id="p", route="welcome", reason="new", at=now()
    )
    assert store.start_journey(start) and store.start_journey(start)
    with pytest.raises(ApplicationError) as refused:
        store.start_journey(start.model_copy(update={"route": "cart_recovery", "cart_id": "c", "at": now()}))
    assert refused.value.non_retryable and "already taken" in str(refused.value)


# -- interleavings ---------------------------------------------------------------------------------

_people = iter(range(10**6))
shop_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["c1", "c2"]), st.sampled_from([20, 45, 80])),
        st.tuples(st.just("remove"), st.sampled_from(["c1", "c2"])),
        st.tuples(st.just("view"), st.sampled_from(["A", "B", "C", "D", "E", "F"])),
        st.tuples(st.just("identify")),
        st.tuples(st.just("order")),
        st.tuples(st.just("merge"), st.sampled_from([0, 60, 90])),
        st.tuples(st.just("settle")),
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.policy(hub_debounce="1s", browse_intent_threshold=3)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(steps=shop_steps)
async def test_whatever_the_interleaving_the_hub_ends_where_routing_the_final_history_says(shop, steps):
    """Identify, then cart, view, order, re-identify and merge events sent without waiting for the hub
    (so they arrive while it decides), sometimes letting it settle in between: once it has settled,
    the hub runs the journey that routing the final stored history picks (or a more urgent one it
    already runs), and none after a purchase."""
    from sqlmodel import Session

    from activities.store_activities import person_history
    from journeys.routing import decide_route
    from store.models import Person
    from test_journeys_merge_delete import alias
    from journeys.policy import JOURNEY_NAMES as JOURNEYS
    from journeys.wakeups import PRIORITY

    n = next(_people)
    device, email, user = f"dev-{n}", f"mix-{n}@example.com", f"user-{n}"
    await shop.shop(identify(device, email, user_id=user))
    person = shop.person_id(email)
    for step in steps:
        kind = step[0]
        if kind == "add":
            await shop.shop(track(device, "Added to Cart", cart_id=f"{step[1]}-{n}", sku=f"S-{step[1]}", price=step[2]))
        elif kind == "remove":  # cart ids are the shop's, unique across shoppers
            await shop.shop(track(device, "Removed from Cart", cart_id=f"{step[1]}-{n}", sku=f"S-{step[1]}"))
        elif kind == "view":
            await shop.shop(track(device, "Product Viewed", sku=step[1]))
        elif kind == "identify":
            await shop.shop(identify(device, email, user_id=user))
        elif kind == "order":
            await shop.shop(track(device, "Order Completed", order_id=f"o-{n}", revenue=50))
        elif kind == "merge":  # another profile of theirs (its own cart) merged into this one
            other = f"{user}-other-{step[1]}"
            await shop.shop(
                track(f"{device}-{step[1]}", "Added to Cart", cart_id=f"c-{other}", sku="M", price=step[1]),
                identify(f"{device}-{step[1]}", f"{other}@example.com", user_id=other),
            )
            await shop.shop(alias(other, user))
        else:
            await settled(shop, person)
    state = await settled(shop, person)

    now = datetime.now(UTC)
    with Session(shop.engine) as session:
        history = person_history(session, session.get(Person, person), now)
    runs = shop.rows("SELECT route, started_at, cart_recovery_key FROM journey_runs WHERE person_id=:p", p=person)
    expected = decide_route(history, shop.policy, now, recovered_carts={key for _, _, key in runs if key})
    current = state.journey.route if state.journey else None
    if expected.route == "none":
        assert current is None, (steps, state)
    else:
        assert expected.route in JOURNEYS
        assert current is not None and (current == expected.route or PRIORITY[current] > PRIORITY[expected.route]), (
            steps,
            expected,
            state,
        )
