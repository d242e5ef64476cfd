"""The demo storefront's pages and the snippet they load (served, no browser: see test_devstack.py for
Chromium), and the demo's plan: deterministic per seed, every call one the API accepts."""

from __future__ import annotations

import re
from datetime import datetime, UTC

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from api.demo_store import CATALOG, COLLECTIONS
from api.segment import parse_message
from conftest import ADMIN_TOKEN, WRITE_KEY, settings_for
from worker.demo import PERSONAS, Outcome, plan, run_demo


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from api.app import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    with TestClient(create_app(settings_for(url, auto_migrate=True))) as test_client:
        yield test_client


def pages() -> list[str]:
    return (
        ["/demo/store", "/demo/store/quiz", "/demo/store/cart"]
        + [f"/demo/store/collections/{c.slug}" for c in COLLECTIONS]
        + [f"/demo/store/products/{p.sku}" for p in CATALOG]
    )


@pytest.mark.parametrize("path", pages())
def test_every_page_loads_the_snippet_with_the_write_key(client, path):
    response = client.get(path, params={"writeKey": WRITE_KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert f'<script src="/breadcrumb.js" data-write-key="{WRITE_KEY}"></script>' in html
    assert '<script src="/demo/store/assets/store.js"></script>' in html
    assert ADMIN_TOKEN not in html
    # Internal links keep the key, so every page of a visit is tracked.
    links = [link for link in re.findall(r'href="(/demo/store[^"]*)"', html) if "/assets/" not in link]
    assert links and all(f"writeKey={WRITE_KEY}" in link for link in links), links
    assert 'id="email-form"' in html and 'id="email-input"' in html


def test_without_a_key_the_page_says_how_to_get_one(client):
    html = client.get("/demo/store").text
    assert "data-write-key" not in html and 'id="no-key"' in html and "breadcrumb dev" in html


def test_query_parameters_cannot_inject_markup(client):
    evil = '"><script>alert(1)</script>'
    html = client.get("/demo/store/products/SER-NIGHT-30", params={"writeKey": evil, "cookieDomain": evil}).text
    assert "alert(1)" not in html and "data-write-key" not in html and "data-cookie-domain" not in html
    html = client.get("/demo/store", params={"writeKey": "wk_ok", "cookieDomain": ".example.com"}).text
    assert 'data-cookie-domain=".example.com"' in html
    assert "cookieDomain=.example.com" in html  # carried along with the key


def test_product_data_is_safe_json_in_the_page(client):
    html = client.get("/demo/store/products/SER-NIGHT-30").text
    data = re.search(r'<script type="application/json" id="product-data">(.*?)</script>', html, re.S).group(1)
    assert '"sku":"SER-NIGHT-30"' in data and '"price":64.0' in data and '"cart_id"' not in data


def test_unknown_products_and_collections_are_404(client):
    assert client.get("/demo/store/products/NOPE").status_code == 404
    assert client.get("/demo/store/collections/nope").status_code == 404


def test_static_files(client):
    snippet = client.get("/breadcrumb.js")
    assert snippet.status_code == 200 and snippet.headers["content-type"].startswith("application/javascript")
    for needed in ("bc_anonymous_id", "data-cookie-domain", "localStorage", "/v1/batch", "keepalive", "messageId"):
        assert needed in snippet.text
    assert client.get("/demo/store/assets/store.js").headers["content-type"].startswith("application/javascript")
    assert client.get("/demo/store/assets/store.css").headers["content-type"].startswith("text/css")
    catalog = client.get("/demo/store/catalog.json").json()
    assert {p["sku"] for p in catalog} == {p.sku for p in CATALOG}


def test_demo_store_stays_out_of_the_api_docs(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/demo") or p == "/breadcrumb.js"]


def test_the_demo_plan_is_deterministic_and_tells_every_story():
    first, again, other = plan(5, 7), plan(5, 7), plan(6, 7)
    assert [s.calls for s in first] == [s.calls for s in again]
    assert [s.email for s in first] != [s.email for s in other]
    assert {s.persona.key for s in first} == {p.key for p in PERSONAS}
    assert len({s.email for s in plan(1, 40)}) == 40
    ids = [c.body["messageId"] for s in plan(5, 7) for c in s.calls]
    assert len(ids) == len(set(ids)), "every call has its own messageId"


def test_every_planned_call_is_one_the_api_accepts():
    now = datetime.now(UTC)
    for shopper in plan(9, 14):
        for call in shopper.calls:
            kind = call.path.rsplit("/", 1)[1]
            message = parse_message({**call.body, "timestamp": now.isoformat()}, kind, now)
            assert message.anonymous_id in shopper.devices
        events = [c.body.get("event") for c in shopper.calls]
        if shopper.persona.route == "cart_recovery":
            assert "Added to Cart" in events and shopper.cart_value >= 50, "above the fast config's cart_min_value"
        if shopper.persona.key == "small_cart":
            assert "Added to Cart" in events and 0 < shopper.cart_value < 50
        assert any(c.path == "/v1/identify" or c.body.get("properties", {}).get("email") for c in shopper.calls), (
            f"{shopper.persona.key} never identifies"
        )


def _outcome(shopper, route: str | None, sent: int, done: bool = True) -> Outcome:
    journeys = [{"route": route, "status": "completed"}] if route else []
    messages = [{"status": "sent", "step": step} for step in range(1, sent + 1)]
    return Outcome(shopper, profile={"journeys": journeys, "messages": messages, "events": []}, done=done)


def test_a_shortfall_says_what_the_shopper_expected_and_got():
    checkout = next(s for s in plan(5, 7) if s.persona.key == "checkout")
    who = f"#{checkout.index} {checkout.name} (checkout): expected cart_recovery · 3"
    assert _outcome(checkout, "cart_recovery", 3).shortfall(90) is None
    assert _outcome(checkout, "welcome", 3).shortfall(90) == f"{who}, got welcome · 3"
    assert (
        _outcome(checkout, "cart_recovery", 1, done=False).shortfall(90)
        == f"{who}, got cart_recovery · 1 after waiting 90 s, journeys still running"
    )
    assert _outcome(checkout, "cart_recovery", 3, done=False).shortfall(90) is not None, "not over yet"
    assert Outcome(checkout).shortfall(90) == f"{who}, was never merged into a person"


def test_the_demo_exits_non_zero_naming_who_missed_what(api, served, monkeypatch):
    """No worker behind this API: the shoppers merge, but nobody is routed, so every story misses.
    The keys come from the environment, as for every other command."""
    monkeypatch.setenv("BREADCRUMB_WRITE_KEYS", WRITE_KEY)
    monkeypatch.setenv("BREADCRUMB_ADMIN_TOKEN", ADMIN_TOKEN)
    console = Console(record=True, width=250)
    code = run_demo(served.url, None, None, shoppers=2, seed=3, wait=1, concurrency=2, json_path=None, console=console)
    said = console.export_text()
    assert code == 1, said
    assert "Breadcrumb demo — seed 3" in said, "the table is printed"
    assert "2/2 shopper(s) did not get what their story expects:" in said
    for shopper in plan(3, 2):
        assert (
            f"✗ #{shopper.index} {shopper.name} ({shopper.persona.key}): expected "
            f"{shopper.persona.expectation}, no routing decision after waiting 1 s"
        ) in said, said
