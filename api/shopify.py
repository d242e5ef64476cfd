"""`POST /shopify/webhooks`: every Shopify topic on one route, verified before anything is read.

The signature is checked over the raw body (nothing is parsed before), the webhook stored once per
`X-Shopify-Webhook-Id` and applied right away (integrations/shopify/inbox.py says why an inbox).
Topics Breadcrumb does not map are answered 200 and only counted.
"""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy import Engine

from api.body import BadBody, read_limited
from api.deps import get_engine, get_settings, in_ingest_pool, nudge_dispatcher, require_admin
from integrations.shopify import inbox
from integrations.shopify.mapping import HANDLERS
from integrations.shopify.signature import verified
from store.settings import Settings

router = APIRouter(tags=["shopify"])
admin_router = APIRouter(prefix="/admin/shopify", tags=["admin"], dependencies=[Depends(require_admin)])
WEBHOOK_LIMIT = 5 * 1024 * 1024  # a product with hundreds of variants is large; Shopify's own cap is higher
MAX_HEADER = 255
# Shopify names the shop by its permanent domain; product links are built on it, so nothing else is taken.
SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
WEBHOOKS = Counter(
    "breadcrumb_shopify_webhooks_total", "Shopify webhooks by topic and what became of them", ["topic", "result"]
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post("/shopify/webhooks", summary="Shopify webhooks (every topic; signed with the app's or webhook's secret)")
async def shopify_webhook(
    request: Request,
    background: BackgroundTasks,
    settings: Settings = Depends(get_settings),
    engine: Engine = Depends(get_engine),
) -> JSONResponse:
    if not settings.shopify_webhook_secret:
        WEBHOOKS.labels("", "unauthorized").inc()
        return _error(401, "Shopify webhooks are not configured: set BREADCRUMB_SHOPIFY_WEBHOOK_SECRET")
    try:
        body = await read_limited(request, WEBHOOK_LIMIT)
    except BadBody as exc:
        return _error(exc.status, exc.message)
    if not verified(body, request.headers.get("x-shopify-hmac-sha256"), settings.shopify_webhook_secret):
        WEBHOOKS.labels("", "unauthorized").inc()
        return _error(
            401,
            "X-Shopify-Hmac-Sha256 is missing or does not match the body signed with BREADCRUMB_SHOPIFY_WEBHOOK_SECRET",
        )
    topic = request.headers.get("x-shopify-topic", "").strip()
    webhook_id = request.headers.get("x-shopify-webhook-id", "").strip()
    shop_domain = request.headers.get("x-shopify-shop-domain", "").strip().lower()
    for name, value in (
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Webhook-Id", webhook_id),
        ("X-Shopify-Shop-Domain", shop_domain),
    ):
        if not value or len(value) > MAX_HEADER:
            return _error(400, f"{name} header is required (at most {MAX_HEADER} characters)")
    if not SHOP_DOMAIN.fullmatch(shop_domain):
        return _error(400, f"X-Shopify-Shop-Domain {shop_domain[:80]!r} is not a shop's myshopify.com domain")
    if topic not in HANDLERS:
        WEBHOOKS.labels(topic[:64], "ignored").inc()
        return JSONResponse({"ok": True, "ignored": f"topic {topic} is not used by Breadcrumb"})
    row = await in_ingest_pool(request, inbox.accept, engine, webhook_id, topic, shop_domain, body)
    if row is None:
        WEBHOOKS.labels(topic, "duplicate").inc()
        return JSONResponse({"ok": True, "duplicate": True})
    WEBHOOKS.labels(topic, "accepted").inc()
    outcome = await in_ingest_pool(request, inbox.apply, engine, settings, row)
    if outcome is not None and outcome.signals:
        nudge_dispatcher(request)
    background.add_task(run_in_threadpool, inbox.sweep, engine, settings)
    return JSONResponse({"ok": True})


@admin_router.get("/webhooks", summary="Shopify webhooks received: what each did, or why it is pending")
def list_webhooks(
    status: str | None = Query(None, pattern="^(pending|applied|unusable)$"),
    limit: int = Query(100, ge=1, le=1000),
    engine: Engine = Depends(get_engine),
) -> list[dict]:
    return inbox.recent(engine, status, limit)


@admin_router.post("/webhooks/retry", summary="Apply again the Shopify webhooks still pending")
async def retry_webhooks(
    request: Request, settings: Settings = Depends(get_settings), engine: Engine = Depends(get_engine)
) -> dict:
    applied = await run_in_threadpool(inbox.sweep, engine, settings, timedelta(0), 1000, 2**31 - 1)
    nudge_dispatcher(request)
    return {"applied": applied}


router.include_router(admin_router)
