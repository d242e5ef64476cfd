"""Trust boundaries (issue 13) over real HTTP, on SQLite and PostgreSQL: what a public browser write
key cannot do (redirect mail, change consent, add identifiers to a known person, merge people,
mark events as server-sourced, plant links, pin the catalog with a future clock), what the server
key and a verified `user_hash` can, and that every refusal is said while the rest of the call
takes effect."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, UTC

import pytest

from activities.channels import channels_from_settings
from activities.store_activities import StoreActivities
from conftest import Api, Database, ServedApp, settings_for
from workflows.models import SendInput

SHOP_URL = "https://glow.example"
IDENTITY_SECRET = "identity-test-secret"
VICTIM_EMAIL, VICTIM_PHONE, ATTACKER_PHONE = "victim@example.com", "+14155550100", "+14155550199"


def shop_settings(url: str):
    return settings_for(
        url,
        shop_url=SHOP_URL,
        link_hosts=["cdn.glow.example"],
        identity_secret=IDENTITY_SECRET,
        public_base_url="https://crumbs.glow.example",
        shop_name="Glow",
    )


@pytest.fixture(scope="module")
def shop_server(database: Database) -> Iterator[ServedApp]:
    with ServedApp(shop_settings(database.url)) as served:
        yield served


@pytest.fixture
def shop(db: Database, shop_server: ServedApp) -> Iterator[Api]:
    client = Api(shop_server.url)
    yield client
    client.http.close()


def mid() -> str:
    return f"t-{uuid.uuid4().hex}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def call(shop: Api, path: str, body: dict, server: bool = False, rejected: int = 0) -> str:
    """One call through the browser key (or the server key); it succeeds and quarantines `rejected` rows."""
    message_id = body.setdefault("messageId", mid())
    response = (shop.server if server else shop.segment)(path, body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Breadcrumb-Rejected"] == str(rejected), (path, body, response.headers)
    return message_id


def reasons(db: Database, message_id: str) -> str:
    return " | ".join(r for (r,) in db.rows("SELECT reason FROM rejected WHERE message_id = :m", m=message_id))


def user_hash(identity: str, secret: str = IDENTITY_SECRET) -> str:
    """The recipe docs/trust.md gives the shop's server."""
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def known_victim(shop: Api) -> dict:
    """The shop's server knows the victim: email, phone, SMS consent, unsubscribed from email."""
    call(
        shop,
        "identify",
        {
            "userId": "victim-1",
            "anonymousId": "victim-laptop",
            "traits": {
                "email": VICTIM_EMAIL,
                "phone": VICTIM_PHONE,
                "sms_consent": True,
                "unsubscribed": True,
                "first_name": "Vic",
            },
        },
        server=True,
    )
    return shop.person(email=VICTIM_EMAIL)


# ---------------------------------------------------------------------------------------------
# Consent, identifiers, source
# ---------------------------------------------------------------------------------------------

ATTACKS = [
    (
        "identify",
        {
            "anonymousId": "evil-dev",
            "traits": {"email": VICTIM_EMAIL, "phone": ATTACKER_PHONE, "sms_consent": True, "unsubscribed": False},
        },
    ),
    (
        "track",
        {
            "anonymousId": "evil-dev",
            "event": "SMS Captured",
            "properties": {"email": VICTIM_EMAIL, "phone": ATTACKER_PHONE, "unsubscribed": False},
        },
    ),
    ("identify", {"anonymousId": "evil-dev", "userId": "evil-login", "traits": {"email": VICTIM_EMAIL}}),
]


def test_browser_key_claims_the_device_but_never_redirects_mail_or_changes_consent(shop, db):
    victim = known_victim(shop)
    for path, body in ATTACKS:
        message_id = call(shop, path, {**body}, rejected=1)  # said, one quarantine row per message
        assert db.scalar("SELECT person_id FROM events WHERE message_id = :m", m=message_id) == victim["person_id"]
    said = " | ".join(r for (r,) in db.rows("SELECT reason FROM rejected ORDER BY id"))
    assert "traits.sms_consent, traits.unsubscribed not applied" in said
    assert "properties.unsubscribed not applied" in said
    assert "phone not added to a known person" in said and "user_id not added to a known person" in said

    after = shop.person(email=VICTIM_EMAIL)
    assert after["phones"] == [VICTIM_PHONE] and after["user_id"] == "victim-1"
    assert after["traits"]["phone"] == VICTIM_PHONE
    assert (after["sms_consent"], after["email_unsubscribed"]) == (True, True)
    assert sorted(after["anonymous_ids"]) == ["evil-dev", "victim-laptop"]  # the device claim is the product
    assert db.scalar("SELECT count(*) FROM identifiers WHERE value IN (:p, :u)", p=ATTACKER_PHONE, u="evil-login") == 0

    # The shop's server may do all of it.
    for path, body in ATTACKS:
        call(shop, path, {**body, "anonymousId": "victim-laptop"}, server=True)
    after = shop.person(email=VICTIM_EMAIL)
    assert sorted(after["phones"]) == sorted([VICTIM_PHONE, ATTACKER_PHONE])
    assert after["email_unsubscribed"] is False


def test_browser_key_events_stay_client_events(shop, db):
    known_victim(shop)
    body = {
        "userId": "victim-1",
        "event": "Order Completed",
        "properties": {"order_id": "o-1", "revenue": 10},
        "context": {"source": "server", "library": {"name": "analytics-python"}},
    }
    browser, server = call(shop, "track", {**body}), call(shop, "track", {**body}, server=True)
    sources = dict(db.rows("SELECT message_id, source FROM events WHERE message_id IN (:a, :b)", a=browser, b=server))
    assert sources == {browser: "client", server: "server"}


# ---------------------------------------------------------------------------------------------
# Two known people in one identify; merges
# ---------------------------------------------------------------------------------------------


def test_identify_naming_two_known_people_is_a_conflict_and_copies_nothing(shop, db):
    call(shop, "identify", {"userId": "a-1", "anonymousId": "a-dev", "traits": {"email": "a@example.com"}}, server=True)
    call(
        shop,
        "identify",
        {"userId": "b-1", "anonymousId": "b-dev", "traits": {"email": "b@example.com", "phone": VICTIM_PHONE}},
        server=True,
    )
    a, b = shop.person(user_id="a-1"), shop.person(user_id="b-1")

    for server in (False, True):  # a conflict whoever sends it: only an explicit merge joins two people
        message_id = call(
            shop,
            "identify",
            {"userId": "a-1", "traits": {"email": "b@example.com", "phone": ATTACKER_PHONE}},
            server=server,
            rejected=1,
        )
        said = reasons(db, message_id)
        assert "names 2 known people: nothing merged or copied" in said
        assert "phone not added: the identify names two known people" in said
    assert db.scalar("SELECT count(*) FROM people") == 2
    after_a, after_b = shop.person(user_id="a-1"), shop.person(user_id="b-1")
    assert after_a["emails"] == ["a@example.com"] and after_a["traits"]["email"] == "a@example.com"
    assert after_a["phones"] == [] and "phone" not in after_a["traits"]
    assert after_b["emails"] == b["emails"] and after_b["phones"] == [VICTIM_PHONE]

    conflicts = shop.admin("conflicts")
    assert conflicts.status_code == 200
    rows = conflicts.json()
    assert [(c["kind"], c["claimant_person_id"], c["owner_person_id"], c["identifiers"]) for c in rows] == [
        ("identifiers", a["person_id"], b["person_id"], {"user_id": a["person_id"], "email": b["person_id"]})
    ] * 2
    assert all(c["message_id"] for c in rows)
    page = shop.admin("conflicts", limit=1, offset=1).json()
    assert [c["id"] for c in page] == [rows[1]["id"]]
    assert shop.admin("conflicts", person_id=b["person_id"]).json() == rows
    assert shop.http.get("/admin/conflicts").status_code == 401

    # A browser alias of two known people is refused and said; the server's merges them.
    message_id = call(shop, "alias", {"previousId": "b-1", "userId": "a-1"}, rejected=1)
    assert "alias refused: merging two known people needs a server key" in reasons(db, message_id)
    assert db.scalar("SELECT count(*) FROM people") == 2
    call(shop, "alias", {"previousId": "b-1", "userId": "a-1"}, server=True)
    assert db.scalar("SELECT count(*) FROM people") == 1
    assert sorted(shop.person(user_id="a-1")["emails"]) == ["a@example.com", "b@example.com"]


def test_browser_alias_may_claim_a_device_but_not_rename_a_known_person(shop, db):
    call(shop, "track", {"anonymousId": "fresh-dev", "event": "Product Viewed", "properties": {"sku": "S"}})
    call(shop, "alias", {"previousId": "fresh-dev", "userId": "fresh-user"})
    assert shop.person(user_id="fresh-user")["anonymous_ids"] == ["fresh-dev"]
    message_id = call(shop, "alias", {"previousId": "fresh-user", "userId": "taken-over"}, rejected=1)
    assert "adding a userId to a known person needs a server key" in reasons(db, message_id)
    assert shop.admin("people", user_id="taken-over").status_code == 404


# ---------------------------------------------------------------------------------------------
# user_hash
# ---------------------------------------------------------------------------------------------


def test_verified_user_hash_makes_a_browser_identify_trusted(shop, db):
    known_victim(shop)
    message_id = call(
        shop,
        "identify",
        {
            "userId": "victim-1",
            "anonymousId": "victim-phone",
            "traits": {"phone": ATTACKER_PHONE, "unsubscribed": False, "user_hash": user_hash("victim-1")},
        },
    )
    person = shop.person(user_id="victim-1")
    assert sorted(person["phones"]) == sorted([VICTIM_PHONE, ATTACKER_PHONE]) and person["email_unsubscribed"] is False
    assert "user_hash" not in person["traits"]
    stored = db.rows("SELECT properties, context FROM events WHERE message_id = :m", m=message_id)
    assert "user_hash" not in str(stored)  # it vouches for a person: not kept
    # By email, as `context.user_hash`, when the storefront has no user id.
    call(
        shop,
        "identify",
        {
            "anonymousId": "victim-tablet",
            "traits": {"email": " Victim@Example.com ", "sms_consent": False},
            "context": {"user_hash": user_hash(VICTIM_EMAIL)},
        },
    )
    assert shop.person(email=VICTIM_EMAIL)["sms_consent"] is False


def test_forged_user_hash_is_refused_and_said(shop, db):
    known_victim(shop)
    forged = {
        "userId": "victim-1",
        "anonymousId": "evil-dev",
        "traits": {
            "phone": ATTACKER_PHONE,
            "unsubscribed": False,
            "user_hash": user_hash("victim-1", secret="guessed"),
        },
    }
    message_id = call(shop, "identify", forged, rejected=1)
    said = reasons(db, message_id)
    assert "user_hash refused: it does not match the userId" in said
    assert "not applied" in said and "phone not added to a known person" in said
    person = shop.person(user_id="victim-1")
    assert person["phones"] == [VICTIM_PHONE] and person["email_unsubscribed"] is True
    assert db.scalar("SELECT count(*) FROM events WHERE message_id = :m", m=message_id) == 1  # the event is kept


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------


def test_foreign_links_never_reach_the_catalog_or_a_rendered_message(shop, db):
    now = datetime.now(UTC)
    call(
        shop,
        "track",
        {
            "anonymousId": "cart-dev",
            "event": "Product Viewed",
            "timestamp": iso(now - timedelta(hours=2)),
            "properties": {
                "sku": "SER",
                "name": "Night Serum",
                "price": 64,
                "url": f"{SHOP_URL}/products/ser",
                "image_url": "https://cdn.glow.example/ser.jpg",
            },
        },
    )
    call(
        shop,
        "track",
        {
            "anonymousId": "cart-dev",
            "event": "Added to Cart",
            "timestamp": iso(now - timedelta(hours=1)),
            "properties": {
                "sku": "SER",
                "name": "Night Serum",
                "price": 64,
                "quantity": 1,
                "cart_id": "c1",
                "url": "https://evil.example/ser",
                "image_url": "https://evil.example/ser.jpg",
                "checkout_url": "https://evil.example/pay",
            },
        },
    )
    call(
        shop,
        "track",
        {
            "anonymousId": "cart-dev",
            "event": "Added to Cart",
            "timestamp": iso(now - timedelta(minutes=50)),
            "properties": {
                "sku": "MASK",
                "name": "Calm Mask",
                "price": 30,
                "quantity": 1,
                "cart_id": "c1",
                "url": "https://glow.example.evil.example/mask",
                "image_url": "javascript:alert(1)",
            },
        },
    )
    call(
        shop,
        "track",
        {
            "anonymousId": "cart-dev",
            "event": "Checkout Started",
            "timestamp": iso(now - timedelta(minutes=40)),
            "properties": {
                "cart_id": "c1",
                "value": 94,
                "cart_url": "//evil.example/cart",
                "products": [
                    {
                        "sku": "SER",
                        "name": "Night Serum",
                        "price": 64,
                        "quantity": 1,
                        "image_url": "https://evil.example/ser.jpg",
                    },
                    {
                        "sku": "MASK",
                        "name": "Calm Mask",
                        "price": 30,
                        "quantity": 1,
                        "url": "https://evil.example/mask",
                    },
                ],
            },
        },
    )
    call(shop, "identify", {"anonymousId": "cart-dev", "traits": {"email": "cart@example.com", "first_name": "Cy"}})
    person_id = shop.person(email="cart@example.com")["person_id"]

    catalog = {p["sku"]: p for p in shop.admin("catalog").json()}
    assert (catalog["SER"]["url"], catalog["SER"]["image_url"]) == (
        f"{SHOP_URL}/products/ser",
        "https://cdn.glow.example/ser.jpg",
    )
    assert (catalog["MASK"]["url"], catalog["MASK"]["image_url"]) == (None, None)
    tracking = shop.admin("reports/tracking").json()["flagged"]
    assert tracking["foreign_links"] == 3
    assert [(e["event"], e["foreign_links"]) for e in tracking["by_event"]] == [
        ("Added to Cart", 2),
        ("Checkout Started", 1),
    ]
    flags = [
        str(f)
        for (f,) in db.rows(
            "SELECT flags FROM events WHERE name IN ('Added to Cart', 'Checkout Started') ORDER BY timestamp"
        )
    ]
    assert "checkout_url" in flags[0] and "image_url" in flags[1] and "javascript" in flags[1]
    assert all(key in flags[2] for key in ("cart_url", "products[0].image_url", "products[1].url"))
    stored = db.rows("SELECT properties FROM events WHERE person_id = :p", p=person_id)
    assert "evil" not in str(stored) and "javascript" not in str(stored)  # kept only in the flags

    settings = shop_settings(db.url)
    activities = StoreActivities(db.engine, channels=channels_from_settings(settings), settings=settings)
    send = SendInput(
        workflow_id=f"cart_recovery-{person_id}-1",
        person_id=person_id,
        route="cart_recovery",
        step=1,
        template="cart_recovery_1",
        channel="email",
        cart_id="c1",
        at=datetime.now(UTC),
    )
    result = activities.send_step(send)
    assert result.status == "sent", result.reason
    subject, body, html = db.rows("SELECT subject, body, html FROM messages WHERE id = :i", i=result.message_id)[0]
    rendered = subject + body + html
    assert "Night Serum" in rendered and "Calm Mask" in rendered
    assert "evil" not in rendered and "javascript" not in rendered
    assert f"{SHOP_URL}/cart?utm_source=breadcrumb" in body  # the shop's own cart link instead of the planted one
    assert f"{SHOP_URL}/products/ser?utm_source=breadcrumb" in body
    assert 'src="https://cdn.glow.example/ser.jpg"' in html


# ---------------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------------


def test_future_timestamps_are_clamped_and_cannot_pin_the_catalog(shop, db):
    future = "2099-01-01T00:00:00+00:00"
    pinned = call(
        shop,
        "track",
        {
            "anonymousId": "clock-dev",
            "event": "Product Viewed",
            "timestamp": future,
            "properties": {"sku": "CLK", "name": "Planted name", "price": 1},
        },
    )
    near = datetime.now(UTC) + timedelta(seconds=90)  # inside the allowed skew: kept as sent
    kept = call(shop, "track", {"anonymousId": "clock-dev", "event": "Page Viewed", "timestamp": iso(near)})
    rows = {m: (t, f) for m, t, f in db.rows("SELECT message_id, timestamp, flags FROM events")}
    stamp, flags = rows[pinned]
    stamp = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    assert stamp.replace(tzinfo=UTC) < datetime.now(UTC) + timedelta(seconds=1)
    assert "timestamp_clamped" in str(flags) and "2099-01-01" in str(flags)
    assert "timestamp_clamped" not in str(rows[kept][1])

    # A server's timestamp is kept as sent, yet the catalog counts it as seen when it arrived.
    server = call(
        shop,
        "track",
        {
            "userId": "backend",
            "event": "Product Viewed",
            "timestamp": future,
            "properties": {"sku": "CLK", "name": "Server's future name", "price": 2},
        },
        server=True,
    )
    assert "2099" in str(db.scalar("SELECT timestamp FROM events WHERE message_id = :m", m=server))

    call(
        shop,
        "track",
        {
            "anonymousId": "real-dev",
            "event": "Product Viewed",
            "properties": {"sku": "CLK", "name": "Real name", "price": 42},
        },
    )
    [product] = shop.admin("catalog", sku="CLK").json()
    assert (product["name"], product["price"]) == ("Real name", 42)
    assert shop.admin("reports/tracking").json()["flagged"]["timestamp_clamped"] == 1


def test_rendering_shows_no_foreign_link_whatever_the_store_holds():
    """The last line: links stored before ingest checked them (or set by any other path) are
    replaced by the shop's own when a message is rendered."""
    from activities.render import Renderer
    from activities.store_activities import _resume_url
    from journeys.history import HistoryEvent

    item = {
        "sku": "SER",
        "variant": None,
        "name": "Night Serum",
        "category": None,
        "price": 64.0,
        "currency": "USD",
        "quantity": 1,
        "image_url": "https://evil.example/x.jpg",
        "url": "https://evil.example/ser",
        "in_stock": True,
    }
    planted = HistoryEvent(
        name="Added to Cart",
        timestamp=datetime.now(UTC),
        cart_id="c1",
        properties={"cart_id": "c1", "checkout_url": "https://evil.example/pay"},
    )
    resume = _resume_url([planted], None, SHOP_URL, ("cdn.glow.example",))
    assert resume == f"{SHOP_URL}/cart"
    context = {
        "journey": "cart_recovery",
        "step": 1,
        "first_name": "Ada",
        "items": [item],
        "cart_value": 64.0,
        "category": None,
        "picks": [item],
        "currency": "USD",
        "resume_url": "https://evil.example/pay",
        "unsubscribe_url": "https://crumbs.glow.example/u/T",
        "shop": {"name": "Glow", "url": SHOP_URL, "address": "1 Market St"},
    }
    rendered = Renderer(link_hosts=["cdn.glow.example"]).render("cart_recovery_1", "email", context)
    assert "evil" not in rendered.subject + rendered.text + rendered.html
    assert "Night Serum" in rendered.text and f"{SHOP_URL}?utm_source=breadcrumb" in rendered.text
