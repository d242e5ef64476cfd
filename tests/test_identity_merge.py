"""Identity merge over real HTTP, on SQLite and PostgreSQL (DESIGN section 4)."""

from __future__ import annotations

import ssl
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, UTC

import httpx
import pytest

from conftest import WRITE_KEY, Api, ServedApp, settings_for
from journeys.policy import parse_policy


def mid() -> str:
    return f"m-{uuid.uuid4().hex}"


# Advisory locks waited for in this test's database only: other suites may share the server.
WAITING_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


# The names of the advisory locks waited for, among :s and :p (None for any other): pg_locks shows a
# lock's 64-bit key as two 32-bit halves.
WAITED_FOR = (
    "SELECT n.name FROM pg_locks l LEFT JOIN (VALUES (:s), (:p)) AS n(name) "
    "ON ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(n.name, 0) "
    "WHERE l.locktype = 'advisory' AND NOT l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ago(**delta) -> str:
    return iso(datetime.now(UTC) - timedelta(**delta))


def send(api, path: str, body: dict, server: bool = False) -> None:
    """Through the browser key, or the server key where the call does what only the shop's server may
    (change consent, add an identifier to a known person, merge people)."""
    response = (api.server if server else api.segment)(path, {"messageId": mid(), **body})
    assert response.status_code == 200, response.text
    assert response.headers["X-Breadcrumb-Rejected"] == "0", response.headers


def track(api, anon: str, event: str, **body) -> None:
    send(api, "track", {"anonymousId": anon, "event": event, **body})


def person_of(db, message_id: str):
    return db.scalar("SELECT person_id FROM events WHERE message_id = :m", m=message_id)


# ---------------------------------------------------------------------------------------------
# Devices, late events, merge window
# ---------------------------------------------------------------------------------------------


def test_several_devices_merge_into_one_person(api, db):
    track(api, "phone-1", "Product Viewed", properties={"sku": "P"}, timestamp=ago(hours=5))
    track(api, "laptop-1", "Collection Viewed", properties={"category": "shoes"}, timestamp=ago(hours=4))
    track(api, "tablet-1", "Product Added", properties={"sku": "P"}, timestamp=ago(hours=3))
    send(
        api, "identify", {"anonymousId": "phone-1", "traits": {"email": "multi@example.com"}, "timestamp": ago(hours=2)}
    )
    send(
        api,
        "identify",
        {
            "anonymousId": "laptop-1",
            "userId": "multi-user",
            "traits": {"email": "Multi@Example.com"},
            "timestamp": ago(hours=1),
        },
        server=True,
    )  # the account's id joins a known person
    send(api, "identify", {"anonymousId": "tablet-1", "userId": "multi-user", "timestamp": ago(minutes=30)})

    assert db.scalar("SELECT count(*) FROM people") == 1
    person = api.person(email="multi@example.com")
    assert sorted(person["anonymous_ids"]) == ["laptop-1", "phone-1", "tablet-1"]
    assert person["user_id"] == "multi-user"
    assert person["emails"] == ["multi@example.com"]
    assert [e["name"] for e in person["events"]] == [
        "Product Viewed",
        "Collection Viewed",
        "Added to Cart",
        "Identify",
        "Identify",
        "Identify",
    ]
    assert {e["anonymous_id"] for e in person["events"]} == {"phone-1", "laptop-1", "tablet-1"}
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0
    for anon in ("phone-1", "laptop-1", "tablet-1"):
        assert api.person(anonymous_id=anon)["person_id"] == person["person_id"]
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 0


def test_late_anonymous_events_attach_at_once(api, db):
    send(api, "identify", {"anonymousId": "late-dev", "traits": {"email": "late@example.com"}})
    person_id = api.person(email="late@example.com")["person_id"]
    late = mid()
    send(
        api,
        "track",
        {"anonymousId": "late-dev", "event": "Product Viewed", "messageId": late, "timestamp": ago(minutes=5)},
    )  # a late flush, stamped before the identify
    assert person_of(db, late) == person_id
    page = mid()
    send(api, "page", {"anonymousId": "late-dev", "messageId": page})
    assert person_of(db, page) == person_id
    batch = [mid(), mid()]
    response = api.segment(
        "batch",
        {
            "batch": [
                {"type": "track", "anonymousId": "late-dev", "event": "Product Added", "messageId": batch[0]},
                {"type": "track", "anonymousId": "late-dev", "event": "Checkout Started", "messageId": batch[1]},
            ]
        },
    )
    assert response.status_code == 200
    assert [person_of(db, m) for m in batch] == [person_id, person_id]
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0


def test_identify_in_the_middle_of_a_batch_takes_the_whole_device(api, db):
    ids = [mid(), mid(), mid()]
    response = api.segment(
        "batch",
        {
            "batch": [
                {
                    "type": "track",
                    "anonymousId": "batch-dev",
                    "event": "Product Viewed",
                    "messageId": ids[0],
                    "timestamp": ago(minutes=3),
                },
                {
                    "type": "identify",
                    "anonymousId": "batch-dev",
                    "traits": {"email": "inbatch@example.com"},
                    "messageId": ids[1],
                    "timestamp": ago(minutes=2),
                },
                {
                    "type": "track",
                    "anonymousId": "batch-dev",
                    "event": "Product Added",
                    "messageId": ids[2],
                    "timestamp": ago(minutes=1),
                },
            ]
        },
    )
    assert response.status_code == 200, response.text
    person = api.person(email="inbatch@example.com")
    assert [e["message_id"] for e in person["events"]] == ids


def test_moments_of_one_request_take_events_in_the_order_they_happened(api, db):
    """A request's identify moments write together (one UPDATE), yet each event ends where the moments
    one after another would put it: the device's history goes to the first moment that claims it,
    and each moment's own row is its person's, even where an earlier moment took the device (a
    second person on a shared device: her identify was stored unowned, like the history)."""
    run = uuid.uuid4().hex[:8]
    shared, viewed, mine, hers = f"shared-{run}", mid(), mid(), mid()
    batch = [
        {"type": "track", "anonymousId": shared, "event": "Product Viewed", "messageId": viewed},
        {"type": "identify", "anonymousId": shared, "traits": {"email": f"first-{run}@example.com"}, "messageId": mine},
        {
            "type": "identify",
            "anonymousId": shared,
            "traits": {"email": f"second-{run}@example.com"},
            "messageId": hers,
        },
    ]
    assert api.segment("batch", {"batch": batch}).status_code == 200
    first = api.person(email=f"first-{run}@example.com")["person_id"]
    second = api.person(email=f"second-{run}@example.com")["person_id"]
    assert first != second
    assert [person_of(db, m) for m in (viewed, mine, hers)] == [first, first, second]
    assert db.scalar("SELECT count(*) FROM identity_conflicts WHERE anonymous_id = :d", d=shared) == 1


def test_merge_window(api, db):
    old, recent = mid(), mid()
    send(
        api,
        "track",
        {"anonymousId": "window-dev", "event": "Product Viewed", "messageId": old, "timestamp": ago(days=40)},
    )
    send(
        api,
        "track",
        {"anonymousId": "window-dev", "event": "Product Viewed", "messageId": recent, "timestamp": ago(days=2)},
    )
    send(api, "identify", {"anonymousId": "window-dev", "traits": {"email": "window@example.com"}})
    person = api.person(email="window@example.com")
    merged = {e["message_id"] for e in person["events"]}
    assert recent in merged
    assert old not in merged
    assert person_of(db, old) is None
    assert person_of(db, recent) == person["person_id"]


def test_merge_window_counts_back_from_the_identify_moment(api, db):
    """An identify stamped 20 days ago merges an event from 45 days ago (25 days before it)."""
    early = mid()
    send(
        api,
        "track",
        {"anonymousId": "window-2", "event": "Product Viewed", "messageId": early, "timestamp": ago(days=45)},
    )
    send(api, "identify", {"anonymousId": "window-2", "userId": "w2", "timestamp": ago(days=20)})
    assert person_of(db, early) == api.person(user_id="w2")["person_id"]


@pytest.fixture
def shop_api(db):
    """The app serving a shop whose policy differs from the defaults: its own identify moment
    (`Newsletter Joined`, not `Email Captured`) and a 2-day merge window."""
    settings = settings_for(db.url)
    settings.__dict__["policy"] = parse_policy({"identify_events": ["Newsletter Joined"], "merge_window": "2d"})
    with ServedApp(settings) as served:
        client = Api(served.url)
        yield client
        client.http.close()


def test_identify_events_and_merge_window_come_from_the_policy(shop_api, db):
    old, recent = mid(), mid()
    track(shop_api, "policy-dev", "Product Viewed", messageId=old, timestamp=ago(days=3))
    track(shop_api, "policy-dev", "Product Viewed", messageId=recent, timestamp=ago(days=1))
    track(shop_api, "policy-dev", "Email Captured", properties={"email": "policy@example.com"})
    assert db.scalar("SELECT count(*) FROM people") == 0  # not an identify moment for this shop
    track(shop_api, "policy-dev", "Newsletter Joined", properties={"email": "policy@example.com"})
    person = shop_api.person(email="policy@example.com")
    assert person_of(db, recent) == person["person_id"]
    assert person_of(db, old) is None  # three days back is outside this shop's two-day window


# ---------------------------------------------------------------------------------------------
# Identify moments from track events
# ---------------------------------------------------------------------------------------------


def test_email_captured_event_identifies(api, db):
    browse = mid()
    send(api, "track", {"anonymousId": "popup-dev", "event": "Product Viewed", "messageId": browse})
    send(
        api,
        "track",
        {
            "anonymousId": "popup-dev",
            "event": "Email Captured",
            "properties": {"email": "  Popup@Example.COM ", "form": "10% off"},
        },
    )
    person = api.person(email="popup@example.com")
    assert person["emails"] == ["popup@example.com"]
    assert person["anonymous_ids"] == ["popup-dev"]
    assert [e["name"] for e in person["events"]] == ["Product Viewed", "Email Captured"]
    assert person_of(db, browse) == person["person_id"]


def test_checkout_started_with_email_identifies(api, db):
    cart = mid()
    send(
        api,
        "track",
        {
            "anonymousId": "co-dev",
            "event": "Product Added",
            "messageId": cart,
            "properties": {"sku": "S", "cart_id": "cart-co"},
        },
    )
    send(
        api,
        "track",
        {
            "anonymousId": "co-dev",
            "event": "Checkout Started",
            "properties": {"email": "checkout@example.com", "cart_id": "cart-co", "value": 80},
        },
    )
    person = api.person(email="checkout@example.com")
    assert [e["name"] for e in person["events"]] == ["Added to Cart", "Checkout Started"]
    assert person_of(db, cart) == person["person_id"]


def test_sms_captured_with_phone_identifies(api, db):
    send(api, "track", {"anonymousId": "sms-dev", "event": "Product Viewed"})
    send(api, "track", {"anonymousId": "sms-dev", "event": "SMS Captured", "properties": {"phone": "+44 7911 123456"}})
    person = api.person(phone="+447911123456")
    assert person["phones"] == ["+447911123456"]
    assert len(person["events"]) == 2


def test_identify_moment_events_carry_contact_details(api, db):
    """SMS Captured / Email Captured identify from their properties, and the contact details they
    carry (consent, unsubscribe, timezone) land on the person as an identify's traits would."""
    send(
        api,
        "track",
        {
            "anonymousId": "consent-dev",
            "event": "SMS Captured",
            "properties": {
                "phone": "+44 7911 123457",
                "sms_consent": True,
                "timezone": "Europe/London",
                "form": "checkout",
            },
        },
        server=True,
    )
    person = api.person(phone="+447911123457")
    assert person["sms_consent"] is True
    assert person["timezone"] == "Europe/London"
    assert person["traits"] == {"phone": "+447911123457", "sms_consent": True}  # the form is the event's, not theirs
    send(
        api,
        "track",
        {
            "anonymousId": "consent-dev",
            "event": "Email Captured",
            "properties": {"email": "consent@example.com", "unsubscribed": True, "sms_consent": False},
        },
        server=True,
    )
    person = api.person(email="consent@example.com")
    assert person["phones"] == ["+447911123457"]
    assert (person["email_unsubscribed"], person["sms_consent"]) == (True, False)


def test_traits_sent_for_a_known_device_alone_go_to_its_owner(api, db):
    """An identify with only anonymousId and traits names nobody new: it describes the device's owner."""
    send(api, "identify", {"anonymousId": "owned-dev", "traits": {"email": "owner@example.com"}})
    send(
        api,
        "identify",
        {
            "anonymousId": "owned-dev",
            "traits": {"first_name": "Ola", "sms_consent": True},
            "context": {"timezone": "Europe/Oslo"},
        },
        server=True,
    )
    person = api.person(email="owner@example.com")
    assert person["traits"]["first_name"] == "Ola"
    assert (person["sms_consent"], person["timezone"]) == (True, "Europe/Oslo")
    assert [e["name"] for e in person["events"]] == ["Identify", "Identify"]
    send(api, "identify", {"anonymousId": "stranger-dev", "traits": {"first_name": "Nobody"}})
    assert db.scalar("SELECT count(*) FROM people") == 1  # a device nobody owns stays anonymous


def test_events_that_are_not_identify_moments_do_not_identify(api, db):
    send(
        api, "track", {"anonymousId": "nope-1", "event": "Product Viewed", "properties": {"email": "nope@example.com"}}
    )
    send(api, "track", {"anonymousId": "nope-2", "event": "Email Captured", "properties": {"form": "footer"}})
    send(api, "page", {"anonymousId": "nope-3", "properties": {"email": "nope@example.com"}})
    assert db.scalar("SELECT count(*) FROM people") == 0
    assert db.scalar("SELECT count(*) FROM identifiers") == 0
    assert api.admin("people", email="nope@example.com").status_code == 404


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased(api, db):
    send(api, "identify", {"anonymousId": "norm-1", "traits": {"email": "  MiXeD.Case@Example.COM\t"}})
    send(api, "identify", {"anonymousId": "norm-2", "traits": {"email": "mixed.case@example.com"}})
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.rows("SELECT value FROM identifiers WHERE kind = 'email'")[0].value == "mixed.case@example.com"
    person = api.person(email="MIXED.CASE@EXAMPLE.COM")
    assert person["emails"] == ["mixed.case@example.com"]
    assert person["traits"]["email"] == "mixed.case@example.com"
    assert sorted(person["anonymous_ids"]) == ["norm-1", "norm-2"]


def test_phone_is_normalised_to_e164(api, db):
    send(api, "identify", {"anonymousId": "ph-1", "traits": {"phone": "(415) 555-2671"}})
    send(api, "identify", {"anonymousId": "ph-2", "traits": {"phone": "+1 415-555-2671"}})
    assert db.scalar("SELECT count(*) FROM people") == 1
    person = api.person(phone="+14155552671")
    assert person["phones"] == ["+14155552671"]
    assert person["traits"]["phone"] == "+14155552671"
    assert sorted(person["anonymous_ids"]) == ["ph-1", "ph-2"]


def test_invalid_email_or_phone_is_stored_without_it_and_reported(api, db):
    message_id = mid()
    response = api.segment(
        "identify",
        {
            "anonymousId": "bad-ph",
            "userId": "bad-ph-user",
            "messageId": message_id,
            "traits": {"phone": "12", "email": "not-an-email", "name": "Al"},
        },
    )
    assert response.status_code == 200
    person = api.person(user_id="bad-ph-user")
    assert person["phones"] == [] and person["emails"] == []
    assert person["traits"]["name"] == "Al"
    reasons = [r["reason"] for r in api.admin("rejected").json() if r["message_id"] == message_id]
    assert any("traits.phone" in r for r in reasons), reasons
    assert any("traits.email" in r for r in reasons), reasons


# ---------------------------------------------------------------------------------------------
# Shared device
# ---------------------------------------------------------------------------------------------


def test_shared_device_second_person_gets_own_profile_and_conflict(api, db):
    first_browse = mid()
    track(api, "family-ipad", "Product Viewed", messageId=first_browse)
    send(api, "identify", {"anonymousId": "family-ipad", "traits": {"email": "parent@example.com"}})
    parent = api.person(email="parent@example.com")

    second = mid()
    send(api, "identify", {"anonymousId": "family-ipad", "traits": {"email": "teen@example.com"}, "messageId": second})
    teen = api.person(email="teen@example.com")

    assert teen["person_id"] != parent["person_id"]
    assert db.scalar("SELECT count(*) FROM people") == 2
    assert teen["emails"] == ["teen@example.com"]
    assert teen["anonymous_ids"] == []  # the device stays with its first owner
    assert [e["message_id"] for e in teen["events"]] == [second]
    assert api.person(anonymous_id="family-ipad")["person_id"] == parent["person_id"]
    assert person_of(db, first_browse) == parent["person_id"]
    conflicts = db.rows("SELECT anonymous_id, owner_person_id, claimant_person_id FROM identity_conflicts")
    assert [tuple(c) for c in conflicts] == [("family-ipad", parent["person_id"], teen["person_id"])]
    # Later anonymous events from the device still go to the first owner.
    later = mid()
    track(api, "family-ipad", "Product Viewed", messageId=later)
    assert person_of(db, later) == parent["person_id"]


def test_same_person_adding_details_is_not_a_conflict(api, db):
    send(api, "identify", {"anonymousId": "own-dev", "traits": {"email": "own@example.com"}})
    send(api, "identify", {"anonymousId": "own-dev", "userId": "own-user"}, server=True)
    send(
        api,
        "identify",
        {"anonymousId": "own-dev", "traits": {"phone": "+14155550123", "email": "OWN@example.com"}},
        server=True,
    )
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 0
    person = api.person(user_id="own-user")
    assert person["emails"] == ["own@example.com"]
    assert person["phones"] == ["+14155550123"]


def test_shared_device_second_user_id_is_a_conflict(api, db):
    send(api, "identify", {"anonymousId": "kiosk", "userId": "user-a"})
    send(api, "identify", {"anonymousId": "kiosk", "userId": "user-b"})
    assert db.scalar("SELECT count(*) FROM people") == 2
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 1
    assert api.person(anonymous_id="kiosk")["person_id"] == api.person(user_id="user-a")["person_id"]


# ---------------------------------------------------------------------------------------------
# Alias
# ---------------------------------------------------------------------------------------------


def test_alias_anonymous_id_to_user_id(api, db):
    ids = [mid(), mid()]
    track(api, "alias-dev", "Product Viewed", messageId=ids[0], timestamp=ago(hours=2))
    track(api, "alias-dev", "Product Added", messageId=ids[1], timestamp=ago(hours=1))
    send(api, "alias", {"previousId": "alias-dev", "userId": "alias-user"})
    person = api.person(user_id="alias-user")
    assert person["anonymous_ids"] == ["alias-dev"]
    assert [person_of(db, m) for m in ids] == [person["person_id"]] * 2
    assert api.person(anonymous_id="alias-dev")["person_id"] == person["person_id"]
    assert db.scalar("SELECT count(*) FROM people") == 1


def test_alias_merges_two_existing_users(api, db):
    old_events = [mid(), mid()]
    send(
        api,
        "identify",
        {"userId": "old-login", "anonymousId": "old-dev", "traits": {"email": "old@example.com", "a": 1}},
    )
    track(api, "old-dev", "Product Viewed", messageId=old_events[0])
    send(api, "track", {"userId": "old-login", "event": "Product Added", "messageId": old_events[1]})
    send(
        api,
        "identify",
        {"userId": "new-login", "anonymousId": "new-dev", "traits": {"email": "new@example.com", "a": 2}},
    )
    assert db.scalar("SELECT count(*) FROM people") == 2
    old_person = api.person(user_id="old-login")["person_id"]
    new_person = api.person(user_id="new-login")["person_id"]

    send(api, "alias", {"previousId": "old-login", "userId": "new-login"}, server=True)
    assert db.scalar("SELECT count(*) FROM people") == 1
    person = api.person(user_id="old-login")
    assert person["person_id"] == new_person
    assert sorted(person["user_ids"]) == ["new-login", "old-login"]
    assert sorted(person["emails"]) == ["new@example.com", "old@example.com"]
    assert sorted(person["anonymous_ids"]) == ["new-dev", "old-dev"]
    assert person["traits"]["a"] == 2  # the alias target (primary) wins
    assert [person_of(db, m) for m in old_events] == [new_person] * 2
    assert api.admin(f"people/{old_person}").status_code == 404
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=old_person) == 0


def test_alias_of_a_known_user_to_a_new_user_id(api, db):
    send(api, "identify", {"userId": "first-id", "traits": {"email": "renamed@example.com"}})
    send(api, "alias", {"previousId": "first-id", "userId": "second-id"}, server=True)
    assert api.person(user_id="second-id")["person_id"] == api.person(user_id="first-id")["person_id"]
    assert db.scalar("SELECT count(*) FROM people") == 1


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


def race(served, bodies: list[dict], path: str = "/v1/identify") -> list[int]:
    """POST every body to `path` at once, each from its own client (own connection)."""
    tls = ssl.create_default_context()  # shared: building one per client costs ~80 ms of CPU each
    clients = [httpx.Client(base_url=served.url, timeout=60, verify=tls) for _ in bodies]
    start = threading.Barrier(len(bodies))

    def post(i: int) -> int:
        start.wait()
        return clients[i].post(path, auth=(WRITE_KEY, ""), json=bodies[i]).status_code

    try:
        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            return list(pool.map(post, range(len(bodies))))
    finally:
        for client in clients:
            client.close()


def test_fifty_concurrent_identifies_end_with_one_person(api, db, served):
    anon, email = "race-dev", "race@example.com"
    track(api, anon, "Product Viewed", timestamp=ago(minutes=10))
    bodies = [
        {"anonymousId": anon, "traits": {"email": email if i % 2 else email.upper()}, "messageId": f"race-{i}"}
        for i in range(50)
    ]
    assert race(served, bodies) == [200] * 50

    assert db.scalar("SELECT count(*) FROM people") == 1
    person_id = db.scalar("SELECT id FROM people")
    identifiers = sorted(tuple(r) for r in db.rows("SELECT kind, value, person_id FROM identifiers"))
    assert identifiers == [("anonymous_id", anon, person_id), ("email", email, person_id)]
    assert db.scalar("SELECT count(*) FROM events") == 51
    assert db.scalar("SELECT count(*) FROM events WHERE person_id = :p", p=person_id) == 51
    assert db.scalar("SELECT count(*) FROM identity_conflicts") == 0


def test_concurrent_identifies_of_one_email_from_many_devices(api, db, served):
    email = "manydev@example.com"
    bodies = [{"anonymousId": f"dev-{i}", "traits": {"email": email}, "messageId": f"many-{i}"} for i in range(20)]
    assert race(served, bodies) == [200] * 20
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'anonymous_id'") == 20
    assert db.scalar("SELECT count(DISTINCT person_id) FROM identifiers") == 1
    assert db.scalar("SELECT count(*) FROM events WHERE person_id IS NULL") == 0


def test_batches_naming_two_emails_in_opposite_orders_never_deadlock(api, db, served):
    """Two batches at once, each identifying the same two emails from its own devices and viewing the
    same products, in opposite orders. Every advisory lock a request waits for is taken up front as
    one sorted set, and products are upserted in key order, so neither request waits for the other
    while holding what the other needs (before, PostgreSQL found the cycle and one answered 500)."""
    rounds, skus = 30, [f"SKU-{i}" for i in range(8)]
    for r in range(rounds):
        emails = [f"first-{r}@example.com", f"second-{r}@example.com"]

        def batch(side: str, emails: list[str], skus: list[str]) -> dict:
            views = [
                {
                    "type": "track",
                    "anonymousId": f"{side}-{r}-0",
                    "event": "Product Viewed",
                    "properties": {"sku": sku, "price": 10 + r},
                }
                for sku in skus
            ]
            identifies = [
                {"type": "identify", "anonymousId": f"{side}-{r}-{i}", "traits": {"email": email}}
                for i, email in enumerate(emails)
            ]
            return {"batch": views + identifies}

        bodies = [batch("left", emails, skus), batch("right", emails[::-1], skus[::-1])]
        assert race(served, bodies, path="/v1/batch") == [200, 200], f"round {r}"
    assert db.scalar("SELECT count(*) FROM people") == 2 * rounds
    per_email = db.rows("SELECT value, count(DISTINCT person_id) FROM identifiers WHERE kind = 'email' GROUP BY value")
    assert len(per_email) == 2 * rounds and {count for _, count in per_email} == {1}
    assert db.scalar("SELECT count(*) FROM products") == len(skus)


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # SQLite writers run one at a time
def test_an_owner_that_moved_while_waiting_is_not_waited_for_out_of_order(api, db, monkeypatch, request):
    """A request read the device's owner (S) and waited for S's lock while another transaction moved
    the device to P. P's lock is not in the request's sorted set, and a third transaction holds it:
    instead of waiting for it out of order (a possible deadlock), the request starts again, now
    locking P up front, and the event lands on P."""
    from sqlalchemy import text
    from sqlmodel import Session

    import store.ingest
    from store.identity import lock_up_front

    send(api, "identify", {"anonymousId": "moved-dev", "traits": {"email": "s@example.com"}})
    send(api, "identify", {"anonymousId": "other-dev", "traits": {"email": "p@example.com"}})
    secondary, primary = api.person(email="s@example.com")["person_id"], api.person(email="p@example.com")["person_id"]
    runs = []
    real_ingest = store.ingest._ingest
    monkeypatch.setattr(store.ingest, "_ingest", lambda *a: runs.append(1) or real_ingest(*a))

    def waiting(person: str, run: int) -> None:
        """Until the request's `run`th run waits for `person`'s lock, and for nothing else (right after
        a commit the first run's wait may still be seen before its second run starts)."""
        for _ in range(200):
            if len(runs) == run and db.rows(WAITED_FOR, **names) == [(f"person:{person}",)]:
                return
            threading.Event().wait(0.05)
        raise AssertionError(
            f"run {run} never waited for {person} alone (runs: {len(runs)}): {db.rows(WAITED_FOR, **names)}"
        )

    mover, holder = Session(db.engine), Session(db.engine)
    request.addfinalizer(mover.close)
    request.addfinalizer(holder.close)
    mover.begin()
    lock_up_front(mover, [("email", "s@example.com")])  # holds S
    mover.execute(text("UPDATE identifiers SET person_id = :p WHERE value = 'moved-dev'"), {"p": primary})
    holder.begin()
    lock_up_front(holder, [("email", "p@example.com")])  # holds P
    names = {"s": f"person:{secondary}", "p": f"person:{primary}"}
    with ThreadPoolExecutor(max_workers=1) as pool:
        late = pool.submit(
            send, api, "track", {"anonymousId": "moved-dev", "event": "Product Viewed", "messageId": "after-move"}
        )
        waiting(secondary, run=1)  # the request waits for S, the owner it read
        mover.commit()
        waiting(primary, run=2)  # its second run waits for P, in order
        holder.commit()
        late.result(timeout=10)
    assert person_of(db, "after-move") == primary
    assert api.admin(f"people/{secondary}").json()["anonymous_ids"] == []


def test_locks_that_keep_moving_are_retried_then_answered_503(api, monkeypatch):
    """A request that keeps meeting people whose locks moved (concurrent merges and deletes) runs
    again a few times, then says 503 with Retry-After — in each front door's error shape."""
    import store.ingest
    from store.identity import LocksMoved

    runs = []

    def always_moved(*args, **kwargs):
        runs.append(1)
        raise LocksMoved("person p is locked by another transaction")

    monkeypatch.setattr(store.ingest, "_ingest", always_moved)
    segment = api.segment("track", {"anonymousId": "dev-busy", "event": "Product Viewed", "messageId": "busy-1"})
    assert (segment.status_code, segment.headers["Retry-After"], len(runs)) == (503, "1", 5)
    assert "busy" in segment.json()["detail"]
    cio = api.cio("POST", "events", {"anonymous_id": "dev-busy", "name": "Product Viewed"})
    assert cio.status_code == 503 and "busy" in cio.json()["meta"]["errors"][0]
