"""Security (issue 7, item 5): no route skips auth, keys are compared in constant time, each kind of
credential opens only its own door, and unsubscribe tokens cannot be forged or turned on someone else.

The route test walks `app.routes` itself, so a route added later is checked without anyone
remembering to add it here: it is either public on purpose (listed in PUBLIC, with a reason) or it
must refuse missing, wrong and other-door credentials. (No contact details in workflow ids, search
attributes, summaries or INFO logs is checked where a real run happens: tests/test_faults.py.)
"""

from __future__ import annotations

import ast
import base64
import hmac
import inspect
import re
import time

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from conftest import ADMIN_TOKEN, CIO_KEY, CIO_SITE, UNSUBSCRIBE_SECRET, WRITE_KEY, ServedApp, settings_for
from store.db import make_engine
from store.migrate import upgrade
from store.settings import REPO_ROOT
from store.unsubscribe import make_token

# Public on purpose. Anything else must authenticate.
PUBLIC = {
    r"^/healthz$": "liveness probe",
    r"^/metrics$": "Prometheus scrape (counters only, no personal data)",
    r"^/(docs|redoc|openapi\.json)(/.*)?$": "API documentation",
    r"^/demo/store(/.*)?$": "the public demo storefront",
    r"^/breadcrumb\.js$": "the tracking snippet a storefront loads",
    r"^/u/\{token\}(/resubscribe|/confirm)?$": "unsubscribe link: its own signed-token check (tested below)",
    r"^/codec/login$": "the codec's signed login link: its own signature check (tests/test_codec.py)",
    r"^/shopify/webhooks$": "Shopify's webhooks: their own HMAC signature check (tests/test_shopify_webhooks.py)",
}
# The codec (Temporal UI's payload decoder) takes the admin token, like /admin.
DOORS = {"/v1/": "segment", "/api/v1/": "customerio", "/admin/": "admin", "/codec/": "admin"}


def all_routes(routes, seen=None) -> list[tuple[str, str]]:
    """(method, path) of every endpoint, through included routers and mounts (FastAPI ≥ 0.12x keeps
    included routers as wrappers around the original router; older versions flatten them)."""
    found = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found += all_routes(inner.routes)
        elif isinstance(route, Mount):
            found += [(m, route.path + p) for m, p in all_routes(getattr(route, "routes", []) or [])] or [
                ("GET", route.path + "/{path}")
            ]
        elif isinstance(route, (APIRoute, Route)):
            found += [(method, route.path) for method in sorted(route.methods or {"GET"}) if method != "HEAD"]
    return found


def is_public(path: str) -> bool:
    return any(re.match(pattern, path) for pattern in PUBLIC)


def door(path: str) -> str | None:
    return next((name for prefix, name in DOORS.items() if path.startswith(prefix)), None)


@pytest.fixture(scope="module")
def app_routes():
    from api.app import create_app

    return all_routes(create_app(settings_for("sqlite://")).routes)


@pytest.fixture(scope="module")
def served_sqlite(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('security') / 'breadcrumb.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with ServedApp(settings_for(url)) as app:
        yield app, engine
    engine.dispose()


@pytest.fixture(scope="module")
def http(served_sqlite):
    with httpx.Client(base_url=served_sqlite[0].url, timeout=30) as client:
        yield client


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_every_route_is_public_on_purpose_or_behind_a_door(app_routes):
    assert len(app_routes) > 30, app_routes  # the walk found the included routers
    stray = [(m, p) for m, p in app_routes if not is_public(p) and door(p) is None]
    assert not stray, (
        f"routes outside /v1, /api/v1 and /admin that are not listed as public: {stray}. "
        "Put them behind a door's auth, or add them to PUBLIC with the reason."
    )


# Each door's valid credential, and the wrong ones that must be refused there.
VALID = {
    "segment": {"Authorization": basic(WRITE_KEY, "")},
    "customerio": {"Authorization": basic(CIO_SITE, CIO_KEY)},
    "admin": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
}
WRONG = {
    "missing": {},
    "empty bearer": {"Authorization": "Bearer"},
    "dash bearer": {"Authorization": "Bearer -"},
    "empty basic": {"Authorization": basic("", "")},
    "garbage": {"Authorization": "Basic !!!not-base64"},
    "unknown scheme": {"Authorization": f"Token {ADMIN_TOKEN}"},
    "wrong write key": {"Authorization": basic("wk_wrong", "")},
    "write key prefix": {"Authorization": basic(WRITE_KEY[:-1], "")},
    "wrong cio key": {"Authorization": basic(CIO_SITE, "wrong")},
    "cio key for another site": {"Authorization": basic("other-site", CIO_KEY)},
    "wrong bearer": {"Authorization": "Bearer wrong-token"},
    "bearer prefix": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "bearer with suffix": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    # another door's valid credential
    "write key": VALID["segment"],
    "customer.io key": VALID["customerio"],
    "admin token": VALID["admin"],
    "admin token as basic": {"Authorization": basic(ADMIN_TOKEN, "")},
    "write key as bearer": {"Authorization": f"Bearer {WRITE_KEY}"},
}
BODY = {
    "type": "track",
    "anonymousId": "intruder",
    "userId": "intruder",
    "event": "Added to Cart",
    "name": "Added to Cart",
    "anonymous_id": "intruder",
    "email": "intruder@example.com",
    "batch": [{"type": "track", "anonymousId": "intruder", "event": "E"}],
    "primary": {"id": "a"},
    "secondary": {"id": "b"},
    "products": [{"sku": "X", "in_stock": False}],
}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "intruder-1", path)


def test_every_protected_route_refuses_missing_wrong_and_other_door_credentials(app_routes, http, served_sqlite):
    from sqlalchemy import text

    _, engine = served_sqlite
    protected = [(m, p) for m, p in app_routes if not is_public(p)]
    assert {door(p) for _, p in protected} == {"segment", "customerio", "admin"}
    refused = 0
    for method, path in protected:
        mine = VALID[door(path)]
        for name, headers in WRONG.items():
            if headers == mine:
                continue
            response = http.request(method, concrete(path), json=BODY, headers=headers)
            assert response.status_code == 401, (
                f"{method} {path} with {name}: {response.status_code} {response.text[:200]}"
            )
            assert response.headers["content-type"].startswith("application/json"), (method, path, name)
            refused += 1
    with engine.connect() as conn:  # nothing a refused request carried was stored
        assert conn.execute(text("SELECT count(*) FROM events WHERE anonymous_id = 'intruder'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM products WHERE sku = 'X'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM identifiers WHERE value LIKE 'intruder%'")).scalar() == 0
    print(f"\n{refused} requests refused over {len(protected)} protected routes")
    # …while each door's own credential gets past auth (whatever the route then says about the body).
    for method, path in protected:
        assert http.request(method, concrete(path), json=BODY, headers=VALID[door(path)]).status_code != 401, (
            method,
            path,
        )


def test_segment_write_key_in_the_body_is_checked_too(http):
    for key in ("wk_wrong", "", None, 123, ADMIN_TOKEN, CIO_KEY, WRITE_KEY + " "):
        response = http.post("/v1/track", json={"writeKey": key, "anonymousId": "a", "event": "E"})
        assert response.status_code == 401, (key, response.text)
    # A wrong Basic key is not rescued by a right key in the body.
    response = http.post(
        "/v1/track",
        json={"writeKey": WRITE_KEY, "anonymousId": "a", "event": "E"},
        headers={"Authorization": basic("wk_wrong", "")},
    )
    assert response.status_code == 401


def test_report_page_link_must_be_signed_with_the_admin_token(http):
    from api import report_link

    expires = str(int(time.time()) + 600)
    for params in (
        {},
        {"expires": expires},
        {"expires": expires, "sig": "0" * 64},
        {"expires": expires, "sig": report_link.signature(WRITE_KEY, {"expires": expires})},
        {
            "expires": str(int(time.time()) - 1),
            "sig": report_link.signature(ADMIN_TOKEN, {"expires": str(int(time.time()) - 1)}),
        },
    ):
        assert http.get("/admin/report", params=params).status_code == 401, params
    good = {"expires": expires, "sig": report_link.signature(ADMIN_TOKEN, {"expires": expires})}
    assert http.get("/admin/report", params=good).status_code == 200
    # The signed link opens the page only, never the JSON.
    assert http.get("/admin/reports/summary", params=good).status_code == 401
    assert http.get("/admin/people", params={**good, "email": "a@b.co"}).status_code == 401


def test_unconfigured_secrets_refuse_everyone(tmp_path):
    """No ADMIN_TOKEN / write keys / Customer.io credentials set: the doors stay shut, even to empty ones."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(make_engine(url))
    with ServedApp(settings_for(url, admin_token="", write_keys=[], cio_site_id="", cio_api_key="")) as app:
        with httpx.Client(base_url=app.url) as client:
            assert client.get("/admin/rejected", headers={"Authorization": "Bearer -"}).status_code == 401
            assert client.get("/admin/rejected", headers={"Authorization": "Bearer"}).status_code == 401
            assert client.get("/admin/report", params={"expires": "9999999999", "sig": ""}).status_code == 401
            assert client.post("/v1/track", json={"writeKey": "", "anonymousId": "a", "event": "E"}).status_code == 401
            assert (
                client.post(
                    "/v1/track", json={"anonymousId": "a", "event": "E"}, headers={"Authorization": basic("", "")}
                ).status_code
                == 401
            )
            assert (
                client.post(
                    "/api/v1/events", json={"anonymous_id": "a", "name": "E"}, headers={"Authorization": basic("", "")}
                ).status_code
                == 401
            )


# --------------------------------------------------------------------------------------------------
# Constant-time comparison
# --------------------------------------------------------------------------------------------------


def test_secrets_are_compared_with_hmac_compare_digest_against_every_key(monkeypatch):
    import api.deps as deps

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    secrets = ["key-one", "key-two", "key-three"]
    assert deps.matches_any("key-one", secrets)
    assert len(calls) == 3, "matches_any must not stop at the first match (timing tells which key matched)"
    calls.clear()
    assert not deps.matches_any("nope", secrets) and len(calls) == 3
    calls.clear()
    assert not deps.matches_any("x", []) and calls == []


def test_auth_goes_through_matches_any_everywhere(monkeypatch, http):
    """Every credential check of the served app (same process) reaches hmac.compare_digest."""
    import api.deps as deps

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    for method, path, headers, body in [
        ("GET", "/admin/rejected", {"Authorization": "Bearer guess"}, None),
        ("POST", "/v1/track", {"Authorization": basic("guess", "")}, {"anonymousId": "a", "event": "E"}),
        ("POST", "/v1/track", {}, {"writeKey": "guess", "anonymousId": "a", "event": "E"}),
        (
            "POST",
            "/api/v1/events",
            {"Authorization": basic("site-guess", "key-guess")},
            {"anonymous_id": "a", "name": "E"},
        ),
        ("GET", "/admin/report", {"Authorization": "Bearer guess"}, None),
    ]:
        seen.clear()
        assert http.request(method, path, headers=headers, json=body).status_code == 401
        assert any(b"guess" in a for a, _ in seen), (method, path, "compared without compare_digest")


SECRET_NAMES = re.compile(r"(token|secret|password|write_?key|api_?key|sig|signature|tag|digest)", re.I)


def test_no_secret_is_compared_with_equals():
    """Static check: no `==`/`!=`/`in` between anything named like a secret in the auth code paths."""
    files = [
        REPO_ROOT / "api" / "deps.py",
        REPO_ROOT / "api" / "segment.py",
        REPO_ROOT / "api" / "reports.py",
        REPO_ROOT / "api" / "report_link.py",
        REPO_ROOT / "api" / "unsubscribe.py",
        REPO_ROOT / "store" / "unsubscribe.py",
    ]
    offenders = []
    for file in files:
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]  # `token == x`, not `token.count(".") == 1`
            names = [
                n.id if isinstance(n, ast.Name) else n.attr
                for n in operands
                if isinstance(n, (ast.Name, ast.Attribute))
            ]
            if any(SECRET_NAMES.search(name) and not name.startswith("SIGNATURE") for name in names):
                offenders.append(f"{file.name}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
    # And the helpers themselves use compare_digest.
    import api.deps as deps
    from api import report_link
    from store import unsubscribe

    for function in (deps.matches_any, report_link.verify, unsubscribe.read_token):
        assert "hmac.compare_digest" in inspect.getsource(function), function.__name__


# --------------------------------------------------------------------------------------------------
# Unsubscribe tokens
# --------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_unsubscribe_tokens_cannot_be_forged_or_turned_on_someone_else(http, served_sqlite):
    app, engine = served_sqlite
    key = UNSUBSCRIBE_SECRET.encode()
    people = {}
    for who in ("eve", "vic"):
        email = f"{who}.{int(time.time() * 1000)}@example.com"
        assert (
            http.post(
                "/v1/identify", json={"anonymousId": f"{who}-dev", "traits": {"email": email}}, headers=VALID["segment"]
            ).status_code
            == 200
        )
        people[who] = http.get("/admin/people", params={"email": email}, headers=VALID["admin"]).json()["person_id"]
    eve, vic = people["eve"], people["vic"]
    own = make_token(key, eve, "email", "m-1")
    payload, tag = own.split(".")

    forged = [
        f"{b64(f'{vic}|email|m-1'.encode())}.{tag}",  # Eve's signature on Vic's id
        make_token(WRITE_KEY.encode(), vic, "email"),  # signed with a key a storefront knows
        make_token(CIO_KEY.encode(), vic, "email"),
        make_token(ADMIN_TOKEN.encode(), vic, "email"),  # the admin token itself is not the signing key
        f"{b64(f'{vic}|email|m-1'.encode())}.{b64(bytes(16))}",
        f"{b64(f'{vic}|email|m-1'.encode())}.",
        f"{payload}.{tag[:-1]}",  # truncated
        own + "A",  # extended
        f"{b64(f'{eve}|{vic}|email'.encode())}.{tag}",  # smuggling a second id
        f"{b64(f'{vic}|email|m-1|{eve}'.encode())}.{tag}",
    ]
    for token in forged:
        for method, suffix in (("GET", ""), ("POST", ""), ("POST", "/confirm"), ("POST", "/resubscribe")):
            response = http.request(method, f"/u/{token}{suffix}")
            assert response.status_code == 400, (token, method, suffix, response.status_code)

    def unsubscribed(person: str) -> bool:
        return http.get(f"/admin/people/{person}", headers=VALID["admin"]).json()["email_unsubscribed"]

    assert not unsubscribed(vic) and not unsubscribed(eve)
    # Eve's genuine link works — for Eve only, however often it is used.
    for _ in range(3):
        assert http.post(f"/u/{own}/confirm").status_code == 200
    assert unsubscribed(eve) and not unsubscribed(vic)
    # An SMS token does not unsubscribe from email, nor the other way round.
    assert http.post(f"/u/{make_token(key, vic, 'sms')}").status_code == 200
    assert not unsubscribed(vic)
