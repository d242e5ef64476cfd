"""Signed, short-lived links to the admin pages — the report (`/admin/report?…&expires=<unix>&sig=<hmac>`)
and a person's timeline (`/admin/people/{id}/page?…`), for sharing with whoever has no token.

The signature is HMAC-SHA256, keyed with the admin token, over the path and every other query
parameter (sorted), so neither the expiry nor the period can be changed without the token. A link
opens the page it was signed for only — never the JSON or any other admin route.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

REPORT_PATH = "/admin/report"
DEFAULT_TTL = 15 * 60  # seconds
MAX_TTL = 7 * 86400


class BadLink(Exception):
    """A signed link that is missing its signature, altered, or expired; the message says which."""


def _payload(path: str, params: dict[str, str]) -> bytes:
    canonical = urlencode(sorted((k, str(v)) for k, v in params.items() if k != "sig"))
    return f"GET {path}?{canonical}".encode()


def signature(admin_token: str, params: dict[str, str], path: str = REPORT_PATH) -> str:
    return hmac.new(admin_token.encode(), _payload(path, params), hashlib.sha256).hexdigest()


def sign(
    admin_token: str,
    base_url: str,
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
    path: str = REPORT_PATH,
    **query: str | int | None,
) -> str:
    """The full URL of a link to the page at `path` (the report unless said) valid for `ttl` seconds."""
    if not admin_token:
        raise ValueError("BREADCRUMB_ADMIN_TOKEN is not set: a signed link needs it")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 second and {MAX_TTL // 86400} days")
    params = {k: str(v) for k, v in query.items() if v not in (None, "")}
    params["expires"] = str(int((now if now is not None else time.time()) + ttl))
    params["sig"] = signature(admin_token, params, path)
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}"


def verify(admin_token: str, params: dict[str, str], now: float | None = None, path: str = REPORT_PATH) -> None:
    """Raise BadLink unless `params` carry a valid, unexpired signature."""
    if not admin_token:
        raise BadLink("signed links are disabled: BREADCRUMB_ADMIN_TOKEN is not set")
    sig, expires = params.get("sig"), params.get("expires")
    if not sig or not expires:
        raise BadLink("this page needs 'Authorization: Bearer <token>' or a signed link (expires + sig)")
    if not hmac.compare_digest(signature(admin_token, params, path).encode(), sig.encode()):
        raise BadLink("the link's signature does not match (altered, or signed with another token)")
    try:
        expiry = int(expires)
    except ValueError:
        raise BadLink("the link's expiry is not a number") from None
    if expiry < (now if now is not None else time.time()):
        raise BadLink(
            "the link has expired: ask for a fresh one (`breadcrumb report --open` for the report, "
            "GET /admin/people/{id}/timeline/link for a timeline)"
        )
