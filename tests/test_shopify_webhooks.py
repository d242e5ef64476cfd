"""`POST /shopify/webhooks` over real HTTP on SQLite and PostgreSQL, with Shopify-shaped payloads
(issue 15): signatures, retries, checkouts, orders, customers, the catalogue and the compliance topics."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import orjson
import pytest
from sqlalchemy import insert
from sqlmodel import Session

import shopify_payloads as shopify
from activities.store_activities import _resume_url, load_catalog, person_history
from conftest import ADMIN_TOKEN, Api, ServedApp, settings_for
from journeys.personalise import personalise
from journeys.routing import open_cart
from store import reports
from store.models import Message, Person
from store.settings import REPO_ROOT

CHECKOUT_TOKEN = "b1946ac92492d2347c6235b4d2611184"
CART_TOKEN = "68778783ad298f1c80c3bafcddeea02f"
SHOP_URL = "https://glow.example"


@pytest.fixture(scope="module")
def shop_served(database):
    settings = settings_for(
        database.url, shopify_webhook_secret=[shopify.SECRET, shopify.OLD_SECRET], shop_url=SHOP_URL
    )
    with ServedApp(settings) as app:
        yield app


@pytest.fixture
def shop(db, shop_served) -> Api:
    client = Api(shop_served.url)
    yield client
    client.http.close()


def send(shop: Api, topic: str, payload: dict, **kw):
    response = shopify.send(shop.http, topic, payload, **kw)
    assert response.status_code == 200, response.text
    return response


def history_of(db, person_id: str):
    with Session(db.engine) as session:
        return person_history(session, session.get(Person, person_id), datetime.now(UTC))


def webhooks(shop: Api, **params) -> list[dict]:
    response = shop.admin("shopify/webhooks", **params)
    assert response.status_code == 200, response.text
    return response.json()


# --- signatures and retries ----------------------------------------------------------------------


def test_signed_webhook_is_stored_and_a_bad_or_missing_signature_is_401(shop, db):
    payload = shopify.checkout()
    send(shop, "checkouts/create", payload)
    assert db.scalar("SELECT count(*) FROM events WHERE name = 'Checkout Started'") == 1

    other = shopify.checkout(token="c0ffee", cart_token="c0ffee-cart")
    for secret in ("not-the-secret", None):
        response = shopify.send(shop.http, "checkouts/create", other, secret=secret)
        assert response.status_code == 401, response.text
        assert "X-Shopify-Hmac-Sha256" in response.json()["error"]
    # Signed over another body: the signature covers the raw bytes.
    body = b'{"token": "c0ffee"}'
    headers = shopify.headers("checkouts/create", body)
    response = shop.http.post("/shopify/webhooks", content=body + b" ", headers=headers)
    assert response.status_code == 401
    assert db.scalar("SELECT count(*) FROM events WHERE name = 'Checkout Started'") == 1
    assert db.scalar("SELECT count(*) FROM shopify_webhooks") == 1

    # The shop domain (not covered by the signature) must be a myshopify.com shop: links are built on it.
    body = orjson.dumps(other)
    headers = {**shopify.headers("checkouts/create", body), "X-Shopify-Shop-Domain": "evil.example"}
    response = shop.http.post("/shopify/webhooks", content=body, headers=headers)
    assert response.status_code == 400 and "myshopify.com" in response.json()["error"]

    # During a rotation the previous secret still verifies.
    send(shop, "checkouts/create", other, secret=shopify.OLD_SECRET)
    assert db.scalar("SELECT count(*) FROM events WHERE name = 'Checkout Started'") == 2


def test_a_retried_webhook_id_is_stored_once(shop, db):
    payload = shopify.checkout()
    first = send(shop, "checkouts/create", payload, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    again = send(shop, "checkouts/create", payload, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert first.json() == {"ok": True} and again.json() == {"ok": True, "duplicate": True}
    assert db.scalar("SELECT count(*) FROM events") == 1
    [row] = webhooks(shop)
    assert row["webhook_id"] == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert (row["topic"], row["shop_domain"], row["status"]) == ("checkouts/create", shopify.SHOP, "applied")
    assert db.scalar("SELECT body FROM shopify_webhooks") is None  # applied: the body (it names people) is gone


def test_a_topic_breadcrumb_does_not_use_is_acknowledged_counted_and_not_stored(shop, db):
    response = send(shop, "app/uninstalled", {"id": 548380009, "name": "Glow"})
    assert response.json()["ignored"]
    assert db.scalar("SELECT count(*) FROM shopify_webhooks") == 0
    metrics = shop.http.get("/metrics").text
    assert 'breadcrumb_shopify_webhooks_total{result="ignored",topic="app/uninstalled"}' in metrics


def test_a_payload_missing_what_its_topic_needs_is_quarantined_with_the_reason(shop, db):
    payload = shopify.checkout()
    del payload["token"]
    send(shop, "checkouts/update", payload)
    [row] = webhooks(shop, status="unusable")
    assert "checkout has no token" in row["outcome"]
    [rejected] = shop.admin("rejected").json()
    assert "checkout has no token" in rejected["reason"]
    assert db.scalar("SELECT count(*) FROM events") == 0


# --- checkouts and orders ------------------------------------------------------------------------


def test_checkout_joins_anonymous_browsing_and_makes_person_cart_and_consent(shop, db, shop_served):
    view = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-shopify-1",
        "properties": {"sku": "632910392", "variant": "808950810", "category": "Serums", "price": 19.99},
    }
    assert shop.segment("track", view).status_code == 200
    send(shop, "checkouts/create", shopify.checkout())

    person = shop.person(email="bob.norman@example.com")
    assert person["user_id"] == "706405506930370084"
    assert person["anonymous_ids"] == ["anon-shopify-1"]
    assert sorted(e["name"] for e in person["events"]) == ["Checkout Started", "Product Viewed"]
    assert person["email_unsubscribed"] is False
    [checkout] = [e for e in person["events"] if e["name"] == "Checkout Started"]
    assert checkout["source"] == "server"
    props = checkout["properties"]
    assert props["cart_id"] == CART_TOKEN and props["checkout_token"] == CHECKOUT_TOKEN
    assert props["value"] == 70.48 and props["subtotal"] == 64.98 and props["currency"] == "USD"
    assert props["products"][0] == {
        "sku": "632910392",
        "variant": "808950810",
        "product_sku": "IPOD2008PINK",
        "name": "Glow Serum",
        "variant_title": "30 ml",
        "price": 19.99,
        "quantity": 2,
    }
    assert props["checkout_url"].startswith(f"https://{shopify.SHOP}/59910176/checkouts/{CHECKOUT_TOKEN}/recover")

    cart = open_cart(history_of(db, person["person_id"]).events)
    assert cart is not None and cart.cart_id == CART_TOKEN and cart.value == 70.48
    # The cart email's "return to your cart" is Shopify's recovery link (*.myshopify.com is a link host).
    events = history_of(db, person["person_id"]).events
    assert _resume_url(events, cart, SHOP_URL, shop_served.settings.link_hosts) == props["checkout_url"]


def test_buyer_accepting_marketing_lifts_an_unsubscribe_and_declining_changes_nothing(shop, db):
    send(shop, "checkouts/create", shopify.checkout(buyer_accepts_marketing=False))
    person_id = shop.person(email="bob.norman@example.com")["person_id"]
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE people SET email_unsubscribed = true")
    send(shop, "checkouts/update", shopify.checkout(buyer_accepts_marketing=False, updated_at=shopify.ago(27)))
    assert shop.person(email="bob.norman@example.com")["email_unsubscribed"] is True
    send(shop, "checkouts/update", shopify.checkout(buyer_accepts_marketing=True, updated_at=shopify.ago(26)))
    person = shop.person(email="bob.norman@example.com")
    assert person["person_id"] == person_id and person["email_unsubscribed"] is False


def test_the_pixels_checkout_token_finds_the_device_without_the_cart_attribute(shop, db):
    pixel = {
        "type": "track",
        "event": "Checkout Started",
        "anonymousId": "shopify-client-77",
        "properties": {"cart_id": CHECKOUT_TOKEN, "value": 70.48},
    }
    assert shop.segment("track", pixel).status_code == 200
    send(shop, "checkouts/create", shopify.checkout(anonymous_id=None))
    person = shop.person(email="bob.norman@example.com")
    assert person["anonymous_ids"] == ["shopify-client-77"]
    assert len(person["events"]) == 2


def test_checkout_then_order_closes_the_cart_and_the_order_is_attributed(shop, db):
    send(shop, "checkouts/create", shopify.checkout())
    person_id = shop.person(email="bob.norman@example.com")["person_id"]
    sent_at = datetime.now(UTC) - timedelta(minutes=25)  # the cart recovery email went out before the order
    with db.engine.begin() as conn:
        conn.execute(
            insert(Message.__table__).values(
                id="m-1",
                person_id=person_id,
                workflow_id="cart-wf",
                journey="cart_recovery",
                step=1,
                template="cart_recovery_1",
                channel="email",
                recipient="bob@example.com",
                subject="Your cart",
                body="",
                items=[],
                status="sent",
                idempotency_key="cart-wf:1",
                cart_id=CART_TOKEN,
                created_at=sent_at,
                sent_at=sent_at,
            )
        )
    send(shop, "orders/create", shopify.order())
    send(shop, "orders/paid", shopify.order())  # the same order again: counted once

    history = history_of(db, person_id)
    assert open_cart(history.events) is None
    [order] = [e for e in history.events if e.name == "Order Completed"]
    assert order.order_id == "820982911946154508" and order.cart_id == CART_TOKEN
    assert db.scalar("SELECT count(*) FROM outbox WHERE kind = 'purchased'") == 1
    revenue = reports.summary(db.engine, settings_for(db.url).policy)["revenue"]
    assert revenue["orders"] == 1 and revenue["revenue"] == 70.48
    assert revenue["attributed_orders"] == 1 and revenue["attributed_revenue"] == 70.48


def test_an_order_before_the_checkout_update_leaves_no_cart_to_recover(shop, db):
    send(shop, "orders/create", shopify.order())
    send(shop, "checkouts/update", shopify.checkout(updated_at=shopify.ago(5)))  # later, out of order
    person = shop.person(email="bob.norman@example.com")
    assert [e["name"] for e in person["events"]].count("Checkout Started") == 0
    assert open_cart(history_of(db, person["person_id"]).events) is None


def test_a_completed_checkout_closes_the_cart_and_the_order_still_counts_once(shop, db):
    send(shop, "checkouts/create", shopify.checkout())
    send(shop, "checkouts/update", shopify.checkout(updated_at=shopify.ago(21), completed_at=shopify.ago(21)))
    person_id = shop.person(email="bob.norman@example.com")["person_id"]
    assert open_cart(history_of(db, person_id).events) is None
    send(shop, "orders/create", shopify.order())
    revenue = reports.summary(db.engine, settings_for(db.url).policy)["revenue"]
    assert revenue["orders"] == 1 and revenue["revenue"] == 70.48
    assert open_cart(history_of(db, person_id).events) is None


def test_a_cancelled_order_is_marked_for_reports_and_its_revenue_reversed(shop, db):
    send(shop, "orders/create", shopify.order())
    policy = settings_for(db.url).policy
    assert reports.summary(db.engine, policy)["revenue"]["orders"] == 1
    send(shop, "orders/cancelled", shopify.order(cancelled_at=shopify.ago(1), cancel_reason="customer"))
    rows = db.rows("SELECT name, order_id FROM events ORDER BY name")
    assert rows == [("Order Cancelled", "820982911946154508"), ("Order Completed", "820982911946154508")]
    revenue = reports.summary(db.engine, policy)["revenue"]
    assert revenue["orders"] == 0 and revenue["revenue"] == 0.0


# --- customers -----------------------------------------------------------------------------------


def test_customer_update_sets_traits_and_consent(shop, db):
    customer = {
        **shopify.CUSTOMER,
        "email_marketing_consent": {"state": "unsubscribed"},
        "sms_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
    }
    send(shop, "customers/update", customer)
    person = shop.person(user_id="706405506930370084")
    assert person["emails"] == ["bob.norman@example.com"] and person["phones"] == ["+16136120707"]
    assert person["traits"]["first_name"] == "Bob" and person["traits"]["tags"] == "vip"
    assert person["email_unsubscribed"] is True and person["sms_consent"] is True

    later = {
        **customer,
        "updated_at": shopify.ago(1),
        "email_marketing_consent": {"state": "not_subscribed"},
        "sms_marketing_consent": {"state": "unsubscribed"},
    }
    send(shop, "customers/update", later)
    person = shop.person(user_id="706405506930370084")
    assert person["email_unsubscribed"] is True  # never asked is not a subscription
    assert person["sms_consent"] is False


# --- catalogue -----------------------------------------------------------------------------------


def test_products_and_inventory_keep_an_out_of_stock_item_out_of_messages(shop, db):
    cream = shopify.product(
        921728736,
        "night-cream",
        title="Night Cream",
        product_type="Creams",
        variants=[
            {
                "id": 457924702,
                "title": "Default Title",
                "price": "25.00",
                "sku": "",
                "inventory_policy": "deny",
                "inventory_item_id": 457924702,
                "inventory_quantity": 4,
                "inventory_management": "shopify",
            }
        ],
    )
    send(shop, "products/create", shopify.product())
    send(shop, "products/create", cream)
    catalog_rows = shop.admin("catalog").json()
    serum = next(r for r in catalog_rows if r["variant"] == "808950810")
    assert serum["name"] == "Glow Serum – 30 ml" and serum["price"] == 19.99 and serum["category"] == "Serums"
    assert serum["url"] == f"https://{shopify.SHOP}/products/glow-serum" and serum["in_stock"] is True
    assert serum["image_url"].endswith("serum-30.jpg")

    for sku, variant in (("921728736", "457924702"), ("632910392", "808950810")):
        view = {
            "type": "track",
            "event": "Product Viewed",
            "userId": "706405506930370084",
            "properties": {"sku": sku, "variant": variant},
        }
        assert shop.server("track", view).status_code == 200
    send(shop, "inventory_levels/update", shopify.inventory_level(457924702, 0))
    assert next(r for r in shop.admin("catalog").json() if r["sku"] == "921728736")["in_stock"] is False

    person_id = shop.person(user_id="706405506930370084")["person_id"]
    events = history_of(db, person_id).events
    with Session(db.engine) as session:
        shown = personalise("browse_recovery", events, load_catalog(session, events, None))
    assert [item.sku for item in shown.items] == ["632910392"]

    # Back in stock at another location; then the product is deleted.
    send(shop, "inventory_levels/update", shopify.inventory_level(457924702, 2, location_id=99))
    assert next(r for r in shop.admin("catalog").json() if r["sku"] == "921728736")["in_stock"] is True
    send(shop, "products/delete", {"id": 921728736})
    assert next(r for r in shop.admin("catalog").json() if r["sku"] == "921728736")["in_stock"] is False


def test_an_inventory_level_before_its_product_is_kept_for_it(shop, db):
    send(shop, "inventory_levels/update", shopify.inventory_level(49148385, 0))
    send(shop, "products/create", shopify.product())
    rows = {r["variant"]: r["in_stock"] for r in shop.admin("catalog").json()}
    assert rows == {"808950810": True, "49148385": False}


# --- compliance ----------------------------------------------------------------------------------


def test_customers_redact_deletes_the_person(shop, db):
    send(shop, "checkouts/create", shopify.checkout())
    send(shop, "orders/create", shopify.order())
    assert db.scalar("SELECT count(*) FROM people") == 1
    send(shop, "customers/redact", shopify.redact())
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM events") == 0
    assert db.scalar("SELECT count(*) FROM identifiers") == 0
    assert db.scalar("SELECT count(*) FROM shopify_webhooks WHERE body IS NOT NULL") == 0
    [row] = webhooks(shop, status="applied")[:1]
    assert row["topic"] == "customers/redact" and "deleted" in row["outcome"]


def test_data_request_points_the_merchant_to_the_export(shop, db):
    send(shop, "checkouts/create", shopify.checkout())
    person_id = shop.person(email="bob.norman@example.com")["person_id"]
    send(shop, "customers/data_request", shopify.data_request())
    [row] = [w for w in webhooks(shop) if w["topic"] == "customers/data_request"]
    assert row["outcome"] == f"export ready: GET /admin/people/{person_id}/export"

    export = shop.http.get(f"/admin/people/{person_id}/export", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert export.status_code == 200, export.text
    body = export.json()
    assert body["emails"] == ["bob.norman@example.com"] and body["user_id"] == "706405506930370084"
    [event] = body["events"]
    assert event["name"] == "Checkout Started" and event["context"]["integration"]["shop"] == shopify.SHOP
    assert body["messages"] == [] and body["journey_log"] == []
    assert shop.http.get(f"/admin/people/{person_id}/export").status_code == 401
    assert (
        shop.http.get("/admin/people/nobody/export", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code
        == 404
    )


def test_shop_redact_is_acknowledged(shop, db):
    send(shop, "shop/redact", {"shop_id": 954889, "shop_domain": shopify.SHOP})
    [row] = webhooks(shop)
    assert row["status"] == "applied" and "acknowledged" in row["outcome"]


def test_settings_without_a_secret_refuse_every_webhook(db):
    settings = settings_for(db.url, journeys=REPO_ROOT / "journeys.toml")
    assert "*.myshopify.com" not in settings.link_hosts
    with ServedApp(settings) as app, Api(app.url).http as http:
        response = shopify.send(http, "checkouts/create", shopify.checkout())
    assert response.status_code == 401 and "BREADCRUMB_SHOPIFY_WEBHOOK_SECRET" in response.json()["error"]


def test_a_failed_apply_stays_pending_visible_and_is_applied_by_the_retry(shop, db, monkeypatch):
    from integrations.shopify import inbox

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(inbox, "apply_topic", broken)
    response = send(shop, "checkouts/create", shopify.checkout())
    assert response.json() == {"ok": True}  # accepted: Shopify must not resend, we hold it
    [row] = webhooks(shop, status="pending")
    assert row["attempts"] == 1 and "RuntimeError: database went away" in row["outcome"]
    assert db.scalar("SELECT count(*) FROM events") == 0

    monkeypatch.undo()
    retried = shop.http.post("/admin/shopify/webhooks/retry", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert retried.status_code == 200 and retried.json() == {"applied": 1}
    [row] = webhooks(shop)
    assert row["status"] == "applied" and row["attempts"] == 2
    assert db.scalar("SELECT count(*) FROM events WHERE name = 'Checkout Started'") == 1


def test_a_placeholder_secret_is_a_configuration_error_naming_the_variable(monkeypatch):
    from worker.preflight import ConfigurationError, load_settings

    monkeypatch.setenv("BREADCRUMB_SHOPIFY_WEBHOOK_SECRET", f"{shopify.SECRET},changeme")
    with pytest.raises(ConfigurationError, match="BREADCRUMB_SHOPIFY_WEBHOOK_SECRET: .*at least 16 characters"):
        load_settings()
    monkeypatch.setenv("BREADCRUMB_SHOPIFY_WEBHOOK_SECRET", f"{shopify.SECRET}, {shopify.OLD_SECRET}")
    settings = load_settings()
    assert settings.shopify_webhook_secret == [shopify.SECRET, shopify.OLD_SECRET]
    assert "*.myshopify.com" in settings.link_hosts
