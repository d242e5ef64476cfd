"""Unsubscribe links: signed tokens (forged, altered, cross-person and other-key tokens refused),
`GET /u/{token}` over HTTP (a confirmation page) and its confirm button, RFC 8058 one-click POST, resubscribe, and end to end: the link in a
delivered email unsubscribes the person and the journey's next step is skipped with the reason."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import uuid
from datetime import timedelta

import httpx
import pytest

from conftest import PAYLOAD_KEYS, UNSUBSCRIBE_SECRET, free_port, settings_for, venv_binary
from delivery_helpers import SmtpServer, parts
from journey_harness import Harness, identify
from journeys.policy import parse_policy
from store.settings import Settings
from store.unsubscribe import make_token, read_token
from worker.worker import build_worker

KEY = UNSUBSCRIBE_SECRET.encode()  # what the served app verifies with
PERSON_A = "11111111-1111-4111-8111-111111111111"
PERSON_B = "22222222-2222-4222-8222-222222222222"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_round_trip_and_tampering():
    token = make_token(b"k" * 32, PERSON_A, "email", "m-1")
    claim = read_token(b"k" * 32, token)
    assert (claim.person_id, claim.channel, claim.message_id) == (PERSON_A, "email", "m-1")
    payload, tag = token.split(".")
    other_payload = b64(f"{PERSON_B}|email|m-1".encode())
    assert read_token(b"k" * 32, f"{other_payload}.{tag}") is None  # someone else, same signature
    assert read_token(b"x" * 32, token) is None  # another shop's key
    assert read_token(b"k" * 32, token[:-2]) is None
    assert read_token(b"k" * 32, f"{payload}.{tag}x") is None
    for junk in ("", ".", "abc", "a.b.c", "%%%.###", "A" * 600):
        assert read_token(b"k" * 32, junk) is None
    assert read_token(b"", token) is None
    sms = read_token(b"k" * 32, make_token(b"k" * 32, PERSON_A, "sms"))
    assert (sms.channel, sms.message_id) == ("sms", None)
    with pytest.raises(ValueError):
        make_token(b"k", PERSON_A, "pigeon")


def person_id(api, email: str) -> str:
    return api.person(email=email)["person_id"]


def subscribed(api, email: str) -> bool:
    return not api.person(email=email)["email_unsubscribed"]


def confirm_link(api, token: str) -> httpx.Response:
    """What a person does: open the link (a page that changes nothing), press its button."""
    page = api.http.get(f"/u/{token}")
    assert page.status_code == 200 and "Unsubscribe from" in page.text, page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    return api.http.post(action)


def test_get_link_changes_nothing_and_its_confirm_button_unsubscribes_that_person_only(api):
    for who in ("ann@example.com", "ben@example.com"):
        assert api.segment("identify", {"anonymousId": who, "traits": {"email": who}}).status_code == 200
    ann = person_id(api, "ann@example.com")
    token = make_token(KEY, ann, "email", "msg-1")
    for _ in range(3):  # a mail scanner, a link preview, the person: none of them unsubscribes by looking
        page = api.http.get(f"/u/{token}")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert subscribed(api, "ann@example.com")
    response = confirm_link(api, token)
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert not subscribed(api, "ann@example.com") and subscribed(api, "ben@example.com")
    events = [e for e in api.person(email="ann@example.com")["events"] if e["name"] == "Unsubscribed"]
    assert [e["properties"] for e in events] == [{"channel": "email", "via": "link", "message_id": "msg-1"}]
    again = confirm_link(api, token)
    assert again.status_code == 200  # idempotent; no second event
    assert len([e for e in api.person(email="ann@example.com")["events"] if e["name"] == "Unsubscribed"]) == 1


def test_forged_and_cross_person_tokens_are_refused(api):
    for who in ("cat@example.com", "dan@example.com"):
        api.segment("identify", {"anonymousId": who, "traits": {"email": who}})
    cat, dan = person_id(api, "cat@example.com"), person_id(api, "dan@example.com")
    _, cat_tag = make_token(KEY, cat, "email").split(".")
    attempts = [
        f"{b64(f'{dan}|email|'.encode())}.{cat_tag}",  # Cat's signature on Dan's id
        make_token(b"guessed-secret", dan, "email"),  # signed with the wrong key
        make_token(KEY, dan, "email")[:-3],  # truncated
        f"{b64(f'{dan}|email|'.encode())}.",  # unsigned
        "not-a-token",
    ]
    for token in attempts:
        response = api.http.get(f"/u/{token}")
        assert response.status_code == 400, token
        assert "This link is not valid" in response.text
        assert api.http.post(f"/u/{token}").status_code == 400
    assert subscribed(api, "cat@example.com") and subscribed(api, "dan@example.com")


def test_one_click_post_and_resubscribe(api):
    api.segment("identify", {"anonymousId": "eve", "traits": {"email": "eve@example.com"}})
    token = make_token(KEY, person_id(api, "eve@example.com"), "email")
    response = api.http.post(
        f"/u/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and response.text == "unsubscribed"
    assert not subscribed(api, "eve@example.com")
    back = api.http.post(f"/u/{token}/resubscribe")
    assert back.status_code == 200 and "Welcome back" in back.text
    assert subscribed(api, "eve@example.com")


def test_a_valid_token_for_a_deleted_person_changes_nothing(api):
    response = api.http.get(f"/u/{make_token(KEY, PERSON_A, 'email')}")
    assert response.status_code == 404 and "Nothing to unsubscribe" in response.text


def test_sms_link_withdraws_sms_consent(api):
    api.server(
        "identify",
        {"anonymousId": "fay", "traits": {"email": "fay@example.com", "phone": "+14155550199", "sms_consent": True}},
    )
    assert api.person(email="fay@example.com")["sms_consent"] is True
    token = make_token(KEY, person_id(api, "fay@example.com"), "sms")
    assert confirm_link(api, token).status_code == 200
    profile = api.person(email="fay@example.com")
    assert profile["sms_consent"] is False and profile["email_unsubscribed"] is False


# --- end to end: delivered email → link → next step skipped ----------------------------------


async def test_link_from_a_delivered_email_unsubscribes_and_the_next_step_is_skipped(env, api, served, db):
    policy = parse_policy(
        {
            "min_hours_between_messages": 0,
            "quiet_hours": {"enabled": False},
            "hub_idle_timeout": "1h",
            "journeys": {
                "cart_recovery": {"steps": [{"delay": "1h", "template": "cart_recovery_1"}]},
                "browse_recovery": {"steps": [{"delay": "1h", "template": "browse_recovery_1"}]},
                "welcome": {
                    "steps": [
                        {"delay": "5m", "template": "welcome_1"},
                        {"delay": "1d", "template": "welcome_2"},
                        {"delay": "1d", "template": "welcome_3"},
                    ]
                },
            },
        }
    )
    smtp = SmtpServer(free_port()).start()
    settings = settings_for(
        db.url,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        smtp_from="Shop <hi@shop.example>",
        public_base_url=served.url,
        shop_url="https://shop.example",
    )
    settings.__dict__["policy"] = policy
    try:
        async with build_worker(env.client, db.engine, settings):
            shop = Harness(env.client, db.engine, settings, policy, env=env)
            await shop.shop(identify("dev-u", "una@example.com", first_name="Una"))
            person = shop.person_id("una@example.com")
            journey = await shop.journey_of(person)
            await shop.skip(timedelta(minutes=6))
            [mail] = await asyncio.to_thread(smtp.mailbox.wait_for, 1)
            assert mail["Subject"] == "Welcome, Una!"
            link = mail["List-Unsubscribe"].strip().strip("<>")
            text, html = parts(mail)
            assert link.startswith(f"{served.url}/u/") and link in text and link in html

            clicked = await asyncio.to_thread(confirm_link, api, link.rsplit("/", 1)[1])
            assert clicked.status_code == 200 and "You are unsubscribed" in clicked.text
            assert api.person(email="una@example.com")["email_unsubscribed"] is True

            result = await shop.journey_result(journey)
        assert result.status == "exited"
        assert len(smtp.mailbox.received) == 1  # nothing after the click
        log = [(kind, reason, step) for kind, reason, _, step in shop.log(person)]
        assert ("skipped", "unsubscribed from email: step 2 (welcome_2) not sent", 2) in log
        assert ("exit", "unsubscribed from email: no later step can reach them", 2) in log
        messages = shop.messages(person)
        assert [(m.step, m.status) for m in messages] == [(1, "sent")]
    finally:
        smtp.stop()


def test_segment_unsubscribed_trait_and_customerio_suppress_block_sends(api, db):
    from activities.store_activities import StoreActivities
    from workflows.models import SendCheckInput

    api.server("identify", {"anonymousId": "gus", "traits": {"email": "gus@example.com", "unsubscribed": True}})
    api.segment("identify", {"anonymousId": "hal", "traits": {"email": "hal@example.com"}})
    assert api.cio("POST", "customers/hal@example.com/suppress").status_code == 200
    activities = StoreActivities(db.engine, settings=settings_for(db.url))

    def check(email: str):
        return activities.check_before_send(
            SendCheckInput(person_id=person_id(api, email), route="welcome", channel="email")
        )

    gus, hal = check("gus@example.com"), check("hal@example.com")
    assert gus.channel_blocked == "unsubscribed from email" and gus.suppressed is None
    assert hal.suppressed == "suppressed"
    api.server("identify", {"anonymousId": "gus", "traits": {"email": "gus@example.com", "unsubscribed": False}})
    assert check("gus@example.com").channel_blocked is None


# --- merges, rotation, and suppression that outlives deletion (issue 13) -----------------------


def _message_for(db, person: str) -> str:
    """A message sent to `person` (what their unsubscribe link names)."""
    from sqlmodel import Session

    from store.models import Message, utcnow

    message_id = str(uuid.uuid4())
    with Session(db.engine) as session:
        session.add(
            Message(
                id=message_id,
                person_id=person,
                workflow_id=f"welcome-{person}",
                journey="welcome",
                step=1,
                template="welcome_1",
                channel="email",
                recipient="-",
                status="sent",
                idempotency_key=f"welcome-{person}:1",
                created_at=utcnow(),
                sent_at=utcnow(),
            )
        )
        session.commit()
    return message_id


def test_a_link_mailed_before_a_merge_unsubscribes_the_survivor(api, db):
    api.cio("PUT", "customers/kim@example.com", {"email": "kim@example.com"})
    api.segment("identify", {"anonymousId": "kim-phone", "traits": {"email": "kim.old@example.com"}})
    absorbed = person_id(api, "kim.old@example.com")
    token = make_token(KEY, absorbed, "email", _message_for(db, absorbed))
    merged = api.cio(
        "POST",
        "merge_customers",
        {"primary": {"email": "kim@example.com"}, "secondary": {"email": "kim.old@example.com"}},
    )
    assert merged.status_code == 200
    survivor = person_id(api, "kim@example.com")
    assert survivor != absorbed and api.admin(f"people/{absorbed}").status_code == 404

    assert subscribed(api, "kim@example.com")
    assert api.http.get(f"/u/{token}").status_code == 200 and subscribed(api, "kim@example.com")
    response = api.http.post(
        f"/u/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and response.text == "unsubscribed"
    assert not subscribed(api, "kim@example.com")
    # A link that names only the absorbed person (no message) has nobody left to unsubscribe.
    assert api.http.post(f"/u/{make_token(KEY, absorbed, 'email')}").status_code == 404


def test_links_signed_with_a_previous_secret_still_work_after_a_rotation():
    old, new = b"secret-2025", b"secret-2026"
    token = make_token(old, PERSON_A, "email", "m-1")
    rotated = Settings(unsubscribe_secret="secret-2026, secret-2025")
    assert rotated.unsubscribe_key == new  # new links are signed with the newest
    assert read_token(rotated.unsubscribe_keys, token).person_id == PERSON_A
    assert read_token(rotated.unsubscribe_keys, make_token(new, PERSON_A)).person_id == PERSON_A
    assert read_token([new], token) is None  # once the old secret is dropped, its links stop working


def test_real_delivery_without_an_unsubscribe_secret_refuses_to_start(tmp_path):
    from activities.channels import DeliveryConfigError, channels_from_settings
    from api.app import create_app

    settings = settings_for(
        f"sqlite:///{tmp_path / 'x.db'}",
        unsubscribe_secret=[],
        smtp_url="smtp://127.0.0.1:2525",
        smtp_from="Shop <hi@shop.example>",
        public_base_url="https://crumbs.example",
        shop_url="https://shop.example",
        admin_token="an-admin-token",
    )
    for start in (create_app, channels_from_settings):
        with pytest.raises(DeliveryConfigError, match="BREADCRUMB_UNSUBSCRIBE_SECRET"):
            start(settings)
    # As an operator sees it: one line naming the variable, no traceback.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")},
        "BREADCRUMB_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "BREADCRUMB_SMTP_URL": "smtp://127.0.0.1:2525",
        "BREADCRUMB_SMTP_FROM": "Shop <hi@shop.example>",
        "BREADCRUMB_PAYLOAD_KEYS": PAYLOAD_KEYS,
    }
    done = subprocess.run(
        [venv_binary("breadcrumb"), "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "breadcrumb api: BREADCRUMB_UNSUBSCRIBE_SECRET is required with real delivery (SMTP_URL or SMS_WEBHOOK_URL): "
        "it verifies the unsubscribe links in sent messages"
    ]


def _check(db, person: str, channel: str = "email"):
    from activities.store_activities import StoreActivities
    from workflows.models import SendCheckInput

    activities = StoreActivities(db.engine, settings=settings_for(db.url))
    return activities.check_before_send(SendCheckInput(person_id=person, route="welcome", channel=channel))


def test_unsubscribed_then_deleted_then_back_through_a_server_event_gets_no_message(api, db):
    api.segment("identify", {"anonymousId": "lou", "traits": {"email": "lou@example.com"}})
    api.segment("identify", {"anonymousId": "max", "traits": {"email": "max@example.com"}})
    lou = person_id(api, "lou@example.com")
    assert api.http.post(f"/u/{make_token(KEY, lou, 'email')}").status_code == 200
    for email in ("lou@example.com", "max@example.com"):
        assert api.cio("DELETE", f"customers/{email}").status_code == 200
    assert db.scalar("SELECT count(*) FROM people") == 0
    kept = db.rows("SELECT digest, kind, reason FROM suppressions")
    assert [(kind, reason) for _, kind, reason in kept] == [("email", "unsubscribed")]
    assert not any("lou" in digest for digest, _, _ in kept)  # a hash, never the address

    for email in ("LOU@example.com ", "max@example.com"):  # the shop's backend sends them again
        assert api.cio("PUT", f"customers/{email.strip()}", {"email": email, "first_name": "Back"}).status_code == 200
    returning = _check(db, person_id(api, "lou@example.com"))
    assert returning.suppressed == "email on the suppression list (unsubscribed before their data was deleted)"
    assert _check(db, person_id(api, "max@example.com")).suppressed is None  # never unsubscribed: welcome back


def test_a_suppressed_persons_phone_stays_suppressed_after_deletion(api, db):
    api.segment(
        "identify",
        {"userId": "ned", "traits": {"email": "ned@example.com", "phone": "+14155550142", "sms_consent": True}},
    )
    assert api.cio("POST", "customers/ned@example.com/suppress").status_code == 200
    assert api.cio("DELETE", "customers/ned@example.com").status_code == 200
    api.segment("identify", {"userId": "ned-2", "traits": {"phone": "+1 415 555 0142", "sms_consent": True}})
    back = api.admin("people", phone="+14155550142").json()["person_id"]
    assert (
        _check(db, back, "sms").suppressed == "phone on the suppression list (suppressed before their data was deleted)"
    )
