"""Shopify end to end on a real Temporal dev server, the served API (dispatcher on), a worker and a
real SMTP relay (aiosmtpd), with second-scale journeys (examples/journeys.fast.toml):

pixel-shaped anonymous browsing through `/v1` → `checkouts/create` carrying the same anonymous id in
`note_attributes` → a cart recovery email with Shopify's `abandoned_checkout_url` and the category
the shopper browsed → `orders/create` → the journey exits and the order is attributed to the email.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
import pytest_asyncio
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

import shopify_payloads as shopify
from conftest import ADMIN_TOKEN, CONVERTER, WRITE_KEY, ServedApp, free_port, settings_for, venv_binary
from delivery_helpers import SmtpServer
from store import reports
from store.db import make_engine
from store.migrate import upgrade
from store.settings import REPO_ROOT
from worker.worker import build_worker
from workflows import search

pytestmark = pytest.mark.timeout(120)
SHOP_URL = "https://glow.example"


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory):
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=CONVERTER,
        search_attributes=search.ALL,
        ui=False,
    )
    smtp = SmtpServer(free_port()).start()
    db_url = f"sqlite:///{tmp_path_factory.mktemp('shopify-e2e') / 'breadcrumb.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    settings = settings_for(
        db_url,
        dispatch=True,
        temporal_address=env.client.service_client.config.target_host,
        journeys=REPO_ROOT / "examples" / "journeys.fast.toml",
        shop_url=SHOP_URL,
        public_base_url="http://127.0.0.1:9",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        smtp_from="Glow <hello@glow.example>",
        shopify_webhook_secret=[shopify.SECRET],
    )
    try:
        with ServedApp(settings) as app:
            async with (
                build_worker(env.client, engine, settings),
                httpx.AsyncClient(base_url=app.url, timeout=30) as http,
            ):
                yield http, engine, smtp, settings
    finally:
        smtp.stop()
        engine.dispose()
        await env.shutdown()


async def eventually(probe: Callable[[], Awaitable[object]], what: str, within: float = 30) -> object:
    """Poll `probe` without blocking the event loop the worker runs on."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


async def webhook(http: httpx.AsyncClient, topic: str, payload: dict) -> None:
    body = orjson.dumps(payload)
    response = await http.post("/shopify/webhooks", content=body, headers=shopify.headers(topic, body))
    assert response.status_code == 200, response.text


async def pixel(http: httpx.AsyncClient, client_id: str, event: str, properties: dict) -> None:
    """What the custom web pixel sends: the browser key, Shopify's clientId as the anonymous id."""
    response = await http.post(
        "/v1/track",
        auth=(WRITE_KEY, ""),
        json={
            "event": event,
            "anonymousId": client_id,
            "messageId": f"pixel-{uuid.uuid4().hex}",
            "properties": properties,
            "context": {
                "library": {"name": "breadcrumb-shopify-pixel"},
                "page": {"url": f"{SHOP_URL}/products/glow-serum"},
            },
        },
    )
    assert response.status_code == 200, response.text


async def test_browsing_then_checkout_then_order_on_shopify(stack):
    http, engine, smtp, settings = stack
    tag = uuid.uuid4().hex[:10]
    client_id, email = f"shopify-client-{tag}", f"bob.{tag}@example.com"
    token, cart_token = f"tok{tag}", f"cart{tag}"
    await webhook(http, "products/create", shopify.product())
    for variant in ("808950810", "49148385"):
        await pixel(
            http,
            client_id,
            "Product Viewed",
            {"sku": "632910392", "variant": variant, "name": "Glow Serum", "category": "Serums", "price": 19.99},
        )

    customer = {**shopify.CUSTOMER, "id": int(tag[:8], 16), "email": email}
    checkout = shopify.checkout(
        token=token,
        cart_token=cart_token,
        anonymous_id=client_id,
        email=email,
        customer=customer,
        updated_at=shopify.ago(1),
    )
    await webhook(http, "checkouts/create", checkout)

    def sent_to_bob():
        return [m for m in smtp.mailbox.messages() if m["To"] == email]

    async def first_email():
        return sent_to_bob()

    [message] = await eventually(first_email, "the cart recovery email")
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert f"https://{shopify.SHOP}/59910176/checkouts/{token}/recover?key=b6f1b4f2" in body
    assert "More Serums" in body
    assert "Glow Serum" in body

    async def person():
        response = await http.get(
            "/admin/people", params={"email": email}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        return response.json() if response.status_code == 200 else None

    profile = await person()
    assert profile["anonymous_ids"] == [client_id]  # the browsing joined the person
    assert sum(e["name"] == "Product Viewed" for e in profile["events"]) == 2

    emails_before_order = len(sent_to_bob())
    paid = shopify.ago(-1 / 60)  # Shopify writes whole seconds: the next one is surely after the email
    await webhook(
        http,
        "orders/create",
        shopify.order(
            checkout_token=token,
            cart_token=cart_token,
            anonymous_id=client_id,
            email=email,
            customer=customer,
            created_at=paid,
            processed_at=paid,
        ),
    )

    async def ended():
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT status, reason FROM journey_runs WHERE person_id = :p AND route = 'cart_recovery'"),
                {"p": profile["person_id"]},
            ).first()
        return row if row and row[0] != "running" else None

    status, reason = await eventually(ended, "the cart recovery journey to end")
    assert (status, reason) == ("exited", "purchased (order 820982911946154508)")
    assert len(sent_to_bob()) == emails_before_order  # nothing went out after the order

    revenue = reports.summary(engine, settings.policy)["revenue"]
    assert revenue["attributed_orders"] == 1 and revenue["attributed_revenue"] == 70.48
    [journey] = [j for j in revenue["by_journey"] if j["journey"] == "cart_recovery"]
    assert journey["orders"] == 1
