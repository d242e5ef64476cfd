"""Segment HTTP Tracking API (`/v1/*`) over real HTTP, on SQLite and PostgreSQL (DESIGN section 3)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, UTC

import httpx
import pytest

from conftest import ADMIN_TOKEN, WRITE_KEY


def mid() -> str:
    return f"m-{uuid.uuid4().hex}"


def as_json(value):
    """JSON columns come back as text from SQLite and as Python objects from PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def as_utc(value) -> datetime:
    """Timestamps come back as text from SQLite (naive UTC) and as aware datetimes from PostgreSQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_row(db, message_id: str):
    rows = db.rows(
        "SELECT type, name, original_name, anonymous_id, user_id, person_id, properties, context, timestamp, source "
        "FROM events WHERE message_id = :m",
        m=message_id,
    )
    assert len(rows) <= 1
    return rows[0] if rows else None


def rejected(api) -> list[dict]:
    response = api.admin("rejected")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def http(served):
    """A client for tests that store nothing (skips the per-test database clean-up)."""
    with httpx.Client(base_url=served.url, timeout=60) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Every call type, on its long and its analytics.js short path
# ---------------------------------------------------------------------------------------------

CALLS = [
    # (long, short, body, expected type, expected stored name)
    (
        "identify",
        "i",
        {"anonymousId": "dev-1", "userId": "u-1", "traits": {"email": "id@example.com"}},
        "identify",
        "Identify",
    ),
    (
        "track",
        "t",
        {"anonymousId": "dev-1", "event": "Product Viewed", "properties": {"sku": "S1"}},
        "track",
        "Product Viewed",
    ),
    (
        "page",
        "p",
        {"anonymousId": "dev-1", "name": "Home", "properties": {"url": "https://shop/"}},
        "page",
        "Page Viewed",
    ),
    ("screen", "s", {"anonymousId": "dev-1", "name": "Cart"}, "screen", "Screen Viewed"),
    ("alias", "a", {"previousId": "dev-1", "userId": "u-1"}, "alias", "Alias"),
    ("group", "g", {"userId": "u-1", "groupId": "acme", "traits": {"plan": "pro"}}, "group", "Group"),
]


@pytest.mark.parametrize("long_path,short_path,body,kind,name", CALLS, ids=[c[0] for c in CALLS])
def test_every_call_type_is_stored_on_long_and_short_path(api, db, long_path, short_path, body, kind, name):
    for path in (long_path, short_path):
        message_id = mid()
        response = api.segment(path, {**body, "messageId": message_id})
        assert response.status_code == 200, f"/v1/{path}: {response.text}"
        assert response.json() == {"success": True}
        row = event_row(db, message_id)
        assert row is not None, f"/v1/{path} was not stored"
        assert (row.type, row.name) == (kind, name), f"/v1/{path}"
        properties = as_json(row.properties)
        if kind == "page":
            assert properties == {"url": "https://shop/", "name": "Home"}
        if kind == "screen":
            assert properties == {"name": "Cart"}
        if kind == "group":
            assert properties["groupId"] == "acme" and properties["plan"] == "pro"
        if kind == "track":
            assert properties == {"sku": "S1"}
    assert db.scalar("SELECT count(*) FROM events") == 2


def test_unknown_path_is_404(http):
    assert http.post("/v1/teleport", json={"anonymousId": "a"}, auth=(WRITE_KEY, "")).status_code == 404


@pytest.mark.parametrize("path", ["batch", "b", "import"])
def test_batch_paths_store_every_message(api, db, path):
    ids = [mid(), mid(), mid()]
    body = {
        "batch": [
            {"type": "track", "anonymousId": "dev-b", "event": "Product Viewed", "messageId": ids[0]},
            {"type": "page", "anonymousId": "dev-b", "messageId": ids[1]},
            {"type": "identify", "anonymousId": "dev-b", "traits": {"email": "batch@example.com"}, "messageId": ids[2]},
        ]
    }
    response = api.segment(path, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    stored = {r.message_id: r.type for r in db.rows("SELECT message_id, type FROM events")}
    assert stored == {ids[0]: "track", ids[1]: "page", ids[2]: "identify"}
    person = api.person(email="batch@example.com")
    assert {e["message_id"] for e in person["events"]} == set(ids)


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


def test_write_key_in_body_without_basic_auth(api, db):
    message_id = mid()
    response = api.http.post(
        "/v1/track", json={"writeKey": WRITE_KEY, "anonymousId": "a", "event": "X", "messageId": message_id}
    )
    assert response.status_code == 200, response.text
    assert event_row(db, message_id) is not None


def test_write_key_in_batch_body(api, db):
    message_id = mid()
    response = api.http.post(
        "/v1/batch",
        json={
            "writeKey": WRITE_KEY,
            "batch": [{"type": "track", "anonymousId": "a", "event": "X", "messageId": message_id}],
        },
    )
    assert response.status_code == 200, response.text
    assert event_row(db, message_id) is not None


def test_unknown_write_key_is_401_json(api, db):
    cases = {
        "unknown key as Basic user": ({}, {"auth": ("wk_nope", "")}),
        "unknown key in body": ({"writeKey": "wk_nope"}, {}),
        "no key at all": ({}, {}),
        "write key as Bearer": ({}, {"headers": {"Authorization": f"Bearer {WRITE_KEY}"}}),
        "garbled Basic": ({}, {"headers": {"Authorization": "Basic !!!not-base64"}}),
        "empty writeKey": ({"writeKey": ""}, {}),
        "writeKey not a string": ({"writeKey": ["wk_test_key"]}, {}),
    }
    for case, (extra, kwargs) in cases.items():
        body = {"anonymousId": "a", "event": "X", "messageId": mid(), **extra}
        response = api.http.post("/v1/track", json=body, **kwargs)
        assert response.status_code == 401, f"{case}: {response.text}"
        payload = response.json()
        assert payload["success"] is False, case
        assert "write key" in payload["error"], case
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_unknown_basic_key_is_not_rescued_by_a_good_key_in_the_body(api, db):
    body = {"writeKey": WRITE_KEY, "anonymousId": "a", "event": "X", "messageId": mid()}
    response = api.http.post("/v1/track", json=body, auth=("wk_nope", ""))
    assert response.status_code == 401
    assert db.scalar("SELECT count(*) FROM events") == 0


# ---------------------------------------------------------------------------------------------
# Bodies: text/plain, malformed, size limits
# ---------------------------------------------------------------------------------------------


def test_text_plain_body_from_analytics_js(api, db):
    message_id = mid()
    body = {
        "writeKey": WRITE_KEY,
        "anonymousId": "browser-1",
        "event": "Product Viewed",
        "messageId": message_id,
        "properties": {"sku": "TP-1"},
    }
    response = api.http.post(
        "/v1/t",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"},
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("access-control-allow-origin") in ("*", "https://shop.example")
    row = event_row(db, message_id)
    assert row is not None and as_json(row.properties) == {"sku": "TP-1"}


def test_cors_preflight(http):
    response = http.options(
        "/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("access-control-allow-origin") in ("*", "https://shop.example")
    assert "POST" in response.headers.get("access-control-allow-methods", "")


def test_malformed_json_is_400_naming_the_problem(api, db):
    cases = [
        (b'{"anonymousId": "a", "event": ', "not valid JSON"),
        (b"not json at all", "not valid JSON"),
        (b"", "empty"),
        (b'{"anonymousId": "a", "event": "X", "properties": {"v": NaN}}', "not valid JSON"),
    ]
    for content, needle in cases:
        for content_type in ("application/json", "text/plain"):
            response = api.http.post(
                "/v1/track", content=content, auth=(WRITE_KEY, ""), headers={"Content-Type": content_type}
            )
            assert response.status_code == 400, (content, response.text)
            payload = response.json()
            assert payload["success"] is False
            assert needle in payload["error"], (content, payload)
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_wrong_json_shape_is_400(api, db):
    for path, body, needle in [
        ("track", [{"type": "track"}], "JSON object"),
        ("track", "just a string", "JSON object"),
        ("batch", {"batch": {"not": "a list"}}, "batch"),
        ("batch", {"events": []}, "batch"),
    ]:
        response = api.segment(path, body)
        assert response.status_code == 400, response.text
        assert needle in response.json()["error"], (body, response.text)


def _big_batch(total_bytes: int) -> dict:
    blob = "x" * 25_000
    count = total_bytes // 25_000 + 1
    return {
        "batch": [
            {"type": "track", "anonymousId": "big", "event": "X", "messageId": mid(), "properties": {"blob": blob}}
            for _ in range(count)
        ]
    }


def test_request_over_500_kb_is_400(api, db):
    body = _big_batch(520 * 1024)
    response = api.segment("batch", body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["success"] is False
    assert "500 KB" in payload["error"]
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_chunked_request_over_500_kb_is_400(api, db):
    """No Content-Length to go by: the limit still holds while streaming."""
    data = json.dumps(_big_batch(520 * 1024)).encode()
    chunks = (data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024))
    response = api.http.post(
        "/v1/batch", content=chunks, auth=(WRITE_KEY, ""), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "500 KB" in response.json()["error"]
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_request_just_under_500_kb_is_accepted(api, db):
    body = _big_batch(400 * 1024)
    assert len(json.dumps(body)) < 500 * 1024
    response = api.segment("batch", body)
    assert response.status_code == 200, response.text
    assert db.scalar("SELECT count(*) FROM events") == len(body["batch"])


def test_single_message_over_32_kb_is_400_and_quarantined(api, db):
    """Sent alone, the message is the request: over the size limit is a 400 naming it (as Segment
    answers); it is valid JSON, so the shop also finds it in the quarantine."""
    message_id = mid()
    response = api.segment(
        "track", {"anonymousId": "a", "event": "Huge", "messageId": message_id, "properties": {"blob": "y" * 40_000}}
    )
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False and "the limit is 32 KB" in response.json()["error"]
    assert event_row(db, message_id) is None
    quarantined = [r for r in rejected(api) if r["message_id"] == message_id]
    assert len(quarantined) == 1
    assert "32 KB" in quarantined[0]["reason"]
    assert quarantined[0]["api"] == "segment"


def test_oversized_message_in_a_batch_does_not_sink_the_rest(api, db):
    good, big = mid(), mid()
    response = api.segment(
        "batch",
        {
            "batch": [
                {"type": "track", "anonymousId": "a", "event": "Fine", "messageId": good},
                {
                    "type": "track",
                    "anonymousId": "a",
                    "event": "Huge",
                    "messageId": big,
                    "properties": {"blob": "y" * 40_000},
                },
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert event_row(db, good) is not None
    assert event_row(db, big) is None
    reasons = [r["reason"] for r in rejected(api) if r["message_id"] == big]
    assert len(reasons) == 1 and "batch[1]" in reasons[0] and "32 KB" in reasons[0]


# ---------------------------------------------------------------------------------------------
# Idempotency by messageId
# ---------------------------------------------------------------------------------------------


def test_known_message_id_mixed_with_a_new_one_is_stored_once(api, db):
    known, new = mid(), mid()
    item = {"type": "track", "anonymousId": "a", "event": "Product Viewed"}
    assert api.segment("track", {**item, "messageId": known}).status_code == 200
    response = api.segment("batch", {"batch": [{**item, "messageId": known}, {**item, "messageId": new}]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Breadcrumb-Duplicates"] == "1"
    assert db.scalar("SELECT count(*) FROM events WHERE message_id = :m", m=known) == 1
    assert db.scalar("SELECT count(*) FROM events") == 2


def test_known_identify_resent_with_new_messages_triggers_nothing_twice(api, db):
    """The resent copy (here with a different email) is dropped before any identity work."""
    known = mid()
    first = {
        "type": "identify",
        "anonymousId": "dev-resend",
        "traits": {"email": "first@example.com"},
        "messageId": known,
    }
    assert api.segment("batch", {"batch": [first]}).status_code == 200
    resent = {**first, "traits": {"email": "second@example.com"}}
    fresh = {"type": "track", "anonymousId": "dev-resend", "event": "Product Viewed", "messageId": mid()}
    response = api.segment("batch", {"batch": [resent, fresh]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Breadcrumb-Duplicates"] == "1"
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 0
    person = api.person(email="first@example.com")
    assert person["emails"] == ["first@example.com"]
    assert [e["name"] for e in person["events"]] == ["Identify", "Product Viewed"]
    assert api.admin("people", email="second@example.com").status_code == 404


def test_duplicate_message_id_across_requests_is_stored_once(api, db):
    message_id = mid()
    body = {"anonymousId": "a", "event": "Product Viewed", "messageId": message_id}
    for _ in range(3):
        assert api.segment("track", body).status_code == 200
    assert api.segment("batch", {"batch": [{**body, "type": "track"}]}).status_code == 200
    assert db.scalar("SELECT count(*) FROM events WHERE message_id = :m", m=message_id) == 1
    assert db.scalar("SELECT count(*) FROM events") == 1


def test_duplicate_message_id_inside_one_batch_is_stored_once(api, db):
    message_id = mid()
    item = {"type": "track", "anonymousId": "a", "event": "Product Viewed", "messageId": message_id}
    response = api.segment("batch", {"batch": [item, {**item, "event": "Something Else"}, item]})
    assert response.status_code == 200, response.text
    rows = db.rows("SELECT name FROM events")
    assert [r.name for r in rows] == ["Product Viewed"]


def test_duplicate_identify_triggers_nothing_twice(api, db):
    """The repeated copy is dropped before identity work: its (different) email is never attached."""
    message_id = mid()
    first = {"anonymousId": "dev-dup", "traits": {"email": "first@example.com"}, "messageId": message_id}
    assert api.segment("identify", first).status_code == 200
    again = {**first, "traits": {"email": "second@example.com"}}
    assert api.segment("identify", again).status_code == 200
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 0
    assert api.person(email="first@example.com")["emails"] == ["first@example.com"]
    assert api.admin("people", email="second@example.com").status_code == 404


# ---------------------------------------------------------------------------------------------
# Clock skew
# ---------------------------------------------------------------------------------------------


def test_clock_skew_is_corrected_with_sent_at(api, db):
    now = datetime.now(UTC)
    device_now = now - timedelta(hours=3)  # the device clock is three hours slow
    message_id = mid()
    response = api.segment(
        "track",
        {
            "anonymousId": "a",
            "event": "X",
            "messageId": message_id,
            "timestamp": iso(device_now - timedelta(minutes=10)),
            "sentAt": iso(device_now),
        },
    )
    assert response.status_code == 200, response.text
    stored = as_utc(event_row(db, message_id).timestamp)
    assert abs(stored - (now - timedelta(minutes=10))) < timedelta(seconds=5), stored


def test_clock_skew_uses_the_batch_sent_at(api, db):
    now = datetime.now(UTC)
    device_now = now + timedelta(days=2)  # fast clock
    ids = [mid(), mid()]
    response = api.segment(
        "batch",
        {
            "sentAt": iso(device_now),
            "batch": [
                {
                    "type": "track",
                    "anonymousId": "a",
                    "event": "X",
                    "messageId": ids[0],
                    "timestamp": iso(device_now - timedelta(seconds=30)),
                },
                {
                    "type": "track",
                    "anonymousId": "a",
                    "event": "Y",
                    "messageId": ids[1],
                    "timestamp": iso(device_now - timedelta(hours=1)),
                },
            ],
        },
    )
    assert response.status_code == 200, response.text
    first, second = (as_utc(event_row(db, i).timestamp) for i in ids)
    assert abs(first - (now - timedelta(seconds=30))) < timedelta(seconds=5), first
    assert abs(second - (now - timedelta(hours=1))) < timedelta(seconds=5), second


def test_timestamp_without_sent_at_is_kept_and_missing_timestamp_is_received_at(api, db):
    kept, defaulted = mid(), mid()
    moment = datetime(2024, 5, 17, 8, 30, tzinfo=UTC)
    assert (
        api.segment(
            "track", {"anonymousId": "a", "event": "X", "messageId": kept, "timestamp": iso(moment)}
        ).status_code
        == 200
    )
    assert api.segment("track", {"anonymousId": "a", "event": "X", "messageId": defaulted}).status_code == 200
    assert as_utc(event_row(db, kept).timestamp) == moment
    assert abs(as_utc(event_row(db, defaulted).timestamp) - datetime.now(UTC)) < timedelta(seconds=10)


def test_timestamp_with_offset_is_stored_as_utc(api, db):
    message_id = mid()
    assert (
        api.segment(
            "track",
            {"anonymousId": "a", "event": "X", "messageId": message_id, "timestamp": "2024-05-17T10:30:00+02:00"},
        ).status_code
        == 200
    )
    assert as_utc(event_row(db, message_id).timestamp) == datetime(2024, 5, 17, 8, 30, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Batch context, mixed batches, strict mode
# ---------------------------------------------------------------------------------------------


def test_batch_context_is_merged_into_each_item(api, db):
    ids = [mid(), mid()]
    response = api.segment(
        "batch",
        {
            "context": {"ip": "203.0.113.7", "locale": "en-GB", "library": {"name": "analytics.js", "version": "5"}},
            "batch": [
                {
                    "type": "track",
                    "anonymousId": "a",
                    "event": "X",
                    "messageId": ids[0],
                    "context": {"page": {"url": "https://shop/p/1"}, "locale": "fr-FR"},
                },
                {"type": "track", "anonymousId": "a", "event": "Y", "messageId": ids[1]},
            ],
        },
    )
    assert response.status_code == 200, response.text
    first, second = (as_json(event_row(db, i).context) for i in ids)
    assert first["ip"] == "203.0.113.7" and first["library"]["name"] == "analytics.js"
    assert first["page"] == {"url": "https://shop/p/1"}
    assert first["locale"] == "fr-FR"  # the item's own context wins
    assert second["ip"] == "203.0.113.7" and second["locale"] == "en-GB"
    assert "page" not in second


MIXED_BATCH = [
    {"type": "track", "anonymousId": "mix", "event": "Product Viewed", "messageId": "ok-1"},
    {"type": "track", "anonymousId": "mix", "messageId": "bad-event"},  # no event name
    {"type": "identify", "traits": {"email": "x@example.com"}, "messageId": "bad-ids"},  # no userId/anonymousId
    {"type": "track", "anonymousId": "mix", "event": "X", "timestamp": "yesterday-ish", "messageId": "bad-ts"},
    {"type": "teleport", "anonymousId": "mix", "messageId": "bad-type"},
    {
        "type": "track",
        "anonymousId": "mix",
        "event": "X",
        "properties": ["not", "an", "object"],
        "messageId": "bad-props",
    },
    "not an object",
    {"type": "page", "anonymousId": "mix", "messageId": "ok-2"},
]


def test_mixed_batch_stores_valid_and_quarantines_invalid_with_reasons(api, db):
    response = api.segment("batch", {"batch": MIXED_BATCH})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    stored = {r.message_id for r in db.rows("SELECT message_id FROM events")}
    assert stored == {"ok-1", "ok-2"}

    quarantined = rejected(api)
    assert len(quarantined) == 6
    by_id = {r["message_id"]: r for r in quarantined}
    assert "event" in by_id["bad-event"]["reason"] and "batch[1]" in by_id["bad-event"]["reason"]
    assert "userId or anonymousId" in by_id["bad-ids"]["reason"]
    assert "timestamp" in by_id["bad-ts"]["reason"]
    assert "type" in by_id["bad-type"]["reason"]
    assert "properties" in by_id["bad-props"]["reason"]
    assert "JSON object" in by_id[None]["reason"] and "batch[6]" in by_id[None]["reason"]
    for row in quarantined:
        assert row["api"] == "segment" and row["endpoint"] == "/v1/batch"
    assert json.loads(by_id["bad-ts"]["payload"])["timestamp"] == "yesterday-ish"


def test_strict_mode_rejects_the_whole_request_and_stores_nothing(api, db):
    response = api.segment("batch", {"batch": MIXED_BATCH}, headers={"X-Strict-Mode": "1"})
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["success"] is False
    errors = payload["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4, 5, 6]
    assert errors[0]["messageId"] == "bad-event" and "event" in errors[0]["error"]
    assert "userId or anonymousId" in errors[1]["error"]
    assert db.scalar("SELECT count(*) FROM events") == 0
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM rejected") == 0


def test_strict_mode_single_call(api, db):
    response = api.segment("track", {"anonymousId": "a", "messageId": mid()}, headers={"X-Strict-Mode": "1"})
    assert response.status_code == 400
    assert "event" in response.json()["errors"][0]["error"]
    assert db.scalar("SELECT count(*) FROM events") == 0
    assert db.scalar("SELECT count(*) FROM rejected") == 0


@pytest.mark.parametrize(
    "traits,problem",
    [
        ({"email": "not-an-email"}, "traits.email 'not-an-email' is not a valid email address"),
        ({"email": "ok@example.com", "phone": "12"}, "traits.phone '12' is not a valid phone number"),
    ],
)
def test_strict_mode_refuses_an_invalid_email_or_phone(api, db, traits, problem):
    """Without strict mode the message is stored without the bad value; with it, the message is
    invalid: 400 naming the problem, nothing stored, nothing quarantined."""
    good = {"type": "track", "anonymousId": "strict-dev", "event": "Product Viewed", "messageId": mid()}
    bad = {"type": "identify", "anonymousId": "strict-dev", "traits": traits, "messageId": mid()}
    response = api.segment("batch", {"batch": [good, bad]}, headers={"X-Strict-Mode": "1"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"index": 1, "messageId": bad["messageId"], "error": problem}]
    tracked = api.segment(
        "track", {**good, "messageId": mid(), "properties": {"email": "not-an-email"}}, headers={"X-Strict-Mode": "1"}
    )
    assert tracked.status_code == 200, "an email on an event that is not an identify moment is just a property"
    assert db.scalar("SELECT count(*) FROM events") == 1
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM rejected") == 0


def test_a_dropped_email_or_phone_counts_as_rejected(api, db):
    """Non-strict: the message is stored without its invalid phone and email, and the one quarantine
    row that says so is counted in X-Breadcrumb-Rejected."""
    message_id = mid()
    response = api.segment(
        "batch",
        {
            "batch": [
                {
                    "type": "identify",
                    "anonymousId": "drop-dev",
                    "userId": "drop-user",
                    "messageId": message_id,
                    "traits": {"email": "nope", "phone": "12"},
                },
                {"type": "track", "anonymousId": "drop-dev", "event": "Product Viewed", "messageId": mid()},
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert (response.headers["X-Breadcrumb-Stored"], response.headers["X-Breadcrumb-Rejected"]) == ("2", "1")
    [row] = rejected(api)
    assert row["message_id"] == message_id
    assert "traits.email" in row["reason"] and "traits.phone" in row["reason"] and "stored without" in row["reason"]
    assert json.loads(row["payload"])["traits"] == {"email": "nope", "phone": "12"}


def test_strict_mode_with_valid_input_stores_it(api, db):
    ids = [mid(), mid()]
    response = api.segment(
        "batch",
        {
            "batch": [
                {"type": "track", "anonymousId": "a", "event": "X", "messageId": ids[0]},
                {
                    "type": "identify",
                    "anonymousId": "a",
                    "traits": {"email": "strict@example.com"},
                    "messageId": ids[1],
                },
            ]
        },
        headers={"X-Strict-Mode": "1"},
    )
    assert response.status_code == 200, response.text
    assert {e["message_id"] for e in api.person(email="strict@example.com")["events"]} == set(ids)


# ---------------------------------------------------------------------------------------------
# Event taxonomy
# ---------------------------------------------------------------------------------------------


def test_segment_ecommerce_names_are_canonicalised_and_original_kept(api, db):
    sent = [
        ("Product Added", "Added to Cart"),
        ("Product List Viewed", "Collection Viewed"),
        ("Product Removed", "Removed from Cart"),
        ("Product Viewed", "Product Viewed"),
        ("Wishlist Opened", "Wishlist Opened"),
    ]
    batch = [
        {
            "type": "track",
            "userId": "shopper-1",
            "event": original,
            "messageId": f"tax-{i}",
            "timestamp": iso(datetime(2024, 1, 1, 12, i, tzinfo=UTC)),
            "properties": {"sku": "S"},
        }
        for i, (original, _) in enumerate(sent)
    ]
    assert api.segment("batch", {"batch": batch}).status_code == 200
    person = api.person(user_id="shopper-1")
    assert [(e["original_name"], e["name"]) for e in person["events"]] == sent
    rows = {
        r.message_id: (r.name, r.original_name) for r in db.rows("SELECT message_id, name, original_name FROM events")
    }
    assert rows["tax-0"] == ("Added to Cart", "Product Added")


def test_missing_recommended_properties_are_counted_not_rejected(api, db):
    message_id = mid()
    assert (
        api.segment(
            "track",
            {
                "anonymousId": "a",
                "event": "Product Added",
                "messageId": message_id,
                "properties": {"sku": "S1", "price": 10},
            },
        ).status_code
        == 200
    )
    missing = as_json(db.scalar("SELECT missing_properties FROM events WHERE message_id = :m", m=message_id))
    assert set(missing) == {"variant", "quantity", "cart_id"}


def test_the_write_key_not_the_body_decides_the_source(api, db):
    """A browser key's events are client events whatever the body claims (library, context.source);
    a server key's are server events unless the body says client."""
    claims = {
        "library": {"context": {"library": {"name": "analytics-python", "version": "2"}}},
        "explicit": {"context": {"source": "server"}},
        "silent": {},
        "client": {"context": {"source": "client"}},
    }
    sources = {}
    for door in ("segment", "server"):
        for claim, extra in claims.items():
            message_id = mid()
            response = getattr(api, door)("track", {"anonymousId": "a", "event": "X", "messageId": message_id, **extra})
            assert response.status_code == 200, response.text
            sources[door, claim] = event_row(db, message_id).source
    assert {claim: sources["segment", claim] for claim in claims} == dict.fromkeys(claims, "client")
    assert {claim: sources["server", claim] for claim in claims} == {
        "library": "server",
        "explicit": "server",
        "silent": "server",
        "client": "client",
    }


def test_admin_token_is_not_a_write_key(http):
    response = http.post("/v1/track", json={"anonymousId": "a", "event": "X"}, auth=(ADMIN_TOKEN, ""))
    assert response.status_code == 401


# ---------------------------------------------------------------------------------------------
# Content-Encoding: gzip (the Segment libraries' gzip=True)
# ---------------------------------------------------------------------------------------------


def _post_gzip(api, data: bytes, encoding: str = "gzip"):
    return api.http.post(
        "/v1/batch",
        content=data,
        auth=(WRITE_KEY, ""),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )


def test_gzip_body_is_accepted(api, db):
    import gzip

    message_id = mid()
    body = {"batch": [{"type": "track", "anonymousId": "gz", "event": "Product Viewed", "messageId": message_id}]}
    response = _post_gzip(api, gzip.compress(json.dumps(body).encode()))
    assert response.status_code == 200, response.text
    assert event_row(db, message_id) is not None


def test_bad_gzip_bodies_are_400(api, db):
    import gzip

    bomb = gzip.compress(b'{"batch": [' + b" " * (5 * 1024 * 1024) + b"]}")  # ~5 KB on the wire, 5 MB inflated
    assert len(bomb) < 500 * 1024
    cases = [
        (bomb, "gzip", "500 KB"),
        (b"definitely not gzip", "gzip", "not valid gzip"),
        (gzip.compress(b'{"batch": []}')[:-12], "gzip", "truncated"),
        (b'{"batch": []}', "br", "not supported"),
    ]
    for data, encoding, needle in cases:
        response = _post_gzip(api, data, encoding)
        assert response.status_code == 400, (needle, response.text)
        assert needle in response.json()["error"], (needle, response.text)
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_openapi_documents_the_bodies_from_their_models(http):
    """/openapi.json shows what the models validate: a batch item is one of the six calls on `type`,
    each call documents its own fields, and the Customer.io bodies theirs."""
    paths = http.get("/openapi.json").json()["paths"]

    def body(path: str, method: str = "post") -> dict:
        return paths[path][method]["requestBody"]["content"]["application/json"]["schema"]

    items = body("/v1/batch")["properties"]["batch"]["items"]["oneOf"]
    assert sorted(item["properties"]["type"]["const"] for item in items) == sorted(
        ["identify", "track", "page", "screen", "alias", "group"]
    )
    assert "$ref" not in json.dumps(paths["/v1/batch"]) and "$defs" not in json.dumps(paths["/v1/batch"])
    track = body("/v1/t")["properties"]
    assert track["event"]["maxLength"] == 255 and "properties" in track and "traits" not in track
    assert "traits" in body("/v1/identify")["properties"] and "previousId" in body("/v1/alias")["properties"]
    assert "anonymous_id" in body("/api/v1/events")["required"]
    assert set(body("/api/v1/merge_customers")["required"]) == {"primary", "secondary"}
    assert body("/api/v1/customers/{customer_id}", "put")["properties"]["anonymous_id"]["maxLength"] == 255


def test_message_aliases_of_the_segment_spec():
    """`originalTimestamp` stands in for a missing `timestamp` (and is ignored beside one), a batch's
    `sentAt` corrects items without their own, numeric ids arrive as strings."""
    from api.segment import parse_message

    received = datetime(2026, 1, 2, tzinfo=UTC)
    day = "2026-01-01T00:00:00Z"
    message = parse_message({"anonymousId": 7, "event": "X", "originalTimestamp": day}, "track", received)
    assert message.timestamp == datetime(2026, 1, 1, tzinfo=UTC) and message.anonymous_id == "7"
    beside = parse_message(
        {"userId": "u", "event": "X", "timestamp": day, "originalTimestamp": "junk"}, "track", received
    )
    assert beside.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    skewed = parse_message(
        {"type": "track", "userId": "u", "event": "X", "timestamp": day},
        None,
        received,
        batch_sent_at="2026-01-01T00:00:10Z",
    )
    assert skewed.timestamp == received - timedelta(seconds=10)
    own = parse_message(
        {"type": "track", "userId": "u", "event": "X", "timestamp": day, "sentAt": None},
        None,
        received,
        batch_sent_at="2026-01-01T00:00:10Z",
    )
    assert own.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
