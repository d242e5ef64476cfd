"""Bad input (issue 7, item 4): nothing a client sends makes the API answer 5xx, and every 4xx says
what was wrong in JSON — on SQLite and on PostgreSQL.

1. Schemathesis generates requests from the app's own OpenAPI document for every ingestion and
   admin route (schema-conforming and schema-violating bodies, parameters and paths) and sends them
   over real HTTP to the served app; `BREADCRUMB_FUZZ_EXAMPLES` raises the examples per route (a
   fixed seed; at least 500 cases on each backend that ran, and 1 000 in all when both ran, as in CI).
2. Hand-written cases for what generators rarely hit: deep nesting, a 10 MB body, invalid UTF-8,
   NaN/Infinity, years 1 and 9999, SQL and HTML in names (stored verbatim, rendered escaped), an
   email of 10 000 characters, ids with slashes and unicode, and NUL characters — which PostgreSQL
   refuses in text and jsonb, so the API answers 400 or quarantines them on both backends alike.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections import Counter
from datetime import datetime, UTC

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from conftest import ADMIN_TOKEN, CIO_KEY, CIO_SITE, POSTGRES_URL, WRITE_KEY

EXAMPLES = int(os.environ.get("BREADCRUMB_FUZZ_EXAMPLES", "16"))
FUZZ_MINIMUM = 1000  # generated cases over both backends (the bar for CI)
FUZZ_MINIMUM_PER_BACKEND = FUZZ_MINIMUM // 2  # so a run on SQLite alone (a fresh clone) is held to its share
CALLS: Counter[str] = Counter()  # backend → generated requests sent
OPERATIONS: set[tuple[str, str]] = set()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def credentials(path: str) -> dict[str, str]:
    """The right credentials for each front door: fuzzing is about bodies, not auth (test_security)."""
    if path.startswith("/v1"):
        return {"Authorization": basic(WRITE_KEY, "")}
    if path.startswith("/api/v1"):
        return {"Authorization": basic(CIO_SITE, CIO_KEY)}
    if path.startswith("/admin"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return {}


@schemathesis.check
def json_error_body(ctx, response, case) -> bool | None:
    """A 4xx names the problem in a JSON object (each front door's own shape)."""
    if response.status_code < 400 or response.status_code >= 500 or case.path.startswith("/u/"):
        return None  # the unsubscribe pages are for browsers: HTML on purpose
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and body, f"{response.status_code} with an empty error body"
    error = body.get("error") or body.get("detail") or (body.get("meta") or {}).get("errors")
    assert error, f"{response.status_code} without an error message: {body}"
    return True


def app_schema():
    """The app's own OpenAPI document (what /openapi.json serves), loaded at collection time."""
    from api.app import create_app
    from conftest import settings_for

    schema = schemathesis.openapi.from_dict(create_app(settings_for("sqlite://")).openapi())
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES, deterministic=True
    )
    schema.config.phases.update(phases=["examples", "fuzzing"])
    return schema.exclude(path_regex=r"^/(healthz|metrics)$")


schema = app_schema()


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_generated_requests_never_5xx_and_4xx_are_json(case, served, database):
    CALLS[database.engine.dialect.name] += 1
    OPERATIONS.add((case.method, case.path))
    case.call_and_validate(
        base_url=served.url, headers=credentials(case.path), checks=[not_a_server_error, json_error_body], timeout=60
    )


def test_fuzzing_sent_enough_cases():
    """Runs after the generated cases (module order). Each backend that ran must have had its share
    of the ≥ 1 000 cases, and the sum must reach 1 000 only when both ran: a fresh clone without
    PostgreSQL fuzzes SQLite alone and cannot reach the sum, while CI (both backends) must."""
    if len(OPERATIONS) < 30:
        pytest.skip("run the whole module: the fuzz tests did not all run")
    total = sum(CALLS.values())
    print(f"\nschemathesis: {total} generated requests over {len(OPERATIONS)} routes ({dict(CALLS)})")
    for backend, sent in CALLS.items():
        assert sent >= FUZZ_MINIMUM_PER_BACKEND, f"{backend}: {sent} cases < {FUZZ_MINIMUM_PER_BACKEND}"
    if POSTGRES_URL:
        assert set(CALLS) == {"sqlite", "postgresql"}, f"a backend sent no case: {dict(CALLS)}"
        assert total >= FUZZ_MINIMUM, CALLS


# --------------------------------------------------------------------------------------------------
# Hand-written cases
# --------------------------------------------------------------------------------------------------


def mid() -> str:
    return f"bad-{uuid.uuid4().hex}"


def assert_json_4xx(response: httpx.Response, status: int = 400, mentions: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    if mentions:
        assert mentions.lower() in json.dumps(body).lower(), body
    return body


def raw(api, path: str, content: bytes, **kw) -> httpx.Response:
    return api.http.post(
        f"/v1/{path}", content=content, auth=(WRITE_KEY, ""), headers={"content-type": "application/json"}, **kw
    )


def quarantined(api, message_id: str) -> list[dict]:
    return [r for r in api.admin("rejected", limit=1000).json() if r["message_id"] == message_id]


def stored(db, message_id: str) -> int:
    return db.scalar("SELECT count(*) FROM events WHERE message_id = :m", m=message_id)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [33, 300, 1000])
def test_deeply_nested_properties_are_quarantined_and_the_rest_of_the_batch_kept(api, db, depth):
    good, deep = mid(), mid()
    body = (
        b'{"batch":[{"type":"track","anonymousId":"a","event":"Product Viewed","messageId":"%s"},'
        b'{"type":"track","anonymousId":"a","event":"Deep","messageId":"%s","properties":{"x":%s}}]}'
        % (good.encode(), deep.encode(), nested(depth))
    )
    response = raw(api, "batch", body)
    assert response.status_code == 200, response.text
    assert response.headers["x-breadcrumb-rejected"] == "1"
    assert stored(db, good) == 1 and stored(db, deep) == 0
    [row] = quarantined(api, deep)
    assert "nested more than 32 levels" in row["reason"]
    json.loads(row["payload"])  # the quarantined payload is kept (cut short), as valid JSON


def test_nesting_beyond_the_parser_limit_is_400(api, db):
    assert_json_4xx(
        raw(api, "track", b'{"anonymousId":"a","event":"E","properties":{"x":%s}}' % nested(5000)), mentions="depth"
    )


def test_nesting_within_the_limit_is_stored(api, db):
    message_id = mid()
    assert (
        raw(
            api,
            "track",
            b'{"anonymousId":"a","event":"E","messageId":"%s","properties":{"x":%s}}'
            % (message_id.encode(), nested(25)),
        ).status_code
        == 200
    )
    assert stored(db, message_id) == 1


@pytest.mark.parametrize(
    "path,auth,headers",
    [
        ("/v1/batch", (WRITE_KEY, ""), {}),
        ("/api/v1/events", (CIO_SITE, CIO_KEY), {}),
        ("/admin/catalog", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ],
)
def test_ten_megabyte_body_is_400(api, db, path, auth, headers):
    """10 MiB and a little: over every limit (500 KB for events, 10 MiB for the admin catalog feed)."""
    body = b'{"batch":[],"x":"' + b"a" * (10 * 1024 * 1024) + b'"}'
    method = "PUT" if path == "/admin/catalog" else "POST"
    response = api.http.request(
        method, path, content=body, auth=auth, headers={"content-type": "application/json", **headers}
    )
    assert_json_4xx(response, mentions="limit")
    assert db.scalar("SELECT count(*) FROM events") == 0


def test_ten_megabyte_chunked_body_is_400_without_buffering(api, db):
    def chunks():
        yield b'{"batch":[{"x":"'
        for _ in range(160):
            yield b"a" * 65536
        yield b'"}]}'

    assert_json_4xx(
        api.http.post(
            "/v1/batch", content=chunks(), auth=(WRITE_KEY, ""), headers={"content-type": "application/json"}
        ),
        mentions="limit",
    )


@pytest.mark.parametrize(
    "content",
    [
        b'{"anonymousId":"\xff\xfe","event":"E"}',  # invalid UTF-8
        b'{"anonymousId":"a\\ud800","event":"E"}',  # a lone surrogate
        b'{"anonymousId":"a","event":"E","properties":{"x":NaN}}',
        b'{"anonymousId":"a","event":"E","properties":{"x":Infinity}}',
        b'{"anonymousId":"a","event":"E","properties":{"x":-Infinity}}',
        b'{"anonymousId":"a","event":"E","properties":{"x":1e400}}',
    ],
    ids=["invalid-utf8", "lone-surrogate", "nan", "infinity", "minus-infinity", "overflowing-float"],
)
def test_bodies_that_are_not_json_are_400_naming_the_problem(api, db, content):
    assert_json_4xx(raw(api, "track", content), mentions="not valid JSON")
    response = api.http.post(
        "/api/v1/events", content=content.replace(b'"anonymousId"', b'"anonymous_id"'), auth=(CIO_SITE, CIO_KEY)
    )
    assert_json_4xx(response, mentions="not valid JSON")
    assert db.scalar("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01", "+275760-09-13T00:00:00Z"]
)
def test_timestamps_in_year_1_and_9999_are_quarantined_with_a_reason(api, db, stamp):
    message_id = mid()
    assert (
        api.segment(
            "track", {"anonymousId": "a", "event": "E", "messageId": message_id, "timestamp": stamp}
        ).status_code
        == 200
    )
    assert stored(db, message_id) == 0
    [row] = quarantined(api, message_id)
    assert "timestamp" in row["reason"]
    # With sentAt at the other end of the calendar the clock-skew correction overflows: same outcome.
    skewed = mid()
    assert (
        api.segment(
            "track",
            {
                "anonymousId": "a",
                "event": "E",
                "messageId": skewed,
                "timestamp": stamp,
                "sentAt": "9999-12-31T23:59:59Z" if stamp.startswith("0") else "0001-01-01T00:00:00Z",
            },
        ).status_code
        == 200
    )
    assert stored(db, skewed) == 0 and quarantined(api, skewed)


@pytest.mark.parametrize("seconds", [-62135596800, 253402300799, 1e20, -1e20])
def test_customerio_unix_timestamps_far_out_are_400(api, db, seconds):
    assert_json_4xx(
        api.cio("POST", "customers/c-1/events", {"name": "E", "timestamp": seconds}), mentions="out of range"
    )


@pytest.mark.parametrize("since,until", [("0001-01-01", "9999-12-31"), ("99999999d", None), ("9999-12-31", None)])
def test_report_periods_at_the_ends_of_the_calendar_are_400_not_500(api, db, since, until):
    for path in ("reports/summary", "reports/tracking", "reports/experiments"):
        response = api.admin(path, since=since, **({"until": until} if until else {}))
        assert response.status_code in (200, 400), (path, response.status_code, response.text[:300])
        if response.status_code == 400:
            assert_json_4xx(response)


SQL = "Robert'); DROP TABLE people;--"
HTML = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_sql_and_html_in_names_are_stored_verbatim_and_rendered_escaped(api, db):
    from activities.store_activities import StoreActivities
    from conftest import settings_for
    from workflows.models import SendInput

    email = f"bobby.{uuid.uuid4().hex[:6]}@example.com"
    assert (
        api.segment(
            "identify",
            {"anonymousId": "tables", "userId": SQL, "traits": {"email": email, "first_name": HTML, "last_name": SQL}},
        ).status_code
        == 200
    )
    assert (
        api.segment("track", {"anonymousId": "tables", "event": HTML, "properties": {"name": SQL}}).status_code == 200
    )
    person = api.person(email=email)
    assert person["user_id"] == SQL and person["traits"]["first_name"] == HTML  # stored as given: no injection
    assert HTML in [e["original_name"] for e in person["events"]]
    assert db.scalar("SELECT count(*) FROM people") >= 1  # the table is still there

    # A message rendered for this person: the HTML part escapes the name, the text part keeps it.
    activities = StoreActivities(db.engine, settings=settings_for(db.url))
    sent = activities.send_step(
        SendInput(
            workflow_id=f"welcome-{person['person_id']}-1",
            person_id=person["person_id"],
            route="welcome",
            step=1,
            template="welcome_1",
            channel="email",
            at=datetime.now(UTC),
        )
    )
    detail = api.admin(f"messages/{sent.message_id}").json()
    assert "<script>" not in detail["html"] and "onerror=alert(1)>" not in detail["html"]
    assert "&lt;script&gt;" in detail["html"]
    # The report pages render stored data escaped too (and forbid scripts outright).
    page = api.http.get("/admin/report", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert page.status_code == 200 and "<script>" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no scripts at all


def test_an_email_of_ten_thousand_characters_is_refused_clearly(api, db):
    long_email = "a" * 10_000 + "@example.com"
    message_id = mid()
    assert (
        api.segment(
            "identify", {"anonymousId": "long", "messageId": message_id, "traits": {"email": long_email}}
        ).status_code
        == 200
    )
    reasons = [r["reason"] for r in quarantined(api, message_id)]
    assert any("email" in r and "limit" in r for r in reasons), reasons  # stored without it, and says why
    assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'email'") == 0
    assert_json_4xx(api.http.put(f"/api/v1/customers/{long_email}", json={}, auth=(CIO_SITE, CIO_KEY)), mentions="255")
    assert api.cio("PUT", "customers/long-1", {"email": long_email}).status_code == 200
    assert db.scalar("SELECT count(*) FROM identifiers WHERE kind = 'email'") == 0
    assert api.admin("people", email=long_email).status_code == 404


def test_ids_with_slashes_and_unicode(api, db):
    anon, user = "dev/ice/../1?x=1#f", "ü/😀/用户"
    assert (
        api.segment(
            "identify", {"anonymousId": anon, "userId": user, "traits": {"email": "slash@example.com"}}
        ).status_code
        == 200
    )
    person = api.person(user_id=user)
    assert person["anonymous_ids"] == [anon] and api.person(anonymous_id=anon)["person_id"] == person["person_id"]
    # Customer.io ids travel in the path: unicode works; an encoded slash is not an id (404 JSON).
    assert (
        api.http.put(
            "/api/v1/customers/%E2%9C%93-%F0%9F%98%80", json={"email": "tick@example.com"}, auth=(CIO_SITE, CIO_KEY)
        ).status_code
        == 200
    )
    assert api.person(user_id="✓-😀")["emails"] == ["tick@example.com"]
    assert_json_4xx(api.http.put("/api/v1/customers/a%2Fb", json={}, auth=(CIO_SITE, CIO_KEY)), 404)
    assert_json_4xx(api.http.get("/admin/people/a%2Fb", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), 404)


NUL_MESSAGES = {
    "trait": {"type": "identify", "anonymousId": "n", "traits": {"email": "nul@example.com", "name": "a\u0000b"}},
    "anonymous-id": {"type": "track", "anonymousId": "n\u00001", "event": "E"},
    "event-name": {"type": "track", "anonymousId": "n", "event": "E\u0000"},
    "property-key": {"type": "track", "anonymousId": "n", "event": "E", "properties": {"k\u0000": 1}},
    "context": {"type": "page", "anonymousId": "n", "context": {"page": {"url": "/\u0000"}}},
}


@pytest.mark.parametrize("where", NUL_MESSAGES)
def test_nul_characters_are_quarantined_not_500(api, db, where):
    good, bad = mid(), mid()
    batch = [
        {"type": "track", "anonymousId": "n", "event": "Product Viewed", "messageId": good},
        {**NUL_MESSAGES[where], "messageId": bad},
    ]
    response = api.segment("batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert stored(db, good) == 1 and stored(db, bad) == 0
    [row] = quarantined(api, bad)
    assert "NUL" in row["reason"] and "\\u0000" in row["payload"]
    strict = api.segment(
        "batch", {"batch": [{**NUL_MESSAGES[where], "messageId": mid()}]}, headers={"X-Strict-Mode": "1"}
    )
    assert_json_4xx(strict, mentions="NUL")


def test_nul_in_a_message_id_is_quarantined_escaped(api, db):
    response = api.segment("track", {"anonymousId": "n", "event": "E", "messageId": "m\u0000x"})
    assert response.status_code == 200 and response.headers["x-breadcrumb-rejected"] == "1"
    assert any(r["message_id"] == "m\\u0000x" for r in api.admin("rejected").json())


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("PUT", "customers/c-1", {"email": "c@example.com", "name": "\u0000"}),
        ("PUT", "customers/c-1", {"anonymous_id": "x\u0000"}),
        ("POST", "customers/c-1/events", {"name": "E\u0000", "data": {}}),
        ("POST", "customers/c-1/events", {"name": "E", "data": {"a": ["\u0000"]}}),
        ("POST", "events", {"anonymous_id": "x\u0000", "name": "E", "data": {}}),
        ("POST", "merge_customers", {"primary": {"id": "p\u0000"}, "secondary": {"email": "s@example.com"}}),
    ],
)
def test_nul_in_customerio_bodies_is_400(api, db, method, path, body):
    assert_json_4xx(api.cio(method, path, body), mentions="NUL")


@pytest.mark.parametrize(
    "method,url",
    [
        ("PUT", "/api/v1/customers/a%00b"),
        ("POST", "/api/v1/customers/a%00b/events"),
        ("DELETE", "/api/v1/customers/a%00b"),
        ("POST", "/api/v1/customers/a%00b/suppress"),
        ("POST", "/v1/track?x=%00"),
        ("GET", "/admin/people?email=a%00@b.co"),
        ("GET", "/admin/people?user_id=%00"),
        ("GET", "/admin/people/a%00b"),
        ("GET", "/admin/messages?person_id=%00"),
        ("GET", "/admin/messages/%00"),
        ("GET", "/admin/catalog?sku=%00"),
        ("GET", "/admin/reports/summary?since=%00"),
    ],
)
def test_nul_in_paths_and_query_strings_is_400(api, db, method, url):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if url.startswith("/admin") else {}
    auth = (CIO_SITE, CIO_KEY) if url.startswith("/api") else (WRITE_KEY, "") if url.startswith("/v1") else None
    response = api.http.request(method, url, json={"name": "E"}, headers=headers, auth=auth)
    assert_json_4xx(response, mentions="NUL")


def test_nul_in_the_catalog_is_400(api, db):
    response = api.http.put(
        "/admin/catalog", json={"products": [{"sku": "S\u0000"}]}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert_json_4xx(response, mentions="NUL")


@pytest.mark.parametrize("query", [{"offset": str(2**63)}, {"offset": "99999999999999999999"}, {"limit": "0"}])
def test_out_of_range_paging_is_400(api, db, query):
    assert_json_4xx(api.admin("rejected", **query))
    assert_json_4xx(api.admin("catalog", **query))


def test_catalog_rank_beyond_an_integer_column_is_400(api, db):
    response = api.http.put(
        "/admin/catalog",
        json={"products": [{"sku": "S", "bestseller_rank": 2**40}]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert_json_4xx(response, mentions="bestseller_rank")
