"""The catalog over HTTP: `PUT /admin/catalog` (bulk upsert, validation naming item and field),
`GET /admin/catalog`, and the cheap feed from Product Viewed / Added to Cart at ingest."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from sqlalchemy import event

from conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def put(api, body):
    return api.http.put("/admin/catalog", json=body, headers=AUTH)


def catalog(api, **params) -> list[dict]:
    response = api.admin("catalog", **params)
    assert response.status_code == 200, response.text
    return response.json()


def test_bulk_upsert_creates_then_updates_only_the_fields_sent(api):
    created = put(
        api,
        {
            "products": [
                {
                    "sku": "SER-30",
                    "variant": "30 ml",
                    "name": "Night Serum",
                    "category": "serums",
                    "price": 64,
                    "currency": "usd",
                    "image_url": "https://cdn.example/ser.jpg",
                    "url": "/products/ser",
                    "bestseller_rank": 1,
                },
                {"sku": "SER-30", "variant": "50 ml", "name": "Night Serum", "category": "serums", "price": 89},
                {"sku": "CLN-01", "name": "Cleanser"},
            ]
        },
    )
    assert created.status_code == 200, created.text
    assert created.json() == {"upserted": 3, "created": 3, "updated": 0}
    # An inventory sync: only stock, for one variant.
    updated = put(api, [{"sku": "SER-30", "variant": "30 ml", "in_stock": False}])
    assert updated.json() == {"upserted": 1, "created": 0, "updated": 1}
    rows = {(p["sku"], p["variant"]): p for p in catalog(api)}
    serum = rows[("SER-30", "30 ml")]
    assert serum["in_stock"] is False
    assert (serum["name"], serum["price"], serum["currency"], serum["bestseller_rank"]) == ("Night Serum", 64, "USD", 1)
    assert rows[("SER-30", "50 ml")]["in_stock"] is True and rows[("CLN-01", None)]["source"] == "admin"
    assert [p["variant"] for p in catalog(api, sku="SER-30", in_stock=True)] == ["50 ml"]
    assert {p["sku"] for p in catalog(api, category="serums")} == {"SER-30"}


def test_validation_errors_name_the_item_and_the_field_and_store_nothing(api):
    response = put(
        api,
        {
            "products": [
                {"sku": "OK-1", "price": 10},
                {"sku": "BAD-1", "price": -5},
                {"sku": "BAD-2", "in_stock": "yes", "image_url": "/relative.jpg"},
                {"name": "no sku"},
                {"sku": "OK-1"},
                {"sku": "X", "colour": "red"},
                "not an object",
            ]
        },
    )
    assert response.status_code == 400
    problems = response.json()["detail"]
    joined = "\n".join(problems)
    assert "products[1] (sku 'BAD-1').price: Input should be greater than or equal to 0" in joined
    assert "products[2] (sku 'BAD-2').in_stock: Value error, must be true or false" in joined
    assert "products[2] (sku 'BAD-2').image_url" in joined and "absolute http(s) URL" in joined
    assert "products[3].sku: Field required" in joined
    assert "products[4] (sku 'OK-1'): same sku and variant as products[0]" in joined
    assert "products[5] (sku 'X').colour: Extra inputs are not permitted" in joined
    assert "products[6]: must be an object" in joined
    assert catalog(api) == []  # all or nothing


def test_bad_bodies_and_auth(api):
    assert put(api, {"products": []}).status_code == 400
    assert put(api, {"items": []}).json()["detail"][0].startswith("unexpected top-level key 'items'")
    assert api.http.put("/admin/catalog", content=b"{nope", headers=AUTH).status_code == 400
    assert api.http.put("/admin/catalog", json=[{"sku": "A"}]).status_code == 401


def test_ingest_feeds_the_catalog_with_one_upsert_per_request(api, db):
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    batch = [
        {
            "type": "track",
            "anonymousId": "cat-1",
            "event": "Product Viewed",
            "timestamp": (t0 + timedelta(minutes=i)).isoformat(),
            "properties": {
                "sku": f"P-{i % 3}",
                "name": f"Product {i % 3} v{i}",
                "category": "masks",
                "price": 10 + i,
                "image_url": f"https://cdn.example/{i}.jpg",
            },
        }
        for i in range(9)
    ] + [
        {
            "type": "track",
            "anonymousId": "cat-1",
            "event": "Product Added",
            "timestamp": t0.isoformat(),
            "properties": {"product_id": "P-9", "variant": "M", "price": "12.5", "cart_id": "c"},
        },
        {"type": "page", "anonymousId": "cat-1", "name": "Home", "properties": {"sku": "NOT-A-PRODUCT"}},
    ]
    assert api.segment("batch", {"batch": batch}).status_code == 200
    rows = {(p["sku"], p["variant"]): p for p in catalog(api)}
    assert set(rows) == {("P-0", None), ("P-1", None), ("P-2", None), ("P-9", "M")}
    assert rows[("P-2", None)]["name"] == "Product 2 v8" and rows[("P-2", None)]["price"] == 18  # newest wins
    assert rows[("P-9", "M")]["price"] == 12.5 and rows[("P-9", "M")]["source"] == "event"
    assert all(p["in_stock"] for p in rows.values())


def test_one_statement_per_request_and_none_without_products(db):
    from journeys.policy import Policy
    from store.ingest import Incoming, ingest

    statements: list[str] = []

    def spy(conn, cursor, statement, *args):
        if "products" in statement.lower():
            statements.append(statement)

    now = datetime.now(UTC)

    def track(name, **props):
        return Incoming(
            type="track", original_name=name, anonymous_id="spy", properties=props, timestamp=now, received_at=now
        )

    event.listen(db.engine, "before_cursor_execute", spy)
    try:
        ingest(
            db.engine,
            [track("Product Viewed", sku=f"S{i}", price=i) for i in range(50)]
            + [track("Added to Cart", sku="S1", variant="M", cart_id="c")],
            Policy(),
            api="test",
            endpoint="test",
        )
        assert len(statements) == 1
        statements.clear()
        ingest(db.engine, [track("Quiz Answered", answer="dry")], Policy(), api="test", endpoint="test")
        assert statements == []
    finally:
        event.remove(db.engine, "before_cursor_execute", spy)
    assert db.scalar("SELECT count(*) FROM products") == 51


def test_events_never_overwrite_the_admin_feed_or_stock(api):
    put(api, [{"sku": "A", "name": "Admin name", "in_stock": False, "category": None}])
    api.segment(
        "track",
        {
            "anonymousId": "x",
            "event": "Product Viewed",
            "properties": {"sku": "A", "name": "Event name", "category": "serums", "price": 5},
        },
    )
    row = catalog(api, sku="A")[0]
    assert (row["name"], row["in_stock"], row["category"], row["price"]) == ("Admin name", False, "serums", 5)


def test_a_late_older_event_does_not_roll_back_newer_data(api):
    now = datetime.now(UTC)
    api.segment(
        "track",
        {
            "anonymousId": "y",
            "event": "Product Viewed",
            "timestamp": now.isoformat(),
            "properties": {"sku": "B", "name": "New name", "price": 20},
        },
    )
    api.segment(
        "track",
        {
            "anonymousId": "y",
            "event": "Product Viewed",
            "timestamp": (now - timedelta(hours=1)).isoformat(),
            "properties": {"sku": "B", "name": "Old name", "price": 15, "image_url": "https://cdn.example/b.jpg"},
        },
    )
    row = catalog(api, sku="B")[0]
    assert (row["name"], row["price"], row["image_url"]) == ("New name", 20, "https://cdn.example/b.jpg")
