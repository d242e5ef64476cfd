"""Unsubscribe links: `GET /u/{token}` (the link in every email's footer: a confirmation page that
changes nothing, since mail scanners and link previews fetch every link), `POST /u/{token}/confirm`
(its button), `POST /u/{token}` (RFC 8058 one-click, what mailbox providers' "Unsubscribe" button
sends) and `POST /u/{token}/resubscribe` (the undo button).

No login: the token is signed (store/unsubscribe.py), so it can only unsubscribe the person and
channel it was made for. A forged, altered or truncated token gets a 400 page and changes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import get_engine, get_settings
from api.pages import render_page
from store.db import reading
from store.settings import Settings
from store.unsubscribe import UnsubscribeClaim, change_subscription, person_of, read_token

router = APIRouter(tags=["unsubscribe"])
CHANGES = Counter(
    "breadcrumb_subscription_changes_total",
    "Unsubscribes and re-subscribes through signed links",
    ["channel", "action", "via"],
)
CHANNEL_NAMES = {"email": "emails", "sms": "text messages"}
NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _page(
    settings: Settings, title: str, text: str, status: int = 200, action: str | None = None, button: str | None = None
) -> HTMLResponse:
    """The one page (api/templates/unsubscribe.html.j2): a line of text and, when `action`, a button."""
    html = render_page(
        "unsubscribe.html.j2", shop=settings.shop_name, title=title, text=text, action=action, button=button
    )
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _invalid(settings: Settings) -> HTMLResponse:
    return _page(
        settings,
        "This link is not valid",
        "We could not read this unsubscribe link. Please use the link from the most recent message, "
        "or reply to it and we will unsubscribe you by hand.",
        status=400,
    )


def _claim(token: str, settings: Settings) -> UnsubscribeClaim | None:
    return read_token(settings.unsubscribe_keys, token)


async def _change(engine: Engine, claim: UnsubscribeClaim, subscribed: bool, via: str) -> bool:
    found = await run_in_threadpool(change_subscription, engine, claim, subscribed, via)
    if found:
        CHANGES.labels(claim.channel, "resubscribe" if subscribed else "unsubscribe", via).inc()
    return found


def _exists(engine: Engine, claim: UnsubscribeClaim) -> bool:
    with Session(reading(engine)) as session:
        return person_of(session, claim) is not None


def _gone(settings: Settings) -> HTMLResponse:
    return _page(
        settings, "Nothing to unsubscribe", "We no longer hold your details, so you will not hear from us.", status=404
    )


@router.get("/u/{token}", response_class=HTMLResponse, summary="Unsubscribe link from a message: asks to confirm")
async def unsubscribe_link(
    request: Request, token: str, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await run_in_threadpool(_exists, engine, claim):
        return _gone(settings)
    what = CHANNEL_NAMES[claim.channel]
    return _page(
        settings,
        f"Unsubscribe from {what}?",
        f"You will not get any more marketing {what} from {settings.shop_name}.",
        action=f"/u/{token}/confirm",
        button="Unsubscribe",
    )


@router.post("/u/{token}/confirm", response_class=HTMLResponse, summary="The confirmation page's button")
async def confirm(
    request: Request, token: str, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await _change(engine, claim, subscribed=False, via="link"):
        return _gone(settings)
    what = CHANNEL_NAMES[claim.channel]
    return _page(
        settings,
        "You are unsubscribed",
        f"You will not get any more marketing {what} from {settings.shop_name}.",
        action=f"/u/{token}/resubscribe",
        button="Unsubscribed by mistake? Resubscribe",
    )


@router.post("/u/{token}", summary="RFC 8058 one-click unsubscribe (List-Unsubscribe-Post)")
async def one_click(
    request: Request, token: str, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> PlainTextResponse:
    claim = _claim(token, settings)
    if claim is None:
        return PlainTextResponse("invalid unsubscribe link", status_code=400, headers=NO_STORE)
    if not await _change(engine, claim, subscribed=False, via="one-click"):
        return PlainTextResponse("unknown subscriber", status_code=404, headers=NO_STORE)
    return PlainTextResponse("unsubscribed", headers=NO_STORE)


@router.post("/u/{token}/resubscribe", response_class=HTMLResponse, summary="Undo an unsubscribe")
async def resubscribe(
    request: Request, token: str, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await _change(engine, claim, subscribed=True, via="link"):
        return _gone(settings)
    return _page(settings, "Welcome back", f"You are subscribed to {CHANNEL_NAMES[claim.channel]} again.")
