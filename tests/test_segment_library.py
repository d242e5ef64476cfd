"""The real `segment-analytics-python` client, pointed at the served app, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from conftest import SERVER_KEY, WRITE_KEY


def test_sync_client_track_then_identify_merges(api, db, served):
    client = Client(SERVER_KEY, host=served.url, sync_mode=True, timeout=30)  # a server library, a server key
    anon = "lib-device-1"
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    client.track(
        anonymous_id=anon,
        event="Product Viewed",
        properties={"sku": "LIB-1", "price": 25.0},
        timestamp=two_hours_ago,
        message_id="lib-view-1",
    )
    client.track(
        anonymous_id=anon,
        event="Product Added",
        properties={"sku": "LIB-1", "cart_id": "lib-cart"},
        message_id="lib-add-1",
    )
    client.page(
        anonymous_id=anon, name="Cart", properties={"url": "https://shop.example/cart"}, message_id="lib-page-1"
    )
    assert db.scalar("SELECT count(*) FROM people") == 0
    client.identify(
        user_id="lib-user-1",
        anonymous_id=anon,
        traits={"email": "Library.User@Example.com", "name": "Lib"},
        message_id="lib-identify-1",
    )

    person = api.person(email="library.user@example.com")
    assert person["user_id"] == "lib-user-1"
    assert person["anonymous_ids"] == [anon]
    assert person["traits"]["name"] == "Lib"
    events = {e["message_id"]: e for e in person["events"]}
    assert set(events) == {"lib-view-1", "lib-add-1", "lib-page-1", "lib-identify-1"}
    assert events["lib-add-1"]["name"] == "Added to Cart" and events["lib-add-1"]["original_name"] == "Product Added"
    assert events["lib-view-1"]["properties"] == {"sku": "LIB-1", "price": 25.0}
    assert events["lib-page-1"]["name"] == "Page Viewed"
    # The library stamps timestamp and sentAt from the same clock: skew correction keeps the time.
    stored = datetime.fromisoformat(events["lib-view-1"]["timestamp"])
    assert abs(stored - two_hours_ago) < timedelta(seconds=5)
    # The server key makes them server events (a browser key could not).
    assert {e["source"] for e in events.values()} == {"server"}
    assert db.scalar("SELECT count(*) FROM people") == 1


def test_async_client_flush_sends_one_batch(api, db, served):
    client = Client(WRITE_KEY, host=served.url, upload_size=50, upload_interval=0.05, timeout=30)
    try:
        for i in range(30):
            client.track(
                anonymous_id="lib-device-2",
                event="Product Viewed",
                properties={"sku": f"S{i}"},
                message_id=f"lib-async-{i}",
            )
        client.identify(anonymous_id="lib-device-2", traits={"email": "async@example.com"}, message_id="lib-async-id")
        client.flush()
    finally:
        client.join()
    person = api.person(email="async@example.com")
    assert len(person["events"]) == 31
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0


def test_alias_through_the_library(api, db, served):
    client = Client(WRITE_KEY, host=served.url, sync_mode=True, timeout=30)
    client.track(anonymous_id="lib-device-3", event="Product Viewed", message_id="lib-alias-view")
    client.alias(previous_id="lib-device-3", user_id="lib-user-3")
    person = api.person(user_id="lib-user-3")
    assert person["anonymous_ids"] == ["lib-device-3"]
    assert "lib-alias-view" in [e["message_id"] for e in person["events"]]


def test_gzip_bodies_from_the_library(api, db, served):
    client = Client(WRITE_KEY, host=served.url, sync_mode=True, gzip=True, timeout=30)
    client.identify(user_id="lib-gzip", traits={"email": "gzip@example.com"}, message_id="lib-gzip-1")
    assert api.person(user_id="lib-gzip")["emails"] == ["gzip@example.com"]


def test_wrong_write_key_is_refused(api, db, served):
    client = Client("wk_wrong", host=served.url, sync_mode=True, timeout=30)
    with pytest.raises(APIError) as refused:
        client.track(anonymous_id="lib-device-4", event="Product Viewed")
    assert refused.value.status == 401
    assert db.scalar("SELECT count(*) FROM events") == 0
