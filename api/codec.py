"""Temporal's remote codec protocol (`POST /codec/decode`, `POST /codec/encode`), so operators see
decrypted payloads in the Temporal UI and `temporal workflow show --codec-endpoint`.

Both take and return `{"payloads": [...]}` in protobuf JSON (base64 metadata values and data). They
are admin routes: `Authorization: Bearer <BREADCRUMB_ADMIN_TOKEN>` (the CLI's `--codec-auth`), or
the codec session cookie that a signed `/codec/login` link sets — the Temporal UI sends no
Authorization of its own, only cookies ("Include cross-origin credentials" in its codec settings).
CORS admits only the Temporal UI's origins (`BREADCRUMB_CODEC_CORS_ORIGINS`, see api/app.py).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api import report_link
from api.deps import get_settings, matches_any
from api.pages import render_page
from store.settings import Settings
from dispatch.codec import PayloadKeyError

PREFIX = "/codec"
LOGIN_PATH = f"{PREFIX}/login"
COOKIE = "breadcrumb_codec"
SESSION_SECONDS = 12 * 3600

router = APIRouter(prefix=PREFIX, tags=["codec"])


def session_value(admin_token: str) -> str:
    """The cookie's value: derived from the admin token, so the token itself never sits in a browser."""
    return hmac.new(admin_token.encode(), b"breadcrumb-codec-session-v1", hashlib.sha256).hexdigest()


def login_link(admin_token: str, base_url: str, ttl: int = report_link.DEFAULT_TTL, now: float | None = None) -> str:
    """A signed, short-lived link that opens a codec session in the browser that follows it."""
    if not 0 < ttl <= report_link.MAX_TTL:
        raise ValueError(f"ttl must be between 1 second and {report_link.MAX_TTL // 86400} days")
    params = {"expires": str(int((now if now is not None else time.time()) + ttl))}
    params["sig"] = report_link.signature(admin_token, params, path=LOGIN_PATH)
    return f"{base_url.rstrip('/')}{LOGIN_PATH}?{urlencode(params)}"


def require_codec_access(request: Request, settings: Settings = Depends(get_settings)) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if settings.admin_token:
        if scheme.lower() == "bearer" and matches_any(token.strip(), [settings.admin_token]):
            return
        if matches_any(request.cookies.get(COOKIE, ""), [session_value(settings.admin_token)]):
            return
    raise HTTPException(
        401,
        "the codec needs 'Authorization: Bearer <BREADCRUMB_ADMIN_TOKEN>' "
        "or a session opened with a signed /codec/login link",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _convert(request: Request, decode: bool) -> JSONResponse:
    try:
        payloads = json_format.Parse(await request.body(), Payloads(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise HTTPException(400, f'expected {{"payloads": [...]}} in protobuf JSON: {exc}') from None
    codec = request.app.state.payload_codec
    if codec is not None:
        try:
            converted = await (codec.decode if decode else codec.encode)(payloads.payloads)
        except PayloadKeyError as exc:
            raise HTTPException(422, str(exc)) from None
        except Exception:  # a payload altered, or sealed under another key with the same id
            raise HTTPException(
                422, "a payload could not be decrypted (altered, or encrypted with another key)"
            ) from None
        payloads = Payloads(payloads=converted)
    return JSONResponse({"payloads": [], **json_format.MessageToDict(payloads)})


@router.post("/decode", dependencies=[Depends(require_codec_access)])
async def decode(request: Request) -> JSONResponse:
    """Decrypt payloads (the namespace in `X-Namespace` does not matter: one set of keys serves all)."""
    return await _convert(request, decode=True)


@router.post("/encode", dependencies=[Depends(require_codec_access)])
async def encode(request: Request) -> JSONResponse:
    """Encrypt payloads with the newest key (what the UI uses to send a signal or start a workflow)."""
    return await _convert(request, decode=False)


@router.get("/login", response_class=HTMLResponse)
def login(request: Request, settings: Settings = Depends(get_settings)) -> HTMLResponse:
    """Follow a signed link (printed by `breadcrumb dev`) to get the session cookie the UI will send."""
    try:
        report_link.verify(settings.admin_token, dict(request.query_params), path=LOGIN_PATH)
    except report_link.BadLink as exc:
        raise HTTPException(401, str(exc)) from None
    response = HTMLResponse(render_page("codec_login.html.j2"))
    response.set_cookie(
        COOKIE,
        session_value(settings.admin_token),
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
