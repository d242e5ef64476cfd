"""Real delivery: email through a real SMTP server (aiosmtpd) parsed back as MIME, SMS through a
local webhook, the failure paths (recipient refused, server down then up, webhook 4xx/5xx), SMS
consent, and start-up validation of the delivery settings. Activity-level tests run on SQLite and
PostgreSQL; the send activity is called the way Temporal calls (and retries) it."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from datetime import timedelta, UTC

import pytest
from sqlalchemy import text
from sqlmodel import Session

from activities.channels import (
    DeliveryConfigError,
    OutboxChannel,
    PermanentDeliveryError,
    SmsWebhookChannel,
    SmtpChannel,
    SmtpConfig,
    TransientDeliveryError,
    channels_from_settings,
    message_id_for,
)
from activities.render import TEMPLATES, Renderer
from activities.store_activities import CATALOG_PICKS_SCAN, SALES_REFRESH, StoreActivities, load_catalog
from conftest import free_port, settings_for
from delivery_helpers import SmsWebhook, SmtpServer, parts
from journey_harness import identify, now, track
from journeys.history import HistoryEvent
from journeys.personalise import personalise
from journeys.policy import Policy
from store import catalog, queries, reports
from store.db import transaction
from store.identity import delete_person, merge_people, normalise_phone
from store.ingest import ingest
from store.unsubscribe import read_token
from workflows.models import SendCheckInput, SendInput

FROM = "Glow Skincare <hello@glow.example>"


def delivery_settings(db, smtp_port: int | None = None, sms_url: str = "", **extra):
    return settings_for(
        db.url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}" if smtp_port else "",
        smtp_from=FROM,
        smtp_reply_to="care@glow.example",
        sms_webhook_url=sms_url,
        sms_webhook_token="sms-secret" if sms_url else "",
        public_base_url="https://crumbs.example",
        shop_url="https://glow.example",
        shop_name="Glow Skincare",
        shop_address="1 Market St, Springfield",
        smtp_timeout=5,
        sms_timeout=5,
        **{"link_hosts": ["cdn.glow.example"], **extra},  # the shop's image host
    )


def activities_for(db, settings) -> StoreActivities:
    return StoreActivities(db.engine, channels=channels_from_settings(settings), settings=settings)


def _ingest(db, *events) -> None:
    ingest(db.engine, list(events), Policy(), api="test", endpoint="test")


def seed(db, anon: str, email: str | None, *events, phone: str | None = None, **traits) -> str:
    who = identify(anon, email or "", **({"phone": phone} if phone else {}), **traits)
    if email is None:
        who.properties.pop("email")
    _ingest(db, *events, who)
    kind, value = ("email", email) if email else ("phone", normalise_phone(phone))
    return db.scalar("SELECT person_id FROM identifiers WHERE kind=:k AND value=:v", k=kind, v=value)


def put_catalog(db, *products: dict) -> None:
    with transaction(db.engine) as session:
        catalog.upsert_admin(session, catalog.validate_items(list(products)))


def send_input(person: str, route: str, step: int, template: str, channel: str = "email", cart_id=None) -> SendInput:
    return SendInput(
        workflow_id=f"{route}-{person}-1",
        person_id=person,
        route=route,
        step=step,
        template=template,
        channel=channel,
        cart_id=cart_id,
        at=now(),
    )


@pytest.fixture
def smtp():
    server = SmtpServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def sms():
    hook = SmsWebhook(free_port()).start()
    yield hook
    hook.stop()


def cart_person(db) -> str:
    put_catalog(
        db,
        {
            "sku": "SER-30",
            "variant": "30 ml",
            "name": "Night Serum",
            "price": 64,
            "image_url": "https://cdn.glow.example/ser-30.jpg",
            "url": "/products/night-serum",
        },
        {"sku": "CLN-01", "name": "Gentle Cleanser", "image_url": "https://cdn.glow.example/cln.jpg"},
    )
    return seed(
        db,
        "dev-cart",
        "ada@example.com",
        track(
            "dev-cart",
            "Product Added",
            cart_id="c1",
            sku="SER-30",
            variant="30 ml",
            name="Night Serum",
            price=64,
            quantity=1,
            category="serums",
        ),
        track(
            "dev-cart",
            "Added to Cart",
            cart_id="c1",
            sku="CLN-01",
            name="Gentle Cleanser",
            price=18.5,
            quantity=2,
            checkout_url="https://glow.example/checkouts/c1",
        ),
        first_name="Ada",
    )


def test_cart_email_through_real_smtp_is_a_complete_multipart_message(db, smtp):
    person = cart_person(db)
    settings = delivery_settings(db, smtp.port)
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    result = activities_for(db, settings).send_step(send)
    assert result.status == "sent", result.reason

    [message] = smtp.mailbox.wait_for(1)
    mail_from, rcpt_tos, _ = smtp.mailbox.received[0]
    assert (mail_from, rcpt_tos) == ("hello@glow.example", ["ada@example.com"])
    assert message["Subject"] == "Ada, your cart is waiting"
    assert message["From"] == FROM and message["To"] == "ada@example.com"
    assert message["Reply-To"] == "care@glow.example"
    key = f"cart_recovery-{person}-1:1"
    assert message["Message-ID"] == message_id_for(key, "glow.example")
    assert message["X-Breadcrumb-Idempotency-Key"].strip() == key  # long: folded onto a continuation line
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = message["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("https://crumbs.example/u/")
    claim = read_token(settings.unsubscribe_key, unsubscribe.rsplit("/", 1)[1])
    assert (claim.person_id, claim.channel, claim.message_id) == (person, "email", result.message_id)

    text, html = parts(message)
    for body in (text, html):
        assert "Night Serum" in body and "30 ml" in body and "Gentle Cleanser" in body
        assert "$64.00" in body and "$18.50" in body and "$101.00" in body
        assert "https://glow.example/checkouts/c1?utm_source=breadcrumb" in body
        assert unsubscribe in body and "1 Market St, Springfield" in body
    assert "Night Serum (30 ml) × 1 — $64.00" in text and "Gentle Cleanser × 2 — $18.50" in text
    assert '<img src="https://cdn.glow.example/ser-30.jpg"' in html and "Qty 2" in html

    with Session(db.engine) as session:
        [listed] = queries.messages_of(session, person)
    assert listed["status"] == "sent" and listed["attempts"] == 1 and listed["subject"] == message["Subject"]
    assert [i["sku"] for i in listed["items"]] == ["SER-30", "CLN-01"]


def test_smtp_auth_from_the_url(db):
    server = SmtpServer(free_port(), credentials=("shop", "p@ss word")).start()
    try:
        person = cart_person(db)
        settings = delivery_settings(db)
        settings.smtp_url = f"smtp://shop:p%40ss%20word@127.0.0.1:{server.port}"
        result = activities_for(db, settings).send_step(
            send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
        )
        assert result.status == "sent", result.reason
        assert len(server.mailbox.wait_for(1)) == 1
    finally:
        server.stop()


def test_browse_email_shows_recent_in_stock_items_and_never_a_sold_out_one(db, smtp):
    put_catalog(
        db,
        *({"sku": f"P{i}", "name": f"Product {i}", "category": "sensitive skin", "price": 10 + i} for i in range(4)),
        {"sku": "P4", "variant": "M", "name": "Product 4", "in_stock": False},
        {"sku": "P4", "variant": "L", "name": "Product 4", "in_stock": True},
    )
    views = [
        track("dev-b", "Product Viewed", sku=f"P{i}", variant="M" if i == 4 else None, category="sensitive skin")
        for i in (0, 1, 2, 4, 3)
    ]
    person = seed(db, "dev-b", "bea@example.com", *views)
    put_catalog(db, {"sku": "P3", "in_stock": False})  # the most recent view has sold out since
    result = activities_for(db, delivery_settings(db, smtp.port)).send_step(
        send_input(person, "browse_recovery", 1, "browse_recovery_1")
    )
    assert result.status == "sent"
    [message] = smtp.mailbox.wait_for(1)
    assert message["Subject"] == "Still thinking about sensitive skin?"
    text, html = parts(message)
    items = db.scalar("SELECT items FROM messages WHERE id = :id", id=result.message_id)
    items = json.loads(items) if isinstance(items, str) else items
    assert [(i["sku"], i["variant"]) for i in items] == [("P4", "L"), ("P2", None), ("P1", None)]
    for body in (text, html):
        assert "Product 3" not in body and "Product 0" not in body  # sold out; and only 3 items
        assert "Product 4" in body and "Product 2" in body and "Product 1" in body
    assert "(L)" in text and "(M)" not in text


def test_welcome_without_browsing_shows_bestsellers(db, smtp):
    put_catalog(
        db,
        {"sku": "B1", "name": "Bestseller One", "bestseller_rank": 1},
        {"sku": "B2", "name": "Bestseller Two", "bestseller_rank": 2, "in_stock": False},
        {"sku": "B3", "name": "Bestseller Three", "bestseller_rank": 3},
    )
    person = seed(db, "dev-w", "wes@example.com")
    result = activities_for(db, delivery_settings(db, smtp.port)).send_step(
        send_input(person, "welcome", 2, "welcome_2")
    )
    [message] = smtp.mailbox.wait_for(1)
    assert result.status == "sent" and message["Subject"] == "Our bestsellers"
    text, _ = parts(message)
    assert "Bestseller One" in text and "Bestseller Three" in text and "Bestseller Two" not in text


def test_welcome_bestsellers_from_real_sales_when_the_catalog_comes_from_events(db, smtp):
    _ingest(
        db,
        *(
            track("dev-shop", "Product Viewed", sku=sku, name=name, price=10)
            for sku, name in (("X", "Xylo Balm"), ("Y", "Yuzu Mist"), ("Z", "Zinc Screen"))
        ),
    )
    _ingest(
        db,
        track("dev-a", "Order Completed", order_id="o-1", products=[{"sku": "X", "quantity": 2}, {"sku": "Y"}]),
        track("dev-b", "Order Completed", order_id="o-2", products=[{"product_id": "X"}]),
        track("dev-b", "Order Completed", order_id="o-2", products=[{"sku": "X"}], source="server"),  # same order
        track("dev-c", "Order Completed", order_id="o-3", products=["Z", {"sku": ""}, {"sku": ["Z"]}, 7]),
        track("dev-c", "Order Completed", order_id="o-4", products={"sku": "Z"}),
        track(
            "dev-c", "Order Completed", order_id="o-old", products=[{"sku": "Z"}] * 3, at=now() - timedelta(days=120)
        ),
    )  # long ago: not a bestseller now
    assert db.scalar("SELECT count(*) FROM products WHERE bestseller_rank IS NOT NULL") == 0
    person = seed(db, "dev-w", "wes@example.com")
    activities = activities_for(db, delivery_settings(db, smtp.port))
    assert activities.send_step(send_input(person, "welcome", 2, "welcome_2")).status == "sent"
    text, html = parts(smtp.mailbox.wait_for(1)[0])
    for body in (text, html):
        assert 0 < body.index("Xylo Balm") < body.index("Yuzu Mist") and "Zinc Screen" not in body

    put_catalog(db, {"sku": "Z", "bestseller_rank": 1}, {"sku": "X", "in_stock": False})  # the admin's word wins
    assert activities.send_step(send_input(person, "welcome", 3, "welcome_2")).status == "sent"
    text, _ = parts(smtp.mailbox.wait_for(2)[1])
    assert 0 < text.index("Zinc Screen") < text.index("Yuzu Mist") and "Xylo Balm" not in text


def test_bestseller_counts_are_refreshed_every_few_minutes_not_per_message(db, smtp):
    """A worker counts sales once per SALES_REFRESH (the count scans a quarter of orders), so new
    orders move the bestsellers at the next refresh, not at the next message."""
    _ingest(
        db,
        *(
            track("dev-shop", "Product Viewed", sku=sku, name=name, price=10)
            for sku, name in (("X", "Xylo Balm"), ("Y", "Yuzu Mist"))
        ),
        track("dev-a", "Order Completed", order_id="o-1", products=[{"sku": "X"}]),
    )
    person = seed(db, "dev-w", "wes@example.com")
    activities = activities_for(db, delivery_settings(db, smtp.port))
    assert activities.send_step(send_input(person, "welcome", 1, "welcome_2")).status == "sent"
    _ingest(db, *(track("dev-b", "Order Completed", order_id=f"o-{i}", products=[{"sku": "Y"}]) for i in (2, 3)))
    assert activities.send_step(send_input(person, "welcome", 2, "welcome_2")).status == "sent"
    activities._sales_counted_at -= SALES_REFRESH.total_seconds() + 1  # the refresh period has passed
    assert activities.send_step(send_input(person, "welcome", 3, "welcome_2")).status == "sent"
    first, second, third = (parts(m)[0] for m in smtp.mailbox.wait_for(3))
    assert "Yuzu Mist" not in first and "Yuzu Mist" not in second  # Y's orders not counted yet
    assert third.index("Yuzu Mist") < third.index("Xylo Balm")  # counted: 2 orders against 1
    assert db.rows("SELECT sku, recent_orders FROM products ORDER BY sku") == [("X", 1), ("Y", 2)]


def test_category_picks_survive_a_shop_with_more_bestsellers_than_are_read(db):
    """Bestsellers and the shopper's category are read as separate ranked lists: a category's
    unranked, unsold products must not lose their place to the shop's many ranked bestsellers."""
    put_catalog(
        db,
        *(
            {"sku": f"B{i}", "name": f"Best {i}", "category": "candles", "bestseller_rank": i + 1}
            for i in range(CATALOG_PICKS_SCAN + 5)
        ),
        {"sku": "CALM", "name": "Calm Cream", "category": "skincare"},
        {"sku": "SER", "name": "Night Serum", "category": "skincare"},
    )
    viewed = [HistoryEvent(name="Product Viewed", timestamp=now(), properties={"sku": "SER", "category": "skincare"})]
    with Session(db.engine) as session:
        shown = personalise("welcome", viewed, load_catalog(session, viewed, None), None)
    assert shown.category == "skincare" and [pick.sku for pick in shown.picks] == ["CALM"]


def test_a_merge_during_delivery_logs_the_send_on_the_surviving_person(db):
    """The shopper is merged into another person while the email is on its way: the message and
    its `sent` log line belong to the survivor, not to the person who no longer exists."""
    secondary, primary = seed(db, "dev-s", "sam@example.com"), seed(db, "dev-p", "pat@example.com")

    class MergingChannel:
        def deliver(self, message) -> None:
            with transaction(db.engine) as session:
                merge_people(session, primary, secondary)

    activities = StoreActivities(db.engine, channels={"email": MergingChannel()})
    assert activities.send_step(send_input(secondary, "welcome", 1, "welcome_1")).status == "sent"
    assert db.rows("SELECT person_id, status FROM messages") == [(primary, "sent")]
    assert db.rows("SELECT person_id, kind FROM journey_log") == [(primary, "sent")]


def test_recipient_refused_with_550_marks_the_message_failed_with_the_reason(db, smtp):
    smtp.mailbox.refuse["ada@"] = "550 5.1.1 <ada@example.com>: Recipient address rejected: User unknown"
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, smtp.port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    result = activities.send_step(send)
    assert result.status == "failed"
    assert "550" in result.reason and "User unknown" in result.reason
    assert smtp.mailbox.received == []
    again = activities.send_step(send)  # a retried activity: still one row, nothing re-sent
    assert again == result  # the row's outcome, read back
    with Session(db.engine) as session:
        [listed] = queries.messages_of(session, person)
    assert listed["status"] == "failed" and "550" in listed["reason"] and listed["attempts"] == 1
    log = db.rows("SELECT kind, reason, step FROM journey_log WHERE person_id=:p", p=person)
    assert [(kind, step) for kind, _, step in log] == [("failed", 1)] and "550" in log[0][1]


def test_temporary_451_on_recipient_is_retried_not_failed(db, smtp):
    smtp.mailbox.refuse["ada@"] = "451 4.7.1 Greylisted, try again later"
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, smtp.port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    with pytest.raises(TransientDeliveryError, match="451"):
        activities.send_step(send)
    smtp.mailbox.refuse.clear()
    assert activities.send_step(send).status == "sent"
    assert len(smtp.mailbox.wait_for(1)) == 1


def test_server_down_then_up_delivers_exactly_once(db):
    port = free_port()
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    for _ in range(2):  # Temporal retries the activity while the relay is down
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            activities.send_step(send)
    row = db.rows("SELECT status, attempts, reason FROM messages")
    assert [(status, attempts) for status, attempts, _ in row] == [("pending", 2)]
    assert row[0][2].startswith("attempt 2 failed, retrying: SMTP server 127.0.0.1")
    server = SmtpServer(port).start()
    try:
        first = activities.send_step(send)
        second = activities.send_step(send)  # e.g. the worker died after delivering, before reporting
        assert first.status == "sent" and second == first
        assert len(server.mailbox.wait_for(1)) == 1
        assert db.scalar("SELECT count(*) FROM messages") == 1
        assert db.rows("SELECT status, attempts FROM messages") == [("sent", 3)]
    finally:
        server.stop()


# --- what changed while a send was retried ------------------------------------------------------


def _suppress(db) -> None:
    with db.engine.begin() as conn:  # what Customer.io's suppress call sets
        conn.execute(text("UPDATE people SET suppressed = :t"), {"t": True})


MEANWHILE = {
    "purchased": (
        lambda db: _ingest(db, track("dev-cart", "Order Completed", order_id="o-1", cart_id="c1", value=101)),
        "purchased: order o-1 at ",
    ),
    "unsubscribed": (
        lambda db: _ingest(db, identify("dev-cart", "ada@example.com", unsubscribed=True)),
        "unsubscribed from email",
    ),
    "suppressed": (_suppress, "suppressed"),
    "cart emptied": (
        lambda db: _ingest(
            db,
            track("dev-cart", "Removed from Cart", cart_id="c1", sku="SER-30", variant="30 ml"),
            track("dev-cart", "Removed from Cart", cart_id="c1", sku="CLN-01"),
        ),
        "cart no longer open",
    ),
}


@pytest.mark.parametrize("change", MEANWHILE)
def test_relay_down_then_shopper_changes_then_relay_up_sends_nothing(db, change):
    port = free_port()
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    for _ in range(2):
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            activities.send_step(send)
    apply, reason = MEANWHILE[change]
    apply(db)
    server = SmtpServer(port).start()
    try:
        result = activities.send_step(send)
        assert result.status == "skipped" and result.reason.startswith(reason)
        again = activities.send_step(send)  # Temporal retrying once more: still nothing
        assert (again.message_id, again.status, again.reason) == (result.message_id, "skipped", result.reason)
        assert server.mailbox.received == []
    finally:
        server.stop()
    [(status, attempts, why)] = db.rows("SELECT status, attempts, reason FROM messages")
    assert (status, attempts) == ("skipped", 2) and why.startswith(reason)
    log = db.rows("SELECT kind, reason, step FROM journey_log WHERE kind = 'skipped'")
    assert [(kind, step) for kind, _, step in log] == [("skipped", 1)] and log[0][1].startswith(reason)


def test_the_first_attempt_checks_too_and_an_erased_person_gets_nothing_written(db, smtp):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, smtp.port))
    _suppress(db)  # between the journey's check and its send
    assert (
        activities.send_step(send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")).status
        == "skipped"
    )
    with transaction(db.engine) as session:
        delete_person(session, person)
    gone = activities.send_step(send_input(person, "cart_recovery", 2, "cart_recovery_2", cart_id="c1"))
    assert (gone.status, gone.reason) == ("skipped", "person deleted")
    assert smtp.mailbox.received == [] and db.scalar("SELECT count(*) FROM messages") == 0
    assert db.scalar("SELECT count(*) FROM journey_log") == 0


# --- nothing to show ---------------------------------------------------------------------------


def test_browse_with_everything_viewed_sold_out_or_unknown_is_skipped_as_out_of_stock(db, smtp):
    put_catalog(
        db,
        {"sku": "P1", "name": "Product 1", "category": "serums", "in_stock": False},
        {"sku": "B1", "name": "Bestseller", "bestseller_rank": 1},
    )
    person = seed(
        db,
        "dev-o",
        "otto@example.com",
        track("dev-o", "Product Viewed", sku="P1", category="serums"),
        track("dev-o", "Product Viewed", sku="NOT-IN-CATALOG"),
    )
    with transaction(db.engine) as session:  # the storefront's view fed the catalog; it is unknown again
        session.execute(text("DELETE FROM products WHERE sku = 'NOT-IN-CATALOG'"))
    activities = activities_for(db, delivery_settings(db, smtp.port))
    result = activities.send_step(send_input(person, "browse_recovery", 1, "browse_recovery_1"))
    assert (result.status, result.reason) == ("skipped", "out of stock: nothing they viewed is in stock")
    assert activities.send_step(send_input(person, "browse_recovery", 1, "browse_recovery_1")) == result
    assert smtp.mailbox.received == []
    assert db.rows("SELECT status, reason, attempts FROM messages") == [
        ("skipped", "out of stock: nothing they viewed is in stock", 0)
    ]
    assert db.rows("SELECT kind, reason, step FROM journey_log") == [
        ("skipped", "out of stock: nothing they viewed is in stock", 1)
    ]
    messages = reports.summary(db.engine, Policy())["messages"]
    # One skip: the message row and its journey-log line are the same step, counted once.
    assert messages["skipped"] == 1
    assert [(r["outcome"], r["reason"], r["count"]) for r in messages["by_reason"]] == [("skipped", "out of stock", 1)]


def test_cart_whose_every_line_sold_out_is_skipped_as_out_of_stock(db, smtp):
    person = cart_person(db)
    put_catalog(db, {"sku": "SER-30", "variant": "30 ml", "in_stock": False}, {"sku": "CLN-01", "in_stock": False})
    result = activities_for(db, delivery_settings(db, smtp.port)).send_step(
        send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    )
    assert (result.status, result.reason) == ("skipped", "out of stock: every item in their cart has sold out")
    assert smtp.mailbox.received == []
    assert db.rows("SELECT kind, reason FROM journey_log") == [("skipped", result.reason)]


def test_cart_with_one_line_still_in_stock_is_sent(db, smtp):
    person = cart_person(db)
    put_catalog(db, {"sku": "SER-30", "variant": "30 ml", "in_stock": False})
    result = activities_for(db, delivery_settings(db, smtp.port)).send_step(
        send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    )
    assert result.status == "sent" and len(smtp.mailbox.wait_for(1)) == 1


# --- a template that fails at send time ----------------------------------------------------------


def test_template_error_the_start_up_check_missed_fails_the_message_once(db, smtp, tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    html = folder / "cart_recovery_1.html.j2"  # a branch only a cart of three or more lines reaches
    content, end, rest = html.read_text().rpartition("{% endblock %}")
    html.write_text(f"{content}{{% if items|length > 2 %}}{{{{ big_cart_note }}}}{{% endif %}}\n{end}{rest}")
    renderer = Renderer(folder)
    renderer.check([("cart_recovery_1", "email")])  # the samples never have three lines
    person = cart_person(db)
    _ingest(db, track("dev-cart", "Added to Cart", cart_id="c1", sku="MSK-02", name="Calm Mask", price=28, quantity=1))
    settings = delivery_settings(db, smtp.port)
    activities = StoreActivities(
        db.engine, channels=channels_from_settings(settings), renderer=renderer, settings=settings
    )
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    result = activities.send_step(send)  # returns: Temporal does not retry it
    assert result.status == "failed"
    assert result.reason == (
        "template error: templates/cart_recovery_1.html.j2 line 15: UndefinedError: 'big_cart_note' is undefined"
    )
    assert activities.send_step(send) == result and smtp.mailbox.received == []
    assert db.rows("SELECT status, reason, attempts FROM messages") == [("failed", result.reason, 0)]
    assert db.rows("SELECT kind, reason, step FROM journey_log") == [("failed", result.reason, 1)]


# --- SMS ---------------------------------------------------------------------------------------


def sms_person(db, consent: bool = True) -> str:
    return seed(
        db,
        "dev-s",
        None,
        track("dev-s", "Added to Cart", cart_id="c9", sku="SER-30", name="Night Serum", price=64),
        phone="+1 415 555 0134",
        sms_consent=consent,
        first_name="Sam",
    )


def test_sms_through_the_webhook_with_idempotency_key_and_token(db, sms):
    person = sms_person(db)
    activities = activities_for(db, delivery_settings(db, sms_url=sms.url))
    check = activities.check_before_send(
        SendCheckInput(person_id=person, route="cart_recovery", channel="sms", cart_id="c9")
    )
    assert check.channel_blocked is None and check.reachable
    assert "+14155550134" not in check.model_dump_json()  # the address stays in the store
    send = send_input(person, "cart_recovery", 4, "cart_recovery_sms", channel="sms", cart_id="c9")
    result = activities.send_step(send)
    assert result.status == "sent"
    [call] = sms.calls
    assert call.path == "/sms" and call.headers["idempotency-key"] == f"cart_recovery-{person}-1:4"
    assert call.headers["authorization"] == "Bearer sms-secret"
    assert set(call.body) == {"to", "body"} and call.body["to"] == "+14155550134"
    assert call.body["body"].startswith("Glow Skincare: Sam, your cart ($64.00) is saved.")
    assert "Reply STOP to opt out." in call.body["body"]
    assert activities.send_step(send) == result and len(sms.calls) == 1


def test_sms_needs_consent(db, sms):
    person = sms_person(db, consent=False)
    activities = activities_for(db, delivery_settings(db, sms_url=sms.url))
    check = activities.check_before_send(
        SendCheckInput(person_id=person, route="cart_recovery", channel="sms", cart_id="c9")
    )
    assert check.channel_blocked == "no SMS consent" and check.suppressed is None
    email_check = activities.check_before_send(
        SendCheckInput(person_id=person, route="cart_recovery", channel="email", cart_id="c9")
    )
    assert email_check.channel_blocked == "no email address"


def test_webhook_4xx_fails_permanently_with_the_reason(db, sms):
    sms.replies.append((400, '{"error": "invalid destination number"}'))
    person = sms_person(db)
    activities = activities_for(db, delivery_settings(db, sms_url=sms.url))
    result = activities.send_step(send_input(person, "cart_recovery", 4, "cart_recovery_sms", "sms", "c9"))
    assert result.status == "failed" and "400" in result.reason and "invalid destination number" in result.reason
    assert db.rows("SELECT kind FROM journey_log WHERE person_id=:p", p=person) == [("failed",)]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_webhook_5xx_and_429_are_retried_then_deliver_once(db, sms, status):
    sms.replies.append((status, "try later"))
    person = sms_person(db)
    activities = activities_for(db, delivery_settings(db, sms_url=sms.url))
    send = send_input(person, "cart_recovery", 4, "cart_recovery_sms", "sms", "c9")
    with pytest.raises(TransientDeliveryError, match=str(status)):
        activities.send_step(send)
    assert activities.send_step(send).status == "sent"
    assert len(sms.calls) == 2 and len({c.headers["idempotency-key"] for c in sms.calls}) == 1
    assert db.rows("SELECT status, attempts FROM messages") == [("sent", 2)]


def test_webhook_unreachable_is_transient(db):
    channel = SmsWebhookChannel(f"http://127.0.0.1:{free_port()}/sms", timeout=2)
    person = sms_person(db)
    activities = StoreActivities(db.engine, channels={"sms": channel}, settings=delivery_settings(db))
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        activities.send_step(send_input(person, "cart_recovery", 4, "cart_recovery_sms", "sms", "c9"))


# --- settings ----------------------------------------------------------------------------------


def test_channels_default_to_the_outbox(db):
    channels = channels_from_settings(settings_for(db.url))
    assert all(isinstance(channel, OutboxChannel) for channel in channels.values())


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(smtp_from=""), "BREADCRUMB_SMTP_FROM is required"),
        (dict(smtp_from="not an address"), "BREADCRUMB_SMTP_FROM must be one address"),
        (dict(smtp_url="http://mail.example"), "must start with smtp:// or smtps://"),
        (dict(smtp_url="smtps://mail.example", smtp_starttls="always"), "cannot be combined with smtps://"),
        (dict(public_base_url=""), "BREADCRUMB_PUBLIC_BASE_URL"),
        (dict(shop_url=""), "BREADCRUMB_SHOP_URL"),
        (dict(sms_webhook_url="ftp://x"), r"BREADCRUMB_SMS_WEBHOOK_URL must be an http\(s\) URL"),
    ],
)
def test_bad_delivery_settings_fail_at_start_up_naming_the_variable(db, changes, message):
    settings = delivery_settings(db, 2525)
    for key, value in changes.items():
        setattr(settings, key, value)
    with pytest.raises(DeliveryConfigError, match=message):
        channels_from_settings(settings)


def test_smtp_url_forms():
    plain = SmtpConfig.from_url("smtp://user%40shop:p%3Ass@mail.example")
    assert (plain.hostname, plain.port, plain.username, plain.password) == ("mail.example", 587, "user@shop", "p:ss")
    assert plain.start_tls is None and not plain.use_tls
    assert SmtpConfig.from_url("smtp://mail.example:25", starttls="never").start_tls is False
    assert SmtpConfig.from_url("smtp://mail.example", starttls="always").start_tls is True
    tls = SmtpConfig.from_url("smtps://mail.example")
    assert (tls.port, tls.use_tls, tls.start_tls) == (465, True, False)


def test_starttls_to_a_relay_behind_a_private_ca(db, tmp_path):
    """The relay offers STARTTLS with a certificate from a private CA and refuses mail in clear:
    trusting that CA (BREADCRUMB_SMTP_CA_FILE) the email goes out encrypted; without it the
    certificate is refused and nothing is sent; a client that never upgrades is refused too."""
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=relay",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    relay = SmtpServer(free_port(), tls_context=context).start()
    try:
        person = cart_person(db)
        step = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
        for starttls, ca_file, refused in (("auto", "", "certificate verify failed"), ("never", str(cert), "STARTTLS")):
            untrusted = activities_for(
                db, delivery_settings(db, relay.port, smtp_starttls=starttls, smtp_ca_file=ca_file)
            )
            with pytest.raises(TransientDeliveryError, match=refused):
                untrusted.send_step(step)
        trusted = activities_for(db, delivery_settings(db, relay.port, smtp_starttls="always", smtp_ca_file=str(cert)))
        assert trusted.send_step(step).status == "sent"
        assert len(relay.mailbox.wait_for(1)) == 1 and relay.mailbox.encrypted == [True]
    finally:
        relay.stop()
    with pytest.raises(DeliveryConfigError, match="SMTP_CA_FILE"):
        SmtpConfig.from_url("smtp://mail.example", ca_file=str(tmp_path / "missing.pem"))


def test_invalid_recipient_address_is_permanent():
    channel = SmtpChannel(SmtpConfig("127.0.0.1", 1), FROM)

    class Fake:
        recipient, subject, body, html = "not an address", "s", "b", ""
        idempotency_key, unsubscribe_url = "k:1", None
        created_at = now()

    with pytest.raises(PermanentDeliveryError, match="invalid recipient"):
        channel.deliver(Fake())


# --- timezone ----------------------------------------------------------------------------------


def test_quiet_hours_use_the_timezone_from_segment_context(db):
    from datetime import datetime

    from journeys.guardrails import earliest_send

    who = identify("dev-tz", "tokyo@example.com")
    who.context = {"timezone": "Asia/Tokyo"}
    ingest(db.engine, [who, identify("dev-tz2", "nowhere@example.com")], Policy(), api="test", endpoint="test")
    activities = StoreActivities(db.engine, settings=delivery_settings(db))
    ids = {
        e: db.scalar("SELECT person_id FROM identifiers WHERE value=:v", v=e)
        for e in ("tokyo@example.com", "nowhere@example.com")
    }
    tokyo = activities.check_before_send(
        SendCheckInput(person_id=ids["tokyo@example.com"], route="welcome", channel="email")
    )
    unknown = activities.check_before_send(
        SendCheckInput(person_id=ids["nowhere@example.com"], route="welcome", channel="email")
    )
    assert tokyo.timezone == "Asia/Tokyo" and unknown.timezone is None
    policy = Policy(default_timezone="Europe/London")  # quiet 21:00–08:00
    ten_pm_tokyo = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)  # 22:00 in Tokyo, 13:00 in London
    assert earliest_send(ten_pm_tokyo, None, policy, tokyo.timezone).at == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert earliest_send(ten_pm_tokyo, None, policy, unknown.timezone).waits == []  # the default zone: daytime
