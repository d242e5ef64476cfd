"""Admin API (DESIGN section 6) over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, UTC

import httpx
from sqlalchemy import insert

from conftest import ADMIN_TOKEN, WRITE_KEY
from store.models import Message

PROFILE_KEYS = {"person_id", "user_id", "emails", "phones", "anonymous_ids", "traits", "events", "journeys", "messages"}
EVENT_KEYS = {"name", "original_name", "anonymous_id", "timestamp", "properties"}
MESSAGE_KEYS = {
    "message_id",
    "person_id",
    "journey",
    "step",
    "channel",
    "recipient",
    "subject",
    "items",
    "status",
    "idempotency_key",
    "created_at",
}


def known_person(api) -> dict:
    response = api.segment(
        "track",
        {
            "anonymousId": "adm-dev",
            "event": "Product Added",
            "messageId": "adm-1",
            "properties": {"sku": "K1", "price": 30},
            "timestamp": "2026-01-01T10:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    response = api.segment(
        "identify",
        {
            "anonymousId": "adm-dev",
            "userId": "adm-user",
            "messageId": "adm-2",
            "traits": {"email": "Admin.Person@Example.com", "phone": "+1 415 555 2671", "first_name": "Ada"},
            "timestamp": "2026-01-01T11:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    return api.person(user_id="adm-user")


def add_message(db, person_id: str, key: str, created_at: datetime, step: int = 1) -> str:
    message_id = str(uuid.uuid4())
    with db.engine.begin() as conn:
        conn.execute(
            insert(Message.__table__).values(
                id=message_id,
                person_id=person_id,
                workflow_id=f"journey-{person_id}",
                journey="cart_recovery",
                step=step,
                template=f"cart_recovery_{step}",
                channel="email",
                recipient="admin.person@example.com",
                subject="You left something behind",
                body="...",
                items=[{"sku": "K1", "title": "Knit"}],
                status="sent",
                idempotency_key=key,
                created_at=created_at,
            )
        )
    return message_id


def test_admin_routes_need_the_bearer_token(api, db):
    person = known_person(api)
    paths = ["people?email=admin.person@example.com", f"people/{person['person_id']}", "messages", "rejected"]
    bad_headers = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Bearer x"},
        {"Authorization": f"Bearer {WRITE_KEY}"},
    ]
    for path in paths:
        for headers in bad_headers:
            response = api.http.get(f"/admin/{path}", headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert "Bearer" in response.json()["detail"]
            assert response.headers.get("www-authenticate") == "Bearer"
        assert api.http.get(f"/admin/{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
        # Scheme names are case-insensitive.
        assert api.http.get(f"/admin/{path}", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}).status_code == 200


def test_people_lookup_by_every_identifier(api, db):
    person = known_person(api)
    assert set(person) >= PROFILE_KEYS
    lookups = [
        {"email": "admin.person@example.com"},
        {"email": " ADMIN.PERSON@example.COM "},
        {"user_id": "adm-user"},
        {"anonymous_id": "adm-dev"},
        {"phone": "+14155552671"},
    ]
    for query in lookups:
        assert api.person(**query) == person, query
    # Phones are looked up the way they are stored (E.164), so other spellings find the person too,
    # including an unencoded "+" in a hand-typed URL (it arrives as a space).
    for spelling in ("(415) 555-2671", "415.555.2671", "+1 415 555 2671"):
        assert api.person(phone=spelling)["person_id"] == person["person_id"], spelling
    raw = api.http.get("/admin/people?phone=+14155552671", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert raw.status_code == 200 and raw.json()["person_id"] == person["person_id"]
    assert api.admin("people", phone="not a phone").status_code == 404

    assert person["user_id"] == "adm-user"
    assert person["emails"] == ["admin.person@example.com"]
    assert person["phones"] == ["+14155552671"]
    assert person["anonymous_ids"] == ["adm-dev"]
    assert person["traits"]["first_name"] == "Ada"
    assert person["journeys"] == [] and person["messages"] == []
    events = person["events"]
    assert all(set(e) >= EVENT_KEYS for e in events)
    assert events[0]["name"] == "Added to Cart" and events[0]["original_name"] == "Product Added"
    assert events[0]["anonymous_id"] == "adm-dev"
    assert events[0]["properties"] == {"sku": "K1", "price": 30}
    assert datetime.fromisoformat(events[0]["timestamp"]) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert [e["name"] for e in events] == ["Added to Cart", "Identify"]


def test_person_by_id_and_404s(api, db):
    person = known_person(api)
    response = api.admin(f"people/{person['person_id']}")
    assert response.status_code == 200
    assert response.json() == person
    for path, query in [
        (f"people/{uuid.uuid4()}", {}),
        ("people/not-a-uuid", {}),
        ("people", {"email": "nobody@example.com"}),
        ("people", {"email": "not-an-email"}),
        ("people", {"user_id": "nobody"}),
        ("people", {"anonymous_id": "nowhere"}),
        ("people", {"phone": "+15555550000"}),
    ]:
        response = api.admin(path, **query)
        assert response.status_code == 404, (path, query, response.text)
        assert response.json()["detail"] == "no such person"


def test_people_lookup_needs_a_query(api, db):
    response = api.admin("people")
    assert response.status_code == 400
    assert "email" in response.json()["detail"]


def test_messages_list_and_filter(api, db):
    person = known_person(api)
    t0 = datetime(2030, 1, 2, 9, tzinfo=UTC)
    second = add_message(db, person["person_id"], "k-2", t0 + timedelta(hours=1), step=2)
    first = add_message(db, person["person_id"], "k-1", t0, step=1)
    other = api.segment("identify", {"userId": "someone-else", "messageId": "adm-3"})
    assert other.status_code == 200
    other_id = api.person(user_id="someone-else")["person_id"]
    add_message(db, other_id, "k-3", t0 + timedelta(hours=2))

    everything = api.admin("messages")
    assert everything.status_code == 200
    assert len(everything.json()) == 3

    mine = api.admin("messages", person_id=person["person_id"]).json()
    assert [m["message_id"] for m in mine] == [first, second]  # oldest first
    assert all(set(m) >= MESSAGE_KEYS for m in mine)
    assert mine[0]["journey"] == "cart_recovery" and mine[0]["step"] == 1 and mine[0]["channel"] == "email"
    assert mine[0]["items"] == [{"sku": "K1", "title": "Knit"}]
    assert mine[0]["idempotency_key"] == "k-1" and mine[0]["status"] == "sent"
    assert datetime.fromisoformat(mine[0]["created_at"]) == t0
    assert api.person(user_id="adm-user")["messages"] == mine

    assert api.admin("messages", person_id=str(uuid.uuid4())).json() == []
    assert api.admin("messages", limit=1).status_code == 200 and len(api.admin("messages", limit=1).json()) == 1
    assert api.admin("messages", limit=0).status_code == 400


def test_rejected_lists_quarantine_newest_first(api, db):
    assert api.admin("rejected").json() == []
    response = api.segment(
        "batch",
        {
            "batch": [
                {"type": "track", "anonymousId": "r", "messageId": "rej-1"},
                {"type": "track", "anonymousId": "r", "event": "X", "messageId": "rej-ok"},
                {"type": "track", "event": "X", "messageId": "rej-2"},
            ]
        },
    )
    assert response.status_code == 200
    rows = api.admin("rejected").json()
    assert [r["message_id"] for r in rows] == ["rej-2", "rej-1"]
    assert set(rows[0]) >= {"received_at", "api", "endpoint", "message_id", "reason", "payload"}
    assert rows[0]["reason"] == "batch[2]: userId or anonymousId is required"
    assert rows[1]["reason"] == "batch[0]: event is required for track calls"
    page = api.admin("rejected", limit=1, offset=1).json()
    assert [r["message_id"] for r in page] == ["rej-1"]


def test_healthz_needs_no_auth(served):
    response = httpx.get(f"{served.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_is_prometheus_text(served):
    response = httpx.get(f"{served.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# HELP" in response.text and "# TYPE" in response.text
