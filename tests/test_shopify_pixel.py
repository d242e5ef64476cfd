"""The Shopify custom web pixel (integrations/shopify/pixel.js) run by node against the real app:
Shopify-shaped standard events in, Breadcrumb's taxonomy stored, one person once the shopper types an
email at checkout, and nothing the tracking-health report would warn about."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, UTC

import pytest
from conftest import ADMIN_TOKEN, WRITE_KEY, ServedApp, settings_for
from json_server import JsonServer

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install -y nodejs)")

SHOP = "https://snowboards.example"
CLIENT_ID = "0c6a1f2e-4b8d-4e55-9a3c-shopify-client"
CART_TOKEN = "c1-7f3e9a0b2c4d"
CART_COOKIE = CART_TOKEN + "%3Fkey%3D5e1b0c"  # newer carts: the token, then "?key=…"
CHECKOUT_TOKEN = "a4f2b9c8d7e6f5a4b3c2d1e0f9a8b7c6"

# Loads pixel.js the way Shopify's sandbox does (globals `analytics`, `browser`, `init`), with the two
# settings a merchant edits replaced, fires the events of a JSON file one after another and waits for
# each handler's calls to finish.
HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const [pixelPath, apiUrl, writeKey, eventsPath] = process.argv.slice(2);
let source = fs.readFileSync(pixelPath, "utf8");
const edited = source
  .replace(/apiUrl: "[^"]*"/, "apiUrl: " + JSON.stringify(apiUrl))
  .replace(/writeKey: "[^"]*"/, "writeKey: " + JSON.stringify(writeKey));
if (edited === source) throw new Error("pixel.js has no apiUrl/writeKey settings to fill in");
const subscribers = {};
const sandbox = {
  analytics: { subscribe: (name, handler) => { subscribers[name] = handler; } },
  browser: { cookie: { get: async (name) => (name === "cart" ? process.env.CART_TOKEN : "") } },
  init: { context: {}, data: {} },
  fetch, URL, console,
};
vm.createContext(sandbox);
vm.runInContext(edited, sandbox);
(async () => {
  for (const event of JSON.parse(fs.readFileSync(eventsPath, "utf8"))) {
    if (!subscribers[event.name]) throw new Error("pixel.js does not subscribe to " + event.name);
    await subscribers[event.name](event);
  }
  console.log(JSON.stringify(Object.keys(subscribers).sort()));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def _money(amount: str) -> dict:
    return {"amount": float(amount), "currencyCode": "EUR"}


def _variant(variant_id: str, sku: str, title: str, price: str) -> dict:
    return {
        "id": variant_id,
        "sku": sku,
        "title": title,
        "price": _money(price),
        "image": {"src": f"//cdn.example/files/{sku}.jpg"},
        "product": {
            "id": "8123456789",
            "title": "Powder Board",
            "vendor": "Snowboards",
            "type": "Snowboards",
            "url": "/products/powder-board",
            "untranslatedTitle": "Powder Board",
        },
    }


def _event(n: int, name: str, path: str, data: dict) -> dict:
    at = datetime.now(UTC) - timedelta(minutes=30 - n)
    return {
        "id": f"sh-{n}-{name}",
        "name": name,
        "clientId": CLIENT_ID,
        "seq": n,
        "type": "standard",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "context": {
            "document": {
                "location": {"href": SHOP + path, "pathname": path.split("?")[0], "search": ""},
                "referrer": "",
                "title": "Snowboards shop",
            },
            "navigator": {"userAgent": "Mozilla/5.0 (pixel test)", "language": "de-DE"},
        },
        "data": data,
    }


def _journey() -> list[dict]:
    board = _variant("44001", "PB-158", "158 cm", "349.00")
    checkout = {
        "token": CHECKOUT_TOKEN,
        "currencyCode": "EUR",
        "email": None,
        "phone": None,
        "totalPrice": _money("698.00"),
        "subtotalPrice": _money("698.00"),
        "lineItems": [{"id": "li-1", "quantity": 2, "title": "Powder Board", "variant": board}],
    }
    return [
        _event(1, "page_viewed", "/", {}),
        _event(
            2,
            "collection_viewed",
            "/collections/boards",
            {"collection": {"id": "301", "title": "Boards", "productVariants": [board]}},
        ),
        _event(
            3, "search_submitted", "/search?q=powder", {"searchResult": {"query": "powder", "productVariants": [board]}}
        ),
        _event(4, "product_viewed", "/products/powder-board", {"productVariant": board}),
        _event(
            5,
            "product_added_to_cart",
            "/products/powder-board",
            {"cartLine": {"quantity": 2, "merchandise": board, "cost": {"totalAmount": _money("698.00")}}},
        ),
        _event(6, "checkout_started", f"/checkouts/cn/{CHECKOUT_TOKEN}", {"checkout": checkout}),
        _event(
            7,
            "checkout_contact_info_submitted",
            f"/checkouts/cn/{CHECKOUT_TOKEN}",
            {"checkout": {**checkout, "email": "Ada@Example.com"}},
        ),
    ]


@pytest.fixture
def shop_api(db):
    """The app with the shop's storefront among its link hosts (its product links reach messages)."""
    with ServedApp(settings_for(db.url, link_hosts=["cdn.example", "snowboards.example"])) as app:
        yield app


def _run_pixel(repo_root, tmp_path, url: str, events: list[dict]) -> list[str]:
    harness, feed = tmp_path / "harness.js", tmp_path / "events.json"
    harness.write_text(HARNESS)
    feed.write_text(json.dumps(events))
    done = subprocess.run(
        [NODE, str(harness), str(repo_root / "integrations/shopify/pixel.js"), url, WRITE_KEY, str(feed)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CART_TOKEN": CART_COOKIE},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pixel_events_land_in_the_taxonomy_and_join_the_checkout_email(db, shop_api, repo_root, tmp_path):
    import httpx

    subscribed = _run_pixel(repo_root, tmp_path, shop_api.url, _journey())
    assert subscribed == sorted(
        [
            "page_viewed",
            "product_viewed",
            "collection_viewed",
            "search_submitted",
            "product_added_to_cart",
            "checkout_started",
            "checkout_contact_info_submitted",
        ]
    )

    rows = db.rows("SELECT name, type, anonymous_id, person_id, properties, message_id FROM events ORDER BY id")
    names = [r.name for r in rows]
    assert names == [
        "Page Viewed",
        "Collection Viewed",
        "Products Searched",
        "Product Viewed",
        "Added to Cart",
        "Checkout Started",
        "Identify",
        "Checkout Started",
    ]
    assert {r.anonymous_id for r in rows} == {CLIENT_ID}
    people = {r.person_id for r in rows}
    assert len(people) == 1 and None not in people, "the email at checkout makes the whole browsing one person"
    person = db.rows("SELECT i.person_id FROM identifiers i WHERE kind = 'email' AND value = 'ada@example.com'")
    assert [p.person_id for p in person] == list(people)

    def props(name: str, index: int = 0) -> dict:
        found = [r.properties for r in rows if r.name == name][index]
        return json.loads(found) if isinstance(found, str) else found

    viewed = props("Product Viewed")
    # The catalogue's key, as the product webhooks write it: product id, variant id.
    assert (viewed["sku"], viewed["variant"], viewed["product_sku"]) == ("8123456789", "44001", "PB-158")
    assert viewed["name"] == "Powder Board – 158 cm" and viewed["price"] == 349.0
    assert viewed["category"] == "Snowboards" and viewed["url"] == SHOP + "/products/powder-board"
    assert viewed["image_url"] == "https://cdn.example/files/PB-158.jpg"
    added = props("Added to Cart")
    assert (added["sku"], added["quantity"], added["cart_id"], added["value"]) == ("8123456789", 2, CART_TOKEN, 698.0)
    assert props("Collection Viewed")["category"] == "Boards"
    assert props("Products Searched")["query"] == "powder"
    for index in (0, 1):
        started = props("Checkout Started", index)
        assert (started["cart_id"], started["checkout_token"], started["value"]) == (CART_TOKEN, CHECKOUT_TOKEN, 698.0)
        assert started["products"][0]["variant"] == "44001" and started["products"][0]["quantity"] == 2
    assert props("Checkout Started", 1)["email"] == "Ada@Example.com"
    assert db.scalar("SELECT name FROM products WHERE sku = '8123456789' AND variant = '44001'") == (
        "Powder Board – 158 cm"
    )

    report = httpx.get(
        f"{shop_api.url}/admin/reports/tracking", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ).json()
    assert report["missing_properties"]["events_with_gaps"] == 0, report["missing_properties"]
    assert report["flagged"]["timestamp_clamped"] == 0 and report["flagged"]["foreign_links"] == 0, report["flagged"]
    assert db.scalar("SELECT count(*) FROM rejected") == 0

    # Shopify may deliver an event twice: its id is the messageId, so nothing is stored twice.
    _run_pixel(repo_root, tmp_path, shop_api.url, _journey())
    assert db.scalar("SELECT count(*) FROM events") == len(rows)


def test_pixel_never_throws_when_the_api_is_down(repo_root, tmp_path):
    """A pixel must never disturb the shop: an unreachable API is a dropped call, not an error."""
    assert _run_pixel(repo_root, tmp_path, "http://127.0.0.1:9", _journey()[:5])


# ---------------------------------------------------------------------- breadcrumb.js on a Shopify theme

# One page load of api/static/breadcrumb.js in a minimal browser (cookie jar and localStorage kept in a
# JSON file between loads, fetch relative to the shop's origin); prints what the page did.
PAGE = r"""
const fs = require("fs");
const vm = require("vm");
const [scriptPath, origin, statePath, onShopify] = process.argv.slice(2);
const state = fs.existsSync(statePath) ? JSON.parse(fs.readFileSync(statePath, "utf8")) : { cookies: {}, storage: {} };
const warnings = [];
const inFlight = [];
const document = {
  currentScript: {
    src: origin + "/breadcrumb.js",
    getAttribute: (name) => ({ "data-write-key": "wk_test_key", "data-auto-page": "false" })[name] || null,
  },
  get cookie() { return Object.entries(state.cookies).map(([k, v]) => k + "=" + v).join("; "); },
  set cookie(line) {
    const [pair, ...attributes] = line.split("; ");
    const at = pair.indexOf("=");
    if (attributes.some((a) => a === "Max-Age=0")) delete state.cookies[pair.slice(0, at)];
    else state.cookies[pair.slice(0, at)] = pair.slice(at + 1);
  },
  referrer: "", title: "Powder Board",
  querySelector: () => null,
  dispatchEvent: () => true,
};
const window = {
  location: new URL(origin + "/products/powder-board"),
  navigator: { userAgent: "node", language: "en" },
  localStorage: {
    getItem: (key) => (key in state.storage ? state.storage[key] : null),
    setItem: (key, value) => { state.storage[key] = String(value); },
    removeItem: (key) => { delete state.storage[key]; },
  },
  crypto: require("crypto").webcrypto,
  fetch: (url, options) => { const p = fetch(new URL(url, origin), options); inFlight.push(p); return p; },
  console: { warn: (message) => warnings.push(message) },
  setTimeout, document,
};
if (onShopify === "1") window.Shopify = { shop: "snowboards.myshopify.com", routes: { root: "/" } };
const sandbox = { window, document, URL, URLSearchParams, CustomEvent };
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(scriptPath, "utf8"), sandbox);
(async () => {
  while (inFlight.length) { await Promise.allSettled(inFlight.splice(0)); await new Promise((r) => setTimeout(r, 10)); }
  fs.writeFileSync(statePath, JSON.stringify(state));
  console.log(JSON.stringify({ loaded: !!window.breadcrumb, anonymousId: window.breadcrumb.anonymousId(), warnings }));
})().catch((error) => { console.error(error); process.exit(1); });
"""


class FakeShopifyCart:
    """`POST /cart/update.js` of a Shopify storefront: records each update, answers the cart (or 500)."""

    def __init__(self) -> None:
        self.updates: list[dict] = []
        self.failing = False
        self.http = JsonServer(self.respond)
        self.origin = self.http.url

    def respond(self, path: str, headers: dict[str, str], body: object) -> tuple[int, object]:
        self.updates.append({"path": path, "body": body, "type": headers["Content-Type"]})
        return (500, {}) if self.failing else (200, {"token": "c1-fresh", **body})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def shop():
    fake = FakeShopifyCart()
    yield fake
    fake.close()


def _load_page(repo_root, tmp_path, shop: FakeShopifyCart, on_shopify: bool = True, cart: str | None = None) -> dict:
    """One page view; `cart` sets Shopify's cart cookie first (a new cart after an order, say)."""
    harness, state = tmp_path / "page.js", tmp_path / "browser.json"
    harness.write_text(PAGE)
    if cart is not None:
        saved = json.loads(state.read_text()) if state.exists() else {"cookies": {}, "storage": {}}
        saved["cookies"]["cart"] = cart
        state.write_text(json.dumps(saved))
    done = subprocess.run(
        [
            NODE,
            str(harness),
            str(repo_root / "api/static/breadcrumb.js"),
            shop.origin,
            str(state),
            "1" if on_shopify else "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_breadcrumb_js_writes_the_anonymous_id_into_the_shopify_cart_once_per_cart(repo_root, tmp_path, shop):
    first = _load_page(repo_root, tmp_path, shop, cart="c1-first")
    assert first["loaded"] and first["warnings"] == []
    assert shop.updates == [
        {
            "path": "/cart/update.js",
            "type": "application/json",
            "body": {"attributes": {"_breadcrumb_anonymous_id": first["anonymousId"]}},
        }
    ]

    again = _load_page(repo_root, tmp_path, shop)
    assert again["anonymousId"] == first["anonymousId"] and len(shop.updates) == 1, "same device, same cart: no call"

    _load_page(repo_root, tmp_path, shop, cart="c1-after-the-order")
    assert len(shop.updates) == 2, "a new cart gets the attribute too"
    assert shop.updates[1]["body"]["attributes"]["_breadcrumb_anonymous_id"] == first["anonymousId"]


def test_breadcrumb_js_cart_attribute_failure_never_breaks_the_page_and_is_retried(repo_root, tmp_path, shop):
    shop.failing = True
    page = _load_page(repo_root, tmp_path, shop, cart="c1-first")
    assert page["loaded"] and len(shop.updates) == 1
    assert any("Shopify cart" in warning and "500" in warning for warning in page["warnings"]), page["warnings"]

    shop.failing = False
    _load_page(repo_root, tmp_path, shop)
    assert len(shop.updates) == 2, "the next page tries again"


def test_breadcrumb_js_off_shopify_leaves_carts_alone(repo_root, tmp_path, shop):
    assert _load_page(repo_root, tmp_path, shop, on_shopify=False, cart="c1-first")["loaded"]
    assert shop.updates == []
