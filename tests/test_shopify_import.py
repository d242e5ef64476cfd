"""`breadcrumb shopify import` against a local fake of Shopify's Admin GraphQL API (a real HTTP server
with Shopify-shaped pages: `edges/node` and `nodes`, GIDs, string amounts in MoneyBags, cost
extensions, one THROTTLED answer): people, orders and products stored; an import killed after its
first page of customers resumes from the checkpoint; a second import changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import venv_binary
from json_server import JsonServer

SHOP = "snowboards.myshopify.com"
TOKEN = "shpat_test_token"
PAGE = 2  # the fake's page size, whatever `first` asks for
NOW = datetime.now(UTC)


def _ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def _money(amount: str) -> dict:
    return {"shopMoney": {"amount": amount, "currencyCode": "EUR"}}


def _consent(state: str) -> dict:
    return {"marketingState": state, "marketingOptInLevel": "SINGLE_OPT_IN", "consentUpdatedAt": _ago(40)}


def _customer(
    n: int,
    email: str | None,
    phone: str | None = None,
    email_state: str = "SUBSCRIBED",
    sms_state: str = "NOT_SUBSCRIBED",
) -> dict:
    return {
        "id": f"gid://shopify/Customer/70{n}",
        "email": email,
        "phone": phone,
        "firstName": f"Rider{n}",
        "lastName": "Snow",
        "state": "ENABLED",
        "tags": ["vip"] if n == 1 else [],
        "verifiedEmail": True,
        "numberOfOrders": "1",
        "note": None,
        "createdAt": _ago(90),
        "updatedAt": _ago(30),
        "emailMarketingConsent": _consent(email_state),
        "smsMarketingConsent": _consent(sms_state),
    }


CUSTOMERS = [
    _customer(1, "ada@example.com"),
    _customer(2, "bo@example.com", email_state="UNSUBSCRIBED"),
    _customer(3, "cy@example.com", phone="+4915112345678", sms_state="SUBSCRIBED"),
    _customer(4, "di@example.com"),  # has never ordered
    _customer(5, None, phone="+4915187654321"),
]


def _variant(n: int, price: str, quantity: int, image: str | None = None) -> dict:
    return {
        "id": f"gid://shopify/ProductVariant/90{n}",
        "sku": f"SKU-{n}",
        "title": f"{150 + n} cm",
        "price": price,
        "inventoryQuantity": quantity,
        "inventoryPolicy": "DENY",
        "inventoryItem": {"id": f"gid://shopify/InventoryItem/95{n}", "tracked": True},
        "image": {"url": image} if image else None,
    }


def _product(n: int, title: str, variants: list[dict]) -> dict:
    return {
        "id": f"gid://shopify/Product/80{n}",
        "title": title,
        "handle": title.lower().replace(" ", "-"),
        "productType": "Snowboards",
        "status": "ACTIVE",
        "featuredImage": {"url": f"https://cdn.example/{n}.jpg"},
        "variants": {"nodes": variants},
    }


PRODUCTS = [
    _product(1, "Powder Board", [_variant(1, "349.00", 4), _variant(2, "359.00", 0, "https://cdn.example/1-2.jpg")]),
    _product(2, "Park Board", [_variant(3, "299.95", 2)]),
    _product(3, "Wax Kit", [_variant(4, "19.50", 30)]),
]


def _line(product: int, variant: int, price: str, quantity: int = 1) -> dict:
    return {
        "title": "Board",
        "variantTitle": "158 cm",
        "sku": f"SKU-{variant}",
        "quantity": quantity,
        "product": {"id": f"gid://shopify/Product/80{product}"},
        "variant": {"id": f"gid://shopify/ProductVariant/90{variant}"},
        "originalUnitPriceSet": _money(price),
    }


def _order(n: int, customer: int | None, days: float, total: str, lines: list[dict], cancelled: bool = False) -> dict:
    buyer = next((c for c in CUSTOMERS if c["id"].endswith(f"/70{customer}")), None) if customer else None
    return {
        "id": f"gid://shopify/Order/60{n}",
        "name": f"#10{n}",
        "email": buyer and buyer["email"],
        "phone": None,
        "createdAt": _ago(days),
        "processedAt": _ago(days),
        "cancelledAt": _ago(days - 1) if cancelled else None,
        "cancelReason": "CUSTOMER" if cancelled else None,
        "displayFinancialStatus": "REFUNDED" if cancelled else "PAID",
        "currencyCode": "EUR",
        "totalPriceSet": _money(total),
        "subtotalPriceSet": _money(total),
        "customer": {"id": buyer["id"], "email": buyer["email"], "phone": buyer["phone"]} if buyer else None,
        "customAttributes": [],
        "lineItems": {"nodes": lines},
    }


ORDERS = [
    _order(1, 1, 20, "349.00", [_line(1, 1, "349.00")]),
    _order(2, 3, 12, "339.45", [_line(2, 3, "299.95"), _line(3, 4, "19.50", 2)]),
    _order(3, 2, 5, "19.50", [_line(3, 4, "19.50")], cancelled=True),
    _order(4, 5, 3, "299.95", [_line(2, 3, "299.95")]),
    _order(5, 4, 100, "19.50", [_line(3, 4, "19.50")]),  # outside --days 30
]


class FakeAdminAPI:
    """Shopify's Admin GraphQL endpoint for one shop. `hang_on` = (resource, cursor) makes that page's
    first request wait (an import to kill mid-way); the first orders page is THROTTLED once."""

    COST = {
        "requestedQueryCost": 17,
        "actualQueryCost": 12,
        "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 983, "restoreRate": 50.0},
    }
    THROTTLED_COST = {
        "requestedQueryCost": 17,
        "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 2, "restoreRate": 50.0},
    }
    THROTTLE_WAIT = (17 - 2) / 50.0

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, float]] = []  # (resource, after, monotonic time)
        self.hang_on: tuple[str, str | None] | None = None
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.throttled = False
        self.http = JsonServer(self.serve)
        self.url = self.http.url

    def close(self) -> None:
        self.release.set()
        self.http.close()

    def serve(self, path: str, headers: dict[str, str], body: object) -> tuple[int, object]:
        if path != "/admin/api/2025-01/graphql.json":
            return 404, {"errors": "Not Found"}
        if headers.get("X-Shopify-Access-Token") != TOKEN:
            return 401, {"errors": "[API] Invalid API key or access token"}
        return 200, self.respond(body["query"], body.get("variables") or {})

    def respond(self, query: str, variables: dict) -> dict:
        if "productsCount" in query:
            orders = self.orders(variables.get("search"))
            return {
                "data": {
                    "productsCount": {"count": len(PRODUCTS)},
                    "customersCount": {"count": len(CUSTOMERS)},
                    "ordersCount": {"count": len(orders)},
                },
                "extensions": {"cost": self.COST},
            }
        resource = next(name for name in ("products", "customers", "orders") if f"{name}(" in query)
        after = variables.get("after")
        self.requests.append((resource, after, time.monotonic()))
        if self.hang_on == (resource, after):
            self.hang_on = None
            self.hanging.set()
            self.release.wait(60)
        if resource == "orders" and not self.throttled:
            self.throttled = True
            return {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": {"cost": self.THROTTLED_COST},
            }
        chosen = {"products": PRODUCTS, "customers": CUSTOMERS}.get(resource) or self.orders(variables.get("search"))
        start = int(after.removeprefix("cursor:")) if after else 0
        page = chosen[start : start + PAGE]
        end = start + len(page)
        info = {"hasNextPage": end < len(chosen), "endCursor": f"cursor:{end}" if page else None}
        # Customers come as `edges { node }`, the others as `nodes`: the client reads both.
        connection = (
            {"edges": [{"cursor": f"cursor:{start + i + 1}", "node": n} for i, n in enumerate(page)]}
            if resource == "customers"
            else {"nodes": page}
        )
        return {"data": {resource: {**connection, "pageInfo": info}}, "extensions": {"cost": self.COST}}

    @staticmethod
    def orders(search: str | None) -> list[dict]:
        assert search and search.startswith("created_at:>="), search
        since = search.removeprefix("created_at:>=")
        return [o for o in ORDERS if o["createdAt"][:10] >= since]


@pytest.fixture
def shopify():
    fake = FakeAdminAPI()
    yield fake
    fake.close()


def _command(database_url: str, shopify: FakeAdminAPI, *extra: str) -> tuple[list[str], dict]:
    env = {**os.environ, "BREADCRUMB_DATABASE_URL": database_url, "COLUMNS": "120"}
    return (
        [
            venv_binary("breadcrumb"),
            "shopify",
            "import",
            "--shop",
            SHOP,
            "--token",
            TOKEN,
            "--days",
            "30",
            "--base-url",
            shopify.url,
            *extra,
        ],
        env,
    )


def _import(db, shopify: FakeAdminAPI, *extra: str) -> subprocess.CompletedProcess:
    command, env = _command(db.url, shopify, *extra)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def _state(db) -> dict:
    """Everything the import writes, minus the clock columns a product refresh touches."""
    return {
        "events": db.rows(
            "SELECT message_id, name, person_id, user_id, order_id, properties FROM events ORDER BY message_id"
        ),
        "people": db.rows("SELECT id, traits, email_unsubscribed, sms_consent FROM people ORDER BY id"),
        "identifiers": db.rows("SELECT person_id, kind, value FROM identifiers ORDER BY kind, value"),
        "products": db.rows(
            "SELECT sku, variant, name, category, price, image_url, url, in_stock, source "
            "FROM products ORDER BY sku, variant"
        ),
        "outbox": db.rows("SELECT kind, person_id, dedupe_key FROM outbox ORDER BY dedupe_key"),
    }


def _person(db, kind: str, value: str) -> str:
    return db.scalar("SELECT person_id FROM identifiers WHERE kind = :kind AND value = :value", kind=kind, value=value)


def test_import_is_throttle_aware_resumable_and_idempotent(db, shopify):
    # 1. Killed while waiting for the second page of customers: products are done, customers half.
    shopify.hang_on = ("customers", f"cursor:{PAGE}")
    command, env = _command(db.url, shopify)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not shopify.hanging.wait(0.2):
            assert first.poll() is None, first.communicate()[0].decode() + first.communicate()[1].decode()
            assert time.monotonic() < deadline, "the import never asked for the second page of customers"
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
        shopify.release.set()
    checkpoints = {r.resource: r for r in db.rows("SELECT * FROM shopify_import_checkpoints WHERE shop = :s", s=SHOP)}
    assert checkpoints["products"].finished_at is not None
    assert (checkpoints["customers"].cursor, checkpoints["customers"].imported) == (f"cursor:{PAGE}", PAGE)
    assert checkpoints["customers"].finished_at is None and "orders" not in checkpoints
    assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'user_id'") == PAGE

    # 2. Run again: customers resume after the checkpoint; orders wait out one THROTTLED answer.
    shopify.requests.clear()
    second = _import(db, shopify)
    assert second.returncode == 0, second.stdout + second.stderr
    customers = [after for resource, after, _ in shopify.requests if resource == "customers"]
    assert customers == [f"cursor:{PAGE}", f"cursor:{2 * PAGE}"], "resumed after the last applied page"
    orders = [(after, at) for resource, after, at in shopify.requests if resource == "orders"]
    assert orders[0][0] is None and orders[1][0] is None, "the throttled page is asked again"
    assert orders[1][1] - orders[0][1] >= FakeAdminAPI.THROTTLE_WAIT * 0.9, "waited for the bucket to refill"
    assert "resumed" in second.stdout and "yes" in second.stdout
    assert f"waited {FakeAdminAPI.THROTTLE_WAIT:.1f} s for Shopify's rate limit" in second.stdout, "once, not twice"

    # People: every customer once, with their identifiers and consent.
    assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'user_id'") == len(CUSTOMERS)
    assert db.scalar("SELECT count(*) FROM people") == len(CUSTOMERS)
    ada, bo, cy = (_person(db, "email", f"{name}@example.com") for name in ("ada", "bo", "cy"))
    assert _person(db, "user_id", "701") == ada
    assert db.scalar("SELECT email_unsubscribed FROM people WHERE id = :p", p=bo) in (True, 1)
    assert db.scalar("SELECT sms_consent FROM people WHERE id = :p", p=cy) in (True, 1)
    # A backfill is the shop's past: stored for the hubs to read, but it wakes none (an imported
    # customer list must not start a welcome series).
    assert db.scalar("SELECT count(*) FROM outbox") == 0

    # Orders: the last 30 days, each once, on the buyer; the cancelled one reversed.
    completed = db.rows(
        "SELECT order_id, person_id, properties FROM events WHERE name = 'Order Completed' ORDER BY order_id"
    )
    assert [r.order_id for r in completed] == ["601", "602", "603", "604"], "order 605 is older than --days 30"
    assert completed[0].person_id == ada and completed[1].person_id == cy
    properties = (
        completed[1].properties if isinstance(completed[1].properties, dict) else json.loads(completed[1].properties)
    )
    assert properties["value"] == 339.45 and properties["currency"] == "EUR"
    assert [(p["sku"], p["variant"], p["quantity"]) for p in properties["products"]] == [
        ("802", "903", 1),
        ("803", "904", 2),
    ]
    assert db.scalar("SELECT order_id FROM events WHERE name = 'Order Cancelled'") == "603"
    never = _person(db, "email", "di@example.com")
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p AND name = 'Order Completed'", p=never) == 0

    # Products: one catalogue row per variant, the sold-out one out of stock.
    products = {(r.sku, r.variant): r for r in db.rows("SELECT * FROM products")}
    assert set(products) == {("801", "901"), ("801", "902"), ("802", "903"), ("803", "904")}
    assert products[("801", "901")].price == 349.0 and products[("801", "901")].in_stock in (True, 1)
    assert products[("801", "902")].in_stock in (False, 0)
    assert products[("801", "902")].image_url == "https://cdn.example/1-2.jpg"
    assert products[("802", "903")].url == f"https://{SHOP}/products/park-board"

    finished = db.rows("SELECT cursor, finished_at FROM shopify_import_checkpoints WHERE shop = :s", s=SHOP)
    assert len(finished) == 3 and all(r.cursor is None and r.finished_at is not None for r in finished)

    # 3. A second import reads everything again and changes nothing.
    before = _state(db)
    shopify.requests.clear()
    third = _import(db, shopify)
    assert third.returncode == 0, third.stdout + third.stderr
    assert [after for resource, after, _ in shopify.requests if resource == "customers"][0] is None
    assert _state(db) == before


def test_import_names_a_refused_token_and_a_wrong_shop(shopify, tmp_path):
    """Both stop before anything is written (the database here has no tables at all)."""
    command, env = _command(f"sqlite:///{tmp_path / 'empty.db'}", shopify)
    wrong_token = ["shpat_wrong" if part == TOKEN else part for part in command]
    refused = subprocess.run(wrong_token, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "refused the access token" in refused.stdout and "read_orders" in refused.stdout, refused.stdout

    wrong_shop = subprocess.run(
        [*command, "--shop", "snowboards.example"], env=env, capture_output=True, text=True, timeout=120
    )  # the last --shop counts
    assert wrong_shop.returncode == 2 and "myshopify.com" in wrong_shop.stdout, wrong_shop.stdout
