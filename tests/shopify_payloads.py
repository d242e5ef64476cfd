"""Shopify-shaped webhook bodies (REST webhook payloads: the documented field names, prices as
decimal strings, a nested customer, note_attributes) and a signed-call helper for the tests and bench."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import orjson

from integrations.shopify.signature import sign

SHOP = "glow-skincare.myshopify.com"
SECRET = "shpss_test_webhook_secret"
OLD_SECRET = "shpss_previous_secret"

EASTERN = timezone(timedelta(hours=-5))


def ago(minutes: float) -> str:
    """A moment `minutes` ago as Shopify writes it (the shop's offset)."""
    return (datetime.now(EASTERN) - timedelta(minutes=minutes)).isoformat(timespec="seconds")


CUSTOMER = {
    "id": 706405506930370084,
    "email": "Bob.Norman@Example.com",
    "created_at": "2026-11-30T10:00:00-05:00",
    "updated_at": "2026-12-01T10:00:00-05:00",
    "first_name": "Bob",
    "last_name": "Norman",
    "state": "enabled",
    "verified_email": True,
    "phone": "+16136120707",
    "tags": "vip",
    "currency": "USD",
    "email_marketing_consent": {
        "state": "subscribed",
        "opt_in_level": "single_opt_in",
        "consent_updated_at": "2026-12-01T10:00:00-05:00",
    },
    "sms_marketing_consent": {
        "state": "not_subscribed",
        "opt_in_level": "single_opt_in",
        "consent_updated_at": None,
        "consent_collected_from": "OTHER",
    },
    "admin_graphql_api_id": "gid://shopify/Customer/706405506930370084",
}

LINE_ITEMS = [
    {
        "id": 866550311766439020,
        "product_id": 632910392,
        "variant_id": 808950810,
        "sku": "IPOD2008PINK",
        "title": "Glow Serum",
        "variant_title": "30 ml",
        "vendor": "Glow",
        "quantity": 2,
        "price": "19.99",
        "line_price": "39.98",
        "requires_shipping": True,
        "taxable": True,
        "grams": 200,
    },
    {
        "id": 141249953214522974,
        "product_id": 921728736,
        "variant_id": 457924702,
        "sku": "",
        "title": "Night Cream",
        "variant_title": None,
        "vendor": "Glow",
        "quantity": 1,
        "price": "25.00",
        "line_price": "25.00",
        "requires_shipping": True,
        "taxable": True,
        "grams": 150,
    },
]


def checkout(
    token: str = "b1946ac92492d2347c6235b4d2611184",
    cart_token: str = "68778783ad298f1c80c3bafcddeea02f",
    anonymous_id: str | None = "anon-shopify-1",
    **changes,
) -> dict:
    body = {
        "id": 901414060,
        "token": token,
        "cart_token": cart_token,
        "email": "bob.norman@example.com",
        "phone": None,
        "gateway": None,
        "buyer_accepts_marketing": True,
        "created_at": ago(30),
        "updated_at": ago(28),
        "landing_site": None,
        "note": None,
        "note_attributes": [{"name": "gift_wrap", "value": "no"}],
        "referring_site": None,
        "shipping_lines": [],
        "taxes_included": False,
        "total_weight": 550,
        "currency": "USD",
        "completed_at": None,
        "closed_at": None,
        "user_id": None,
        "location_id": None,
        "source_identifier": None,
        "source_url": None,
        "device_id": None,
        "line_items": copy.deepcopy(LINE_ITEMS),
        "name": "#901414060",
        "source": None,
        "abandoned_checkout_url": f"https://{SHOP}/59910176/checkouts/{token}/recover?key=b6f1b4f2",
        "discount_codes": [],
        "tax_lines": [],
        "source_name": "web",
        "presentment_currency": "USD",
        "total_discounts": "0.00",
        "total_line_items_price": "64.98",
        "total_price": "70.48",
        "total_tax": "5.50",
        "subtotal_price": "64.98",
        "customer": copy.deepcopy(CUSTOMER),
    }
    if anonymous_id:
        body["note_attributes"].append({"name": "_breadcrumb_anonymous_id", "value": anonymous_id})
    body.update(changes)
    return body


def order(
    order_id: int = 820982911946154508,
    checkout_token: str = "b1946ac92492d2347c6235b4d2611184",
    cart_token: str = "68778783ad298f1c80c3bafcddeea02f",
    anonymous_id: str | None = "anon-shopify-1",
    **changes,
) -> dict:
    body = {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": "#1001",
        "order_number": 1001,
        "email": "bob.norman@example.com",
        "phone": None,
        "cart_token": cart_token,
        "checkout_token": checkout_token,
        "checkout_id": 901414060,
        "created_at": ago(20),
        "processed_at": ago(20),
        "updated_at": ago(20),
        "cancelled_at": None,
        "cancel_reason": None,
        "financial_status": "paid",
        "fulfillment_status": None,
        "currency": "USD",
        "total_price": "70.48",
        "subtotal_price": "64.98",
        "total_tax": "5.50",
        "buyer_accepts_marketing": True,
        "note_attributes": [],
        "line_items": copy.deepcopy(LINE_ITEMS),
        "customer": copy.deepcopy(CUSTOMER),
    }
    if anonymous_id:
        body["note_attributes"].append({"name": "_breadcrumb_anonymous_id", "value": anonymous_id})
    body.update(changes)
    return body


def product(product_id: int = 632910392, handle: str = "glow-serum", **changes) -> dict:
    body = {
        "id": product_id,
        "title": "Glow Serum",
        "body_html": "<p>Vitamin C serum.</p>",
        "vendor": "Glow",
        "product_type": "Serums",
        "created_at": "2026-11-01T10:00:00-05:00",
        "handle": handle,
        "updated_at": "2026-12-04T09:00:00-05:00",
        "published_at": "2026-11-01T10:00:00-05:00",
        "status": "active",
        "tags": "vitamin-c",
        "admin_graphql_api_id": f"gid://shopify/Product/{product_id}",
        "variants": [
            {
                "id": 808950810,
                "product_id": product_id,
                "title": "30 ml",
                "price": "19.99",
                "sku": "IPOD2008PINK",
                "position": 1,
                "inventory_policy": "deny",
                "compare_at_price": None,
                "option1": "30 ml",
                "inventory_item_id": 808950810,
                "inventory_quantity": 10,
                "inventory_management": "shopify",
                "image_id": 562641783,
            },
            {
                "id": 49148385,
                "product_id": product_id,
                "title": "50 ml",
                "price": "29.99",
                "sku": "IPOD2008RED",
                "position": 2,
                "inventory_policy": "deny",
                "compare_at_price": None,
                "option1": "50 ml",
                "inventory_item_id": 49148385,
                "inventory_quantity": 3,
                "inventory_management": "shopify",
                "image_id": None,
            },
        ],
        "images": [
            {
                "id": 850703190,
                "product_id": product_id,
                "position": 1,
                "src": "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/serum.jpg",
            },
            {
                "id": 562641783,
                "product_id": product_id,
                "position": 2,
                "src": "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/serum-30.jpg",
            },
        ],
        "image": {
            "id": 850703190,
            "product_id": product_id,
            "position": 1,
            "src": "https://cdn.shopify.com/s/files/1/0005/4838/0009/products/serum.jpg",
        },
    }
    body.update(changes)
    return body


def inventory_level(inventory_item_id: int, available: int, location_id: int = 24826418) -> dict:
    return {
        "inventory_item_id": inventory_item_id,
        "location_id": location_id,
        "available": available,
        "updated_at": "2026-12-04T10:10:00-05:00",
        "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location_id}?inventory_item_id={inventory_item_id}",
    }


def _compliance(customer: dict | None, orders_key: str, **extra) -> dict:
    """A compliance topic's body: the shop, the customer it is about and their orders."""
    customer = customer or CUSTOMER
    return {
        "shop_id": 954889,
        "shop_domain": SHOP,
        orders_key: [820982911946154508],
        "customer": {"id": customer["id"], "email": customer["email"], "phone": customer["phone"]},
        **extra,
    }


def redact(customer: dict | None = None) -> dict:
    return _compliance(customer, "orders_to_redact")


def data_request(customer: dict | None = None) -> dict:
    return _compliance(customer, "orders_requested", data_request={"id": 9999})


def headers(topic: str, body: bytes, secret: str | None = SECRET, webhook_id: str | None = None) -> dict:
    """What Shopify sends with a webhook (`secret` None: no signature header)."""
    sent = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Triggered-At": "2026-12-04T15:02:00.000Z",
    }
    if secret is not None:
        sent["X-Shopify-Hmac-Sha256"] = sign(body, secret)
    return sent


def send(http: httpx.Client, topic: str, payload: dict, **kw) -> httpx.Response:
    body = orjson.dumps(payload)
    return http.post("/shopify/webhooks", content=body, headers=headers(topic, body, **kw))
