"""Catalogue triggers without Temporal: the pure rules (journeys/catalogue.py), the policy sections,
and the store side — a catalogue write (store function, `PUT /admin/catalog`, Shopify webhooks)
queueing `catalogue` signals for exactly the right people, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import tomllib

import pytest
from sqlmodel import select

from conftest import ADMIN_TOKEN, REPO_ROOT
from integrations.shopify.mapping import apply_topic
from journey_harness import identify, track
from journeys.catalogue import (
    Change,
    Seen,
    Stock,
    changes,
    decide_catalogue,
    journey_id,
    product_stop,
    seen_price,
    who_to_tell,
)
from journeys.history import HistoryEvent
from journeys.policy import CATALOGUE_WINDOW, PolicyError, load_policy, parse_policy
from journeys.routing import holdout_bucket
from store import catalog
from store.db import transaction
from store.ingest import ingest
from store.models import OutboxRow
from store.settings import Settings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = load_policy(REPO_ROOT / "journeys.toml")


# --- pure rules -----------------------------------------------------------------------------------


def test_changes_finds_back_in_stock_and_price_drops_but_not_new_rows_or_rises():
    before = {
        ("A", ""): Stock(False, 30.0),
        ("B", "s"): Stock(True, 50.0),
        ("B", "m"): Stock(True, 50.0),
        ("C", ""): Stock(True, 20.0),
        ("D", ""): Stock(False, 10.0),
        ("E", ""): Stock(True, 10.0),
    }
    after = {
        ("A", ""): Stock(True, 30.0),  # back in stock
        ("B", "s"): Stock(True, 45.0),  # cheaper…
        ("B", "m"): Stock(True, 40.0),  # …and cheaper still: one change, the lowest price
        ("C", ""): Stock(True, 25.0),  # dearer: nothing
        ("D", ""): Stock(False, 5.0),  # cheaper but still out of stock: nothing
        ("E", ""): Stock(False, 10.0),  # sold out: nothing
        ("F", ""): Stock(True, 9.0),  # new row: nobody waited for it
    }
    assert sorted(changes(before, after), key=lambda c: c.product_id) == [
        Change("A", "back_in_stock", 30.0, 30.0),
        Change("B", "price_drop", 50.0, 40.0),
    ]


def test_who_to_tell_leaves_out_buyers_and_for_a_price_drop_those_who_saw_it_cheaper():
    seen = [
        Seen("p-dear", T0, 60.0),
        Seen("p-cheap", T0, 35.0),
        Seen("p-buyer", T0, 60.0),
        Seen("p-no-price", T0, None),  # the catalogue's old price (50) stands in
        Seen("p-changed", T0, 30.0),
        Seen("p-changed", T0 + timedelta(hours=1), 55.0),  # the latest sighting counts
    ]
    drop = Change("X", "price_drop", was_price=50.0, price=40.0)
    assert who_to_tell(drop, seen, bought={"p-buyer"}) == ["p-changed", "p-dear", "p-no-price"]
    back = Change("X", "back_in_stock", 40.0, 40.0)
    assert who_to_tell(back, seen, bought={"p-buyer"}) == ["p-changed", "p-cheap", "p-dear", "p-no-price"]


def test_product_stop_names_out_of_stock_and_price_back_up():
    assert product_stop("back_in_stock", [Stock(True, 30.0)], 30.0) is None
    assert product_stop("back_in_stock", [Stock(False, 30.0)], 30.0) == "out of stock"
    assert product_stop("back_in_stock", [], None) == "out of stock"  # left the catalogue
    assert product_stop("price_drop", [Stock(True, 40.0), Stock(False, 10.0)], 50.0) is None
    assert product_stop("price_drop", [Stock(True, 50.0)], 50.0) == "price back up (50 ≥ 50 they saw)"
    assert product_stop("back_in_stock", [Stock(True, 80.0)], 50.0) is None  # price is no matter here


def test_seen_price_is_the_latest_priced_sighting_of_that_product():
    events = [
        HistoryEvent(name="Product Viewed", timestamp=T0, properties={"sku": "X", "price": 60}),
        HistoryEvent(name="Added to Cart", timestamp=T0 + timedelta(1), properties={"sku": "X", "price": "55.5"}),
        HistoryEvent(name="Product Viewed", timestamp=T0 + timedelta(2), properties={"sku": "X"}),
        HistoryEvent(name="Product Viewed", timestamp=T0 + timedelta(3), properties={"sku": "Y", "price": 9}),
    ]
    assert seen_price(events, "X") == 55.5
    assert seen_price(events, "Z") is None


def test_decide_catalogue_yields_to_cart_recovery_and_replaces_browse():
    started = decide_catalogue("p1", "X", "back_in_stock", POLICY, running=None)
    assert (started.route, started.product_id, started.reason) == ("back_in_stock", "X", "product X back in stock")
    assert decide_catalogue("p1", "X", "price_drop", POLICY, "browse_recovery").route == "price_drop"
    kept = decide_catalogue("p1", "X", "price_drop", POLICY, "cart_recovery")
    assert (kept.route, kept.reason) == ("none", "price_drop of product X not started: cart_recovery running")
    assert decide_catalogue("p1", "Y", "price_drop", POLICY, "back_in_stock").route == "none"  # one at a time
    person = next(f"p{i}" for i in range(1000) if holdout_bucket(f"p{i}") < 50)
    held_out = POLICY.model_copy(update={"holdout_percent": 50.0})
    assert "holdout group" in decide_catalogue(person, "X", "back_in_stock", held_out, None).reason


def test_decide_catalogue_follows_the_journeys_segment_rules():
    """`unless = ["recent_buyers"]` on back_in_stock keeps a recent buyer out; `only_if` lets only members in."""
    data = tomllib.loads((REPO_ROOT / "journeys.toml").read_text())
    data["segments"] = {"recent_buyers": {"orders": {"last_within": "30d"}}, "vip": {"orders": {"count_at_least": 3}}}
    data["journeys"]["back_in_stock"]["unless"] = ["recent_buyers"]
    data["journeys"]["price_drop"]["only_if"] = ["vip"]
    policy = parse_policy(data)
    kept_out = decide_catalogue("p1", "X", "back_in_stock", policy, None, segments={"recent_buyers"})
    assert kept_out.route == "none" and "recent_buyers" in kept_out.reason, kept_out.reason
    assert decide_catalogue("p1", "X", "back_in_stock", policy, None, segments=set()).route == "back_in_stock"
    assert decide_catalogue("p1", "X", "price_drop", policy, None, segments=set()).route == "none"
    assert decide_catalogue("p1", "X", "price_drop", policy, None, segments={"vip"}).route == "price_drop"


def test_journey_id_is_the_same_within_a_window_number_and_differs_across():
    window = timedelta(days=14)
    start = datetime.fromtimestamp(window.total_seconds() * 100, UTC)
    first = journey_id("back_in_stock", "p1", "X", start, window)
    assert first == journey_id("back_in_stock", "p1", "X", start + window - timedelta(seconds=1), window)
    assert first != journey_id("back_in_stock", "p1", "X", start + window, window)
    assert first != journey_id("back_in_stock", "p1", "Y", start, window)
    assert first.startswith("back_in_stock-p1-")


def test_a_journeys_toml_without_catalogue_sections_gets_the_defaults():
    data = tomllib.loads((REPO_ROOT / "journeys.toml").read_text())
    for name in ("back_in_stock", "price_drop"):
        del data["journeys"][name]
    policy = parse_policy(data)
    assert [s.template for s in policy.journeys["back_in_stock"].steps] == ["back_in_stock_1", "back_in_stock_2"]
    assert policy.catalogue_window("price_drop") == CATALOGUE_WINDOW
    data["journeys"]["price_drop"] = {"window": "3d", "steps": [{"delay": "1h", "template": "price_drop_1"}]}
    custom = parse_policy(data)
    assert custom.catalogue_window("price_drop") == timedelta(days=3)
    assert custom.catalogue_window("back_in_stock") == CATALOGUE_WINDOW


def test_a_window_on_a_journey_without_one_is_an_error_naming_the_key():
    data = tomllib.loads((REPO_ROOT / "journeys.toml").read_text())
    with pytest.raises(PolicyError, match="journeys.welcome.window: only catalogue journeys"):
        parse_policy(
            {**data, "journeys": {**data["journeys"], "welcome": {**data["journeys"]["welcome"], "window": "3d"}}}
        )
    with pytest.raises(PolicyError, match=r"journeys\.back_in_stock\.window: Value error, invalid duration 'soon'"):
        bad = {**data["journeys"]["back_in_stock"], "window": "soon"}
        parse_policy({**data, "journeys": {**data["journeys"], "back_in_stock": bad}})


# --- the store: who gets a signal -----------------------------------------------------------------


def _shopper(db, anon: str, email: str, *events) -> str:
    """A known shopper's past, stored without waking a hub; returns their person id."""
    ingest(db.engine, [identify(anon, email), *events], POLICY, api="test", endpoint="test", wake_hubs=False)
    return db.scalar("SELECT person_id FROM identifiers WHERE kind='email' AND value=:v", v=email)


def _put(db, *items: dict, policy=POLICY) -> None:
    with transaction(db.engine) as session:
        catalog.upsert_admin(session, catalog.validate_items(list(items)), policy)


def _signals(db) -> list[tuple[str, str, str]]:
    """(person, trigger, product) of every queued catalogue signal, sorted."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(OutboxRow.person_id, OutboxRow.payload).where(OutboxRow.kind == "catalogue")).all()
    return sorted((person, payload["trigger"], payload["product_id"]) for person, payload in rows)


def test_back_in_stock_signals_viewers_and_carters_not_buyers_strangers_or_old_viewers(db):
    now = datetime.now(UTC)
    _put(db, {"sku": "SER", "name": "Serum", "price": 40, "in_stock": False})
    viewer = _shopper(db, "a1", "viewer@example.com", track("a1", "Product Viewed", sku="SER", at=now - timedelta(1)))
    carter = _shopper(
        db, "a2", "carter@example.com", track("a2", "Added to Cart", product_id="SER", at=now - timedelta(2))
    )
    buyer = _shopper(
        db,
        "a3",
        "buyer@example.com",
        track("a3", "Product Viewed", sku="SER", at=now - timedelta(3)),
        track("a3", "Order Completed", order_id="o3", products=[{"sku": "SER", "price": 40}], at=now - timedelta(2)),
    )
    other_order = _shopper(
        db,
        "a4",
        "other@example.com",
        track("a4", "Product Viewed", sku="SER", at=now - timedelta(3)),
        track("a4", "Order Completed", order_id="o4", products=[{"sku": "MASK"}], at=now - timedelta(2)),
    )
    _shopper(db, "a5", "old@example.com", track("a5", "Product Viewed", sku="SER", at=now - timedelta(30)))
    _shopper(db, "a6", "elsewhere@example.com", track("a6", "Product Viewed", sku="MASK", at=now - timedelta(1)))
    ingest(db.engine, [track("anon-only", "Product Viewed", sku="SER")], POLICY, api="t", endpoint="t", wake_hubs=False)
    assert _signals(db) == []

    _put(db, {"sku": "SER", "in_stock": True})
    told = sorted([viewer, carter, other_order])
    assert _signals(db) == [(person, "back_in_stock", "SER") for person in told]
    assert buyer not in told
    _put(db, {"sku": "SER", "in_stock": True})  # still in stock: no transition, nothing more
    assert len(_signals(db)) == 3


def test_price_drop_signals_only_those_who_saw_it_dearer(db):
    now = datetime.now(UTC)
    _put(db, {"sku": "SER", "price": 50})
    dear = _shopper(db, "b1", "dear@example.com", track("b1", "Product Viewed", sku="SER", price=50, at=now))
    _shopper(db, "b2", "cheap@example.com", track("b2", "Product Viewed", sku="SER", price=35, at=now))
    unpriced = _shopper(db, "b3", "unpriced@example.com", track("b3", "Product Viewed", sku="SER", at=now))
    _put(db, {"sku": "SER", "price": 40})
    assert _signals(db) == sorted([(dear, "price_drop", "SER"), (unpriced, "price_drop", "SER")])


def test_a_backfill_or_a_write_without_policy_starts_nothing(db):
    _put(db, {"sku": "SER", "in_stock": False})
    _shopper(db, "c1", "c1@example.com", track("c1", "Product Viewed", sku="SER"))
    _put(db, {"sku": "SER", "in_stock": True}, policy=None)
    assert _signals(db) == []


def test_put_admin_catalog_over_http_queues_the_signal(api, db):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert api.http.put("/admin/catalog", json=[{"sku": "SER", "in_stock": False}], headers=headers).status_code == 200
    person = _shopper(db, "d1", "http@example.com", track("d1", "Product Viewed", sku="SER"))
    response = api.http.put("/admin/catalog", json=[{"sku": "SER", "in_stock": True}], headers=headers)
    assert response.status_code == 200, response.text
    assert _signals(db) == [(person, "back_in_stock", "SER")]


def test_shopify_inventory_and_product_webhooks_trigger_like_the_admin_api(db):
    settings = Settings(database_url=db.url, journeys=REPO_ROOT / "journeys.toml")
    product = {
        "id": 77,
        "title": "Serum",
        "handle": "serum",
        "status": "active",
        "variants": [
            {
                "id": 701,
                "price": "40.00",
                "inventory_item_id": 9001,
                "inventory_management": "shopify",
                "inventory_quantity": 0,
            }
        ],
    }
    apply_topic(db.engine, settings, POLICY, "products/create", product, "shop.example")
    person = _shopper(db, "e1", "shopify@example.com", track("e1", "Product Viewed", product_id="77", price=40))
    level = {"inventory_item_id": 9001, "location_id": 1, "available": 3}
    apply_topic(db.engine, settings, POLICY, "inventory_levels/update", level, "shop.example")
    assert _signals(db) == [(person, "back_in_stock", "77")]
    cheaper = {**product, "variants": [{**product["variants"][0], "price": "30.00", "inventory_quantity": 3}]}
    apply_topic(db.engine, settings, POLICY, "products/update", cheaper, "shop.example")
    assert _signals(db) == [(person, "back_in_stock", "77"), (person, "price_drop", "77")]
