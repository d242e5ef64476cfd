"""Customer.io Track API v1 (`/api/v1/*`) over real HTTP, on SQLite and PostgreSQL (DESIGN sections 3 and 4)."""

from __future__ import annotations

import uuid
from datetime import datetime, UTC

from sqlalchemy import insert

from conftest import CIO_KEY, CIO_SITE
from store.models import Message, utcnow


def as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def assert_cio_error(response, status: int, needle: str = "") -> list[str]:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"meta"}, payload
    errors = payload["meta"]["errors"]
    assert isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors), payload
    assert any(needle in e for e in errors), (needle, errors)
    return errors


def ok(response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {}


def add_message(db, person_id: str, key: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            insert(Message.__table__).values(
                id=str(uuid.uuid4()),
                person_id=person_id,
                workflow_id=f"wf-{key}",
                journey="welcome",
                step=1,
                template="welcome_1",
                channel="email",
                recipient="x@example.com",
                subject="Hi",
                body="Hello",
                items=[],
                status="sent",
                idempotency_key=key,
                created_at=utcnow(),
            )
        )


# ---------------------------------------------------------------------------------------------
# Identify
# ---------------------------------------------------------------------------------------------


def test_anonymous_events_then_identify_merges_them(api, db):
    ok(
        api.cio(
            "POST",
            "events",
            {"anonymous_id": "cio-anon-1", "name": "Product Viewed", "data": {"sku": "A1"}, "id": "e-1"},
        )
    )
    ok(
        api.cio(
            "POST",
            "events",
            {"anonymous_id": "cio-anon-1", "name": "Product Added", "data": {"sku": "A1", "cart_id": "c1"}},
        )
    )
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 2

    ok(
        api.cio(
            "PUT",
            "customers/cust-1",
            {"email": "  Bo@Example.COM ", "anonymous_id": "cio-anon-1", "first_name": "Bo", "created_at": 1700000000},
        )
    )
    person = api.person(user_id="cust-1")
    assert person["user_id"] == "cust-1"
    assert person["emails"] == ["bo@example.com"]
    assert person["anonymous_ids"] == ["cio-anon-1"]
    assert person["traits"]["first_name"] == "Bo"
    assert "anonymous_id" not in person["traits"]
    names = [(e["name"], e["original_name"]) for e in person["events"]]
    assert names[:2] == [("Product Viewed", "Product Viewed"), ("Added to Cart", "Product Added")]
    assert names[2] == ("Identify", "Identify")
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0
    assert api.person(email="BO@example.com")["person_id"] == person["person_id"]
    assert api.person(anonymous_id="cio-anon-1")["person_id"] == person["person_id"]


def test_identify_again_updates_traits_and_keeps_one_person(api, db):
    ok(api.cio("PUT", "customers/cust-2", {"email": "two@example.com", "plan": "basic"}))
    ok(api.cio("PUT", "customers/cust-2", {"plan": "pro", "city": "Leeds"}))
    assert db.scalar("SELECT count(*) FROM people") == 1
    person = api.person(user_id="cust-2")
    assert person["traits"]["plan"] == "pro" and person["traits"]["city"] == "Leeds"
    assert person["emails"] == ["two@example.com"]


def test_customer_id_may_be_an_email(api, db):
    ok(api.cio("PUT", "customers/Path.Person@Example.com", {"first_name": "Pat"}))
    person = api.person(email="path.person@example.com")
    assert person["user_id"] is None
    assert person["traits"]["first_name"] == "Pat"
    ok(api.cio("POST", "customers/path.person@example.com/events", {"name": "Order Completed", "data": {"value": 30}}))
    assert [e["name"] for e in api.person(email="path.person@example.com")["events"]][-1] == "Order Completed"
    assert db.scalar("SELECT count(*) FROM people") == 1


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def test_customer_event_with_id_timestamp_and_alias_name(api, db):
    ok(api.cio("PUT", "customers/cust-3", {"email": "three@example.com"}))
    ok(
        api.cio(
            "POST",
            "customers/cust-3/events",
            {
                "name": "Product Added",
                "id": "cio-evt-1",
                "timestamp": 1714000000,
                "data": {"sku": "S9", "price": 12.5, "cart_id": "cart-3"},
            },
        )
    )
    person = api.person(user_id="cust-3")
    added = [e for e in person["events"] if e["message_id"] == "cio-evt-1"]
    assert len(added) == 1
    assert added[0]["name"] == "Added to Cart" and added[0]["original_name"] == "Product Added"
    assert added[0]["properties"] == {"sku": "S9", "price": 12.5, "cart_id": "cart-3"}
    assert datetime.fromisoformat(added[0]["timestamp"]) == datetime.fromtimestamp(1714000000, tz=UTC)
    assert added[0]["source"] == "server"
    assert db.scalar("SELECT cart_id FROM events WHERE message_id = 'cio-evt-1'") == "cart-3"


def test_event_for_an_unknown_customer_creates_them(api, db):
    ok(api.cio("POST", "customers/new-cust/events", {"name": "Account Created"}))
    person = api.person(user_id="new-cust")
    assert [e["name"] for e in person["events"]] == ["Account Created"]


def test_page_and_screen_event_types(api, db):
    ok(api.cio("POST", "customers/cust-4/events", {"name": "/collections/shoes", "type": "page", "data": {"x": 1}}))
    ok(api.cio("POST", "customers/cust-4/events", {"name": "Cart", "type": "screen"}))
    events = api.person(user_id="cust-4")["events"]
    assert [(e["type"], e["name"]) for e in events] == [("page", "Page Viewed"), ("screen", "Screen Viewed")]
    assert events[0]["properties"] == {"x": 1, "name": "/collections/shoes"}


def test_event_id_is_the_idempotency_key_within_a_request_stream(api, db):
    """A retried event with the same id alongside new ones is stored once."""
    ok(api.cio("POST", "customers/cust-5/events", {"name": "Product Viewed", "id": "dup-1"}))
    ok(api.cio("POST", "customers/cust-5/events", {"name": "Product Viewed", "id": "other-1"}))
    assert db.scalar("SELECT count(*) FROM events WHERE message_id = 'dup-1'") == 1
    assert db.scalar("SELECT count(*) FROM events") == 2


def test_retried_event_id_is_accepted_and_stored_once(api, db):
    body = {"name": "Product Viewed", "id": "retry-1", "data": {"sku": "R"}}
    ok(api.cio("POST", "customers/cust-r/events", body))
    ok(api.cio("POST", "customers/cust-r/events", body))
    ok(api.cio("POST", "events", {**body, "anonymous_id": "retry-dev"}))
    assert db.scalar("SELECT count(*) FROM events WHERE message_id = 'retry-1'") == 1


def test_late_anonymous_event_after_identify_attaches_at_once(api, db):
    ok(api.cio("PUT", "customers/cust-6", {"anonymous_id": "cio-late"}))
    ok(api.cio("POST", "events", {"anonymous_id": "cio-late", "name": "Product Viewed", "data": {"sku": "L"}}))
    person = api.person(user_id="cust-6")
    assert "Product Viewed" in [e["name"] for e in person["events"]]
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0


# ---------------------------------------------------------------------------------------------
# merge_customers
# ---------------------------------------------------------------------------------------------


def _two_customers(api):
    ok(api.cio("PUT", "customers/primary-1", {"email": "primary@example.com", "tier": "gold", "city": "York"}))
    ok(api.cio("POST", "customers/primary-1/events", {"name": "Product Viewed", "id": "p-ev"}))
    ok(
        api.cio(
            "PUT",
            "customers/secondary-1",
            {"email": "secondary@example.com", "tier": "silver", "pet": "cat", "anonymous_id": "sec-device"},
        )
    )
    ok(api.cio("POST", "customers/secondary-1/events", {"name": "Product Added", "id": "s-ev"}))
    return api.person(user_id="primary-1")["person_id"], api.person(user_id="secondary-1")["person_id"]


def _assert_merged(api, db, primary_id: str, secondary_id: str) -> None:
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT id FROM people") == primary_id
    person = api.person(user_id="secondary-1")
    assert person["person_id"] == primary_id
    assert sorted(person["user_ids"]) == ["primary-1", "secondary-1"]
    assert sorted(person["emails"]) == ["primary@example.com", "secondary@example.com"]
    assert person["anonymous_ids"] == ["sec-device"]
    assert {"p-ev", "s-ev"} <= {e["message_id"] for e in person["events"]}
    assert person["traits"]["tier"] == "gold"  # the primary's traits win
    assert person["traits"]["pet"] == "cat"  # the secondary's others are kept
    assert api.admin(f"people/{secondary_id}").status_code == 404
    assert db.scalar("SELECT count(*) FROM identifiers WHERE person_id = :p", p=secondary_id) == 0
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=secondary_id) == 0
    assert db.scalar("SELECT count(*) FROM messages WHERE person_id = :p", p=secondary_id) == 0
    assert db.scalar("SELECT count(*) FROM messages WHERE person_id = :p", p=primary_id) == 1


def test_merge_customers_by_id(api, db):
    primary_id, secondary_id = _two_customers(api)
    add_message(db, secondary_id, "merge-by-id")
    ok(api.cio("POST", "merge_customers", {"primary": {"id": "primary-1"}, "secondary": {"id": "secondary-1"}}))
    _assert_merged(api, db, primary_id, secondary_id)
    # A later anonymous event from the secondary's device lands on the primary.
    ok(api.cio("POST", "events", {"anonymous_id": "sec-device", "name": "Checkout Started"}))
    assert "Checkout Started" in [e["name"] for e in api.person(user_id="primary-1")["events"]]


def test_merge_customers_by_email(api, db):
    primary_id, secondary_id = _two_customers(api)
    add_message(db, secondary_id, "merge-by-email")
    ok(
        api.cio(
            "POST",
            "merge_customers",
            {"primary": {"email": "PRIMARY@example.com"}, "secondary": {"email": "secondary@example.com"}},
        )
    )
    _assert_merged(api, db, primary_id, secondary_id)


def test_merge_into_an_unknown_primary_gives_the_secondary_its_identifier(api, db):
    ok(api.cio("PUT", "customers/old-id", {"email": "keep@example.com"}))
    person_id = api.person(user_id="old-id")["person_id"]
    ok(api.cio("POST", "merge_customers", {"primary": {"id": "brand-new-id"}, "secondary": {"id": "old-id"}}))
    assert api.person(user_id="brand-new-id")["person_id"] == person_id
    assert db.scalar("SELECT count(*) FROM people") == 1


def test_merge_customers_rejects_bad_references(api, db):
    ok(api.cio("PUT", "customers/only", {}))
    assert_cio_error(api.cio("POST", "merge_customers", {"primary": "only", "secondary": {"id": "x"}}), 400, "primary")
    assert_cio_error(
        api.cio("POST", "merge_customers", {"primary": {"id": "only"}, "secondary": {"name": "x"}}), 400, "id or email"
    )
    assert_cio_error(
        api.cio("POST", "merge_customers", {"primary": {"email": "not-an-email"}, "secondary": {"id": "only"}}), 400
    )
    assert db.scalar("SELECT count(*) FROM people") == 1


# ---------------------------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------------------------


def test_delete_removes_the_person_and_all_their_data(api, db):
    ok(api.cio("POST", "events", {"anonymous_id": "del-device", "name": "Product Viewed"}))
    ok(api.cio("PUT", "customers/doomed", {"email": "doomed@example.com", "anonymous_id": "del-device"}))
    ok(api.cio("POST", "customers/doomed/events", {"name": "Product Added"}))
    ok(api.cio("PUT", "customers/bystander", {"email": "bystander@example.com"}))
    ok(api.cio("POST", "customers/bystander/events", {"name": "Product Viewed"}))
    doomed = api.person(user_id="doomed")["person_id"]
    bystander = api.person(user_id="bystander")["person_id"]
    add_message(db, doomed, "doomed-1")
    add_message(db, bystander, "bystander-1")
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=doomed) == 3

    ok(api.cio("DELETE", "customers/doomed"))
    assert api.admin("people", user_id="doomed").status_code == 404
    assert api.admin("people", email="doomed@example.com").status_code == 404
    assert api.admin("people", anonymous_id="del-device").status_code == 404
    assert api.admin(f"people/{doomed}").status_code == 404
    assert db.scalar("SELECT count(*) FROM people WHERE id = :p", p=doomed) == 0
    assert db.scalar("SELECT count(*) FROM identifiers WHERE person_id = :p", p=doomed) == 0
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=doomed) == 0
    assert db.scalar("SELECT count(*) FROM events WHERE anonymous_id = 'del-device' OR user_id = 'doomed'") == 0
    assert db.scalar("SELECT count(*) FROM messages WHERE person_id = :p", p=doomed) == 0
    # Nobody else is touched.
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=bystander) == 2
    assert db.scalar("SELECT count(*) FROM messages WHERE person_id = :p", p=bystander) == 1
    # Deleting again (or someone unknown) is fine.
    ok(api.cio("DELETE", "customers/doomed"))
    ok(api.cio("DELETE", "customers/never-existed"))


def test_delete_leaves_nothing_about_them_behind(api, db):
    """Events of their device from outside the merge window (never attached), quarantined input that
    names them, and queued hub signals go too; only the `erased` signal that ends their hub stays.
    Quarantine rows about other people, with look-alike identifiers, are kept."""
    long_ago = int(datetime.now(UTC).timestamp()) - 40 * 86400
    ok(api.cio("POST", "events", {"anonymous_id": "gone-device", "name": "Product Viewed", "timestamp": long_ago}))
    ok(api.cio("PUT", "customers/gone", {"email": "gone@example.com", "anonymous_id": "gone-device"}))
    person_id = api.person(user_id="gone")["person_id"]
    assert db.scalar("SELECT count(*) FROM events WHERE anonymous_id = 'gone-device' AND person_id IS NULL") == 1
    bad_timestamp = {"type": "track", "event": "X", "timestamp": "yesterday-ish"}
    assert (
        api.segment(
            "batch",
            {
                "batch": [
                    {**bad_timestamp, "anonymousId": "gone-device", "messageId": "q-device"},
                    {
                        "type": "identify",
                        "traits": {"email": "GONE@example.com"},
                        "messageId": "q-email",
                    },  # names nobody else
                    {**bad_timestamp, "userId": "gone", "messageId": "q-user"},
                    {**bad_timestamp, "anonymousId": "gone-device-2", "messageId": "q-other-device"},
                    {"type": "identify", "traits": {"email": "not.gone@example.com"}, "messageId": "q-other-email"},
                    {**bad_timestamp, "userId": "Gone", "messageId": "q-other-user"},
                    {**bad_timestamp, "userId": "someone", "properties": {"sku": "gone"}, "messageId": "q-look-alike"},
                ]
            },
        ).headers["X-Breadcrumb-Rejected"]
        == "7"
    )
    assert (
        api.segment("identify", {"userId": "gone", "messageId": "q-phone", "traits": {"phone": "12"}}).status_code
        == 200
    )
    assert_cio_error(api.cio("POST", "customers/gone/events", {"data": {}}), 400, "name is required")
    assert_cio_error(api.cio("POST", "customers/gone-2/events", {"data": {}}), 400, "name is required")
    assert db.scalar("SELECT count(*) FROM rejected") == 10
    assert db.scalar("SELECT count(*) FROM outbox WHERE person_id = :p", p=person_id) >= 1

    ok(api.cio("DELETE", "customers/gone"))
    assert db.scalar("SELECT count(*) FROM events") == 0
    kept = db.rows("SELECT message_id, endpoint FROM rejected ORDER BY id")
    assert [tuple(row) for row in kept] == [
        ("q-other-device", "/v1/batch"),
        ("q-other-email", "/v1/batch"),
        ("q-other-user", "/v1/batch"),
        ("q-look-alike", "/v1/batch"),
        (None, "/api/v1/customers/gone-2/events"),
    ]
    assert [tuple(r) for r in db.rows("SELECT kind, person_id FROM outbox")] == [("erased", person_id)]


def test_delete_by_email(api, db):
    ok(api.cio("PUT", "customers/by-mail", {"email": "bymail@example.com"}))
    ok(api.cio("DELETE", "customers/ByMail@example.com"))
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM identifiers") == 0
    assert db.scalar("SELECT count(*) FROM events") == 0


# ---------------------------------------------------------------------------------------------
# Suppression
# ---------------------------------------------------------------------------------------------


def test_suppress_and_unsuppress(api, db):
    ok(api.cio("PUT", "customers/quiet", {"email": "quiet@example.com"}))
    assert api.person(user_id="quiet")["suppressed"] is False
    ok(api.cio("POST", "customers/quiet/suppress"))
    assert api.person(user_id="quiet")["suppressed"] is True
    ok(api.cio("PUT", "customers/quiet", {"plan": "pro"}))  # a later identify does not lift it
    assert api.person(user_id="quiet")["suppressed"] is True
    ok(api.cio("POST", "customers/quiet/unsuppress"))
    assert api.person(user_id="quiet")["suppressed"] is False
    assert db.scalar("SELECT count(*) FROM people") == 1


def test_suppressing_someone_not_yet_known_holds_when_they_arrive(api, db):
    ok(api.cio("POST", "customers/future@example.com/suppress"))
    ok(api.cio("PUT", "customers/future-1", {"email": "Future@example.com"}))
    person = api.person(user_id="future-1")
    assert person["suppressed"] is True
    assert person["emails"] == ["future@example.com"]
    assert db.scalar("SELECT count(*) FROM people") == 1
    ok(api.cio("POST", "customers/nobody/unsuppress"))  # unsuppressing a stranger creates nobody
    assert db.scalar("SELECT count(*) FROM people") == 1


# ---------------------------------------------------------------------------------------------
# Auth and invalid bodies
# ---------------------------------------------------------------------------------------------


def test_wrong_auth_is_401_in_customerio_shape(api, db):
    calls = [
        ("PUT", "customers/x", {"email": "x@example.com"}),
        ("POST", "customers/x/events", {"name": "X"}),
        ("POST", "events", {"anonymous_id": "a", "name": "X"}),
        ("POST", "merge_customers", {"primary": {"id": "a"}, "secondary": {"id": "b"}}),
        ("DELETE", "customers/x", None),
        ("POST", "customers/x/suppress", None),
        ("POST", "customers/x/unsuppress", None),
    ]
    credentials = [(CIO_SITE, "wrong-key"), ("wrong-site", CIO_KEY), ("", ""), (CIO_KEY, CIO_SITE)]
    for method, path, body in calls:
        for auth in credentials:
            assert_cio_error(api.cio(method, path, body, auth=auth), 401, "unauthorized")
        missing = api.http.request(method, f"/api/v1/{path}", json=body)
        assert_cio_error(missing, 401, "unauthorized")
        bearer = api.http.request(method, f"/api/v1/{path}", json=body, headers={"Authorization": f"Bearer {CIO_KEY}"})
        assert_cio_error(bearer, 401, "unauthorized")
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_invalid_bodies_are_400_in_customerio_shape_and_quarantined(api, db):
    def raw(method, path, content):
        return api.http.request(
            method,
            f"/api/v1/{path}",
            content=content,
            auth=(CIO_SITE, CIO_KEY),
            headers={"Content-Type": "application/json"},
        )

    assert_cio_error(raw("PUT", "customers/x", b"{not json"), 400, "not valid JSON")
    assert_cio_error(raw("POST", "events", b""), 400, "empty")
    assert_cio_error(api.cio("PUT", "customers/x", ["a", "list"]), 400, "JSON object")
    assert_cio_error(api.cio("POST", "customers/x/events", {"data": {}}), 400, "name is required")
    assert_cio_error(
        api.cio("POST", "customers/x/events", {"name": "X", "data": [1, 2]}), 400, "data must be an object"
    )
    assert_cio_error(api.cio("POST", "customers/x/events", {"name": "X", "timestamp": "yesterday"}), 400, "timestamp")
    assert_cio_error(api.cio("POST", "customers/x/events", {"name": "X", "type": "teleport"}), 400, "type")
    assert_cio_error(api.cio("POST", "events", {"name": "X"}), 400, "anonymous_id is required")
    assert_cio_error(api.cio("PUT", "customers/x", {"anonymous_id": 42}), 400, "anonymous_id")
    assert_cio_error(api.cio("PUT", "customers/" + "y" * 300, {}), 400, "customer_id")
    assert_cio_error(raw("POST", "merge_customers", b"[1"), 400, "not valid JSON")
    big = {"name": "X", "data": {"blob": "z" * (510 * 1024)}}
    assert_cio_error(api.cio("POST", "customers/x/events", big), 400, "500 KB")

    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM events") == 0
    reasons = [r["reason"] for r in api.admin("rejected").json() if r["api"] == "customerio"]
    assert any("name is required" in r for r in reasons)
    assert any("anonymous_id is required" in r for r in reasons)
    assert any("data must be an object" in r for r in reasons)


def test_merge_keeps_sms_consent_that_came_with_the_secondarys_phone(api, db):
    ok(api.cio("PUT", "customers/consented", {"phone": "+14155552671", "sms_consent": True}))
    ok(api.cio("PUT", "customers/primary-x", {"email": "px@example.com"}))
    ok(api.cio("POST", "merge_customers", {"primary": {"id": "primary-x"}, "secondary": {"id": "consented"}}))
    person = api.person(user_id="primary-x")
    assert person["phones"] == ["+14155552671"] and person["sms_consent"] is True


def test_unknown_paths_and_methods_answer_in_customerio_shape(api, db):
    missing = api.cio("POST", "teleport", {"x": 1})
    assert_cio_error(missing, 404, "/api/v1/teleport is not a Customer.io Track API endpoint")
    assert_cio_error(api.cio("GET", "customers/x/devices"), 404, "not a Customer.io Track API endpoint")
    wrong_method = api.cio("GET", "customers/x")
    assert_cio_error(wrong_method, 405, "GET is not allowed on /api/v1/customers/x; use DELETE or PUT")
    assert wrong_method.headers["allow"] == "DELETE, PUT"
    assert_cio_error(api.cio("GET", "merge_customers"), 405, "use POST")
    assert_cio_error(api.http.post("/api/v1/teleport"), 401, "unauthorized")  # no credentials: nothing revealed
