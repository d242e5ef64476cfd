"""Operations hygiene (issue 13), over real HTTP on SQLite and PostgreSQL: the access log of a real
`breadcrumb api` run holds no email, phone or token; CORS answers only on the tracking routes and
the snippet; a burst over a key's rate limit gets 429 + Retry-After in each front door's shape while
every accepted event is stored; /metrics and the demo store can be turned off."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from api.access_log import redact
from conftest import (
    ADMIN_TOKEN,
    CIO_KEY,
    CIO_SITE,
    PAYLOAD_KEYS,
    UNSUBSCRIBE_SECRET,
    WRITE_KEY,
    ServedApp,
    free_port,
    settings_for,
    venv_binary,
)
from store.settings import REPO_ROOT
from store.unsubscribe import make_token

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_redaction_of_paths_and_query_strings():
    assert redact("/api/v1/customers/ada%40shop.example/events") == "/api/v1/customers/[redacted]/events"
    assert redact("/api/v1/customers/42") == "/api/v1/customers/[redacted]"
    assert (
        redact("/admin/people?email=ada@shop.example&phone=%2B14155550100")
        == "/admin/people?email=[redacted]&phone=[redacted]"
    )
    assert redact("/u/abc.def/confirm") == "/u/[redacted]/confirm"
    assert redact("/admin/anything/ada@shop.example") == "/admin/anything/[redacted]"
    assert redact("/admin/anything/+1 (415) 555-0100") == "/admin/anything/[redacted]"
    assert redact("/v1/track") == "/v1/track" and redact("/admin/people/3f2a-11") == "/admin/people/3f2a-11"


class RunningApi:
    """`breadcrumb api` in its own process, as an operator runs it, its log in a file."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")},
            "BREADCRUMB_DATABASE_URL": database_url,
            "BREADCRUMB_WRITE_KEYS": WRITE_KEY,
            "BREADCRUMB_ADMIN_TOKEN": ADMIN_TOKEN,
            "BREADCRUMB_CIO_SITE_ID": CIO_SITE,
            "BREADCRUMB_CIO_API_KEY": CIO_KEY,
            "BREADCRUMB_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
            "BREADCRUMB_PAYLOAD_KEYS": PAYLOAD_KEYS,
            "BREADCRUMB_DISPATCH": "false",
        }
        self.log = log
        self.output = log.open("w")
        self.process = subprocess.Popen(
            [venv_binary("breadcrumb"), "api", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> RunningApi:
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"the API did not start:\n{self.log.read_text()}")

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.output.close()


def test_the_access_log_of_a_real_run_holds_no_email_phone_or_token(db, tmp_path):
    email, phone = f"secret.shopper.{uuid.uuid4().hex[:6]}@example.com", "+14155550177"
    with RunningApi(db.url, tmp_path / "api.log") as running, httpx.Client(base_url=running.url, timeout=30) as http:
        assert (
            http.put(
                f"/api/v1/customers/{email}", json={"email": email, "phone": phone}, auth=(CIO_SITE, CIO_KEY)
            ).status_code
            == 200
        )
        assert (
            http.post(
                f"/api/v1/customers/{email}/events", json={"name": "Product Viewed"}, auth=(CIO_SITE, CIO_KEY)
            ).status_code
            == 200
        )
        found = http.get("/admin/people", params={"email": email}, headers=ADMIN)
        assert found.status_code == 200
        person = found.json()["person_id"]
        assert http.get("/admin/people", params={"phone": phone}, headers=ADMIN).status_code == 200
        token = make_token(UNSUBSCRIBE_SECRET.encode(), person, "email", str(uuid.uuid4()))
        assert http.get(f"/u/{token}").status_code == 200
        assert http.post(f"/u/{token}/confirm").status_code == 200
        assert http.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click").status_code == 200
        assert http.get(f"/admin/people/{person}", headers=ADMIN).json()["email_unsubscribed"] is True
    log = (tmp_path / "api.log").read_text()
    requests = [line for line in log.splitlines() if '" 200' in line]
    assert len(requests) >= 8, log  # the access log is on: the requests are there …
    assert "/api/v1/customers/[redacted]/events" in log and "/u/[redacted]/confirm" in log
    assert "/admin/people?email=[redacted]" in log
    for secret in (
        email,
        email.replace("@", "%40"),
        email.split("@")[0],
        phone,
        phone[1:],
        token,
        token.split(".")[0],
        token.split(".")[1],
        ADMIN_TOKEN,
        CIO_KEY,
    ):
        assert secret not in log, secret  # … and none of them says who, or carries a secret


@pytest.fixture(scope="module")
def limited(database):
    with ServedApp(settings_for(database.url, rate_limit_browser=5, rate_limit_server=4)) as app:
        yield app


def test_a_burst_over_the_write_keys_limit_gets_429_and_every_accepted_event_is_stored(db, limited):
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        answers = [
            http.post(
                "/v1/track",
                json={
                    "anonymousId": "burst",
                    "event": "Product Viewed",
                    "messageId": f"burst-{n}",
                    "writeKey": WRITE_KEY,
                },
            )
            for n in range(8)
        ]
        refused = [r for r in answers if r.status_code == 429]
        assert [r.status_code for r in answers].count(200) == 5 and len(refused) == 3
        for response in refused:
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.json()["success"] is False and "rate limit" in response.json()["error"]
        accepted = {f"burst-{n}" for n, r in enumerate(answers) if r.status_code == 200}
        stored = {row[0] for row in db.rows("SELECT message_id FROM events WHERE anonymous_id = 'burst'")}
        assert stored == accepted
        # Another key has its own budget; Customer.io answers in its own shape.
        for _ in range(6):  # wrong credentials do not spend the site's budget
            assert http.put("/api/v1/customers/x", json={}, auth=(CIO_SITE, "wrong")).status_code == 401
        cio = [
            http.put(f"/api/v1/customers/c{n}", json={"email": f"c{n}@example.com"}, auth=(CIO_SITE, CIO_KEY))
            for n in range(6)
        ]
        assert [r.status_code for r in cio] == [200] * 4 + [429] * 2
        assert cio[-1].json()["meta"]["errors"][0].startswith("rate limit exceeded") and cio[-1].headers["Retry-After"]
        assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'user_id' AND value LIKE 'c%'") == 4


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


def test_cors_only_on_tracking_routes_and_the_snippet(http):
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    for path in ("/v1/track", "/v1/batch"):
        response = http.options(path, headers=preflight)
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*", path
        assert "DELETE" not in response.headers["access-control-allow-methods"]
    assert (
        http.get("/breadcrumb.js", headers={"Origin": "https://shop.example"}).headers["access-control-allow-origin"]
        == "*"
    )
    for path in ("/admin/people", "/api/v1/customers/x", "/u/token", "/admin/outbox"):
        response = http.options(path, headers={**preflight, "Access-Control-Request-Method": "DELETE"})
        assert "access-control-allow-origin" not in response.headers, path
        response = http.get(path, headers={"Origin": "https://evil.example", **ADMIN})
        assert "access-control-allow-origin" not in response.headers, path


def test_metrics_and_demo_store_can_be_turned_off(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with ServedApp(settings_for(url, auto_migrate=True, metrics_enabled=False, demo_store_enabled=False)) as app:
        assert httpx.get(f"{app.url}/metrics").status_code == 404
        assert httpx.get(f"{app.url}/demo/store/").status_code == 404
        assert httpx.get(f"{app.url}/breadcrumb.js").status_code == 200  # every storefront needs the snippet
    with ServedApp(settings_for(url)) as app:
        assert httpx.get(f"{app.url}/metrics").status_code == 200
        assert httpx.get(f"{app.url}/demo/store/").status_code == 200
