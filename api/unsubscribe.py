"""Unsubscribe links: `GET /u/{token}` (the link in every email's footer: a confirmation page that
changes nothing, since mail scanners and link previews fetch every link), `POST /u/{token}/confirm`
(its button), `POST /u/{token}` (RFC 8058 one-click, what mailbox providers' "Unsubscribe" button
sends) and `POST /u/{token}/resubscribe` (the undo button).

No login: the token is signed (store/unsubscribe.py), so it can only unsubscribe the person and
channel it was made for. A forged, altered or truncated token gets a 400 page and changes nothing.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import get_engine, get_settings
from store.db import reading
from store.settings import Settings
from store.unsubscribe import UnsubscribeClaim, change_subscription, person_of, read_token

router = APIRouter(tags=["unsubscribe"])
CHANGES = Counter("breadcrumb_subscription_changes_total", "Unsubscribes and re-subscribes through signed links",
                  ["channel", "action", "via"])
CHANNEL_NAMES = {"email": "emails", "sms": "text messages"}
NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _page(settings: Settings, title: str, body: str, status: int = 200) -> HTMLResponse:
    shop = escape(settings.shop_name)
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{escape(title)} · {shop}</title></head>
<body style="margin:0;background:#f6f4f1;font-family:Helvetica,Arial,sans-serif;color:#222;">
<main style="max-width:480px;margin:64px auto;padding:32px;background:#fff;border-radius:8px;line-height:1.5;">
<p style="font-weight:bold;margin:0 0 16px 0;">{shop}</p>
<h1 style="font-size:22px;margin:0 0 12px 0;">{escape(title)}</h1>
{body}
</main></body></html>"""
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _invalid(settings: Settings) -> HTMLResponse:
    return _page(settings, "This link is not valid",
                 "<p>We could not read this unsubscribe link. Please use the link from the most recent message, "
                 "or reply to it and we will unsubscribe you by hand.</p>", status=400)


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
    return _page(settings, "Nothing to unsubscribe",
                 "<p>We no longer hold your details, so you will not hear from us.</p>", status=404)


@router.get("/u/{token}", response_class=HTMLResponse, summary="Unsubscribe link from a message: asks to confirm")
async def unsubscribe_link(request: Request, token: str, engine: Engine = Depends(get_engine),
                           settings: Settings = Depends(get_settings)) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await run_in_threadpool(_exists, engine, claim):
        return _gone(settings)
    what = CHANNEL_NAMES[claim.channel]
    return _page(settings, f"Unsubscribe from {what}?",
                 f"<p>You will not get any more marketing {what} from {escape(settings.shop_name)}.</p>"
                 f'<form method="post" action="/u/{escape(token)}/confirm">'
                 f'<button type="submit" style="padding:8px 16px;">Unsubscribe</button>'
                 "</form>")


@router.post("/u/{token}/confirm", response_class=HTMLResponse, summary="The confirmation page's button")
async def confirm(request: Request, token: str, engine: Engine = Depends(get_engine),
                  settings: Settings = Depends(get_settings)) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await _change(engine, claim, subscribed=False, via="link"):
        return _gone(settings)
    what = CHANNEL_NAMES[claim.channel]
    return _page(settings, "You are unsubscribed",
                 f"<p>You will not get any more marketing {what} from {escape(settings.shop_name)}.</p>"
                 f'<form method="post" action="/u/{escape(token)}/resubscribe">'
                 f'<button type="submit" style="padding:8px 16px;">Unsubscribed by mistake? Resubscribe</button>'
                 "</form>")


@router.post("/u/{token}", summary="RFC 8058 one-click unsubscribe (List-Unsubscribe-Post)")
async def one_click(request: Request, token: str, engine: Engine = Depends(get_engine),
                    settings: Settings = Depends(get_settings)) -> PlainTextResponse:
    claim = _claim(token, settings)
    if claim is None:
        return PlainTextResponse("invalid unsubscribe link", status_code=400, headers=NO_STORE)
    if not await _change(engine, claim, subscribed=False, via="one-click"):
        return PlainTextResponse("unknown subscriber", status_code=404, headers=NO_STORE)
    return PlainTextResponse("unsubscribed", headers=NO_STORE)


@router.post("/u/{token}/resubscribe", response_class=HTMLResponse, summary="Undo an unsubscribe")
async def resubscribe(request: Request, token: str, engine: Engine = Depends(get_engine),
                      settings: Settings = Depends(get_settings)) -> HTMLResponse:
    claim = _claim(token, settings)
    if claim is None:
        return _invalid(settings)
    if not await _change(engine, claim, subscribed=True, via="link"):
        return _gone(settings)
    return _page(settings, "Welcome back", f"<p>You are subscribed to {CHANNEL_NAMES[claim.channel]} again.</p>")
