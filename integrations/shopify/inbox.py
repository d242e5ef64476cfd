"""The webhook inbox: accept a verified webhook durably, then apply it.

Why an inbox rather than one transaction around the dedupe key and the mapping: a webhook's effects
span several transactions (ingest has its own; the catalogue and compliance topics theirs), and
Shopify gives up after a few seconds. So the dedupe key and the raw verified body are written first,
in one short transaction — from then on the call is never lost and a retry of it is a duplicate —
and the webhook is applied right after. The mapping is idempotent, so applying it again after a
crash or an error is safe: a row still `pending` is applied again by the sweep (after each accepted
webhook, and `POST /admin/shopify/webhooks/retry`) and is listed at `GET /admin/shopify/webhooks`.
An applied row keeps only its id, topic, shop and outcome: the body, which names people, is cleared.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import orjson
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from integrations.shopify.mapping import API, TopicOutcome, UnusableWebhook, apply_topic
from store.db import insert_ignoring_conflicts, reading, transaction
from store.ingest import Quarantined, quarantine
from store.models import ShopifyWebhook, iso, table_of, utcnow
from store.settings import Settings

log = logging.getLogger("breadcrumb.shopify")

SWEEP_AFTER = timedelta(seconds=60)  # a pending row this old is not being applied by its own request
SWEEP_BATCH = 20
SWEEP_ATTEMPTS = 10  # then only the admin's retry tries again (the row stays pending and listed)
ERROR_KEEP = 2000


def accept(engine: Engine, webhook_id: str, topic: str, shop_domain: str, body: bytes) -> ShopifyWebhook | None:
    """Store the verified webhook; None when we already hold this webhook id (Shopify's retry)."""
    row = ShopifyWebhook(
        webhook_id=webhook_id,
        topic=topic,
        shop_domain=shop_domain,
        received_at=utcnow(),
        body=body.decode("utf-8", errors="replace").replace("\x00", "\\u0000"),
    )
    with transaction(engine) as session:
        inserted = session.execute(
            insert_ignoring_conflicts(session, table_of(ShopifyWebhook)).returning(col(ShopifyWebhook.webhook_id)),
            [row.model_dump()],
        ).scalars()
        return row if list(inserted) else None


def apply(engine: Engine, settings: Settings, row: ShopifyWebhook) -> TopicOutcome | None:
    """Apply a stored, pending webhook and record how it went; None when it could not be applied."""
    webhook_id, body = row.webhook_id, row.body or ""  # pending rows keep their body
    try:
        payload = orjson.loads(body)
        outcome = apply_topic(engine, settings, settings.policy, row.topic, payload, row.shop_domain)
    except (orjson.JSONDecodeError, UnusableWebhook) as exc:
        reason = f"{row.topic}: the body is not JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
        with transaction(engine) as session:
            quarantine(session, API, f"shopify {row.topic}", [Quarantined(reason, body, webhook_id)])
            _finish(session, webhook_id, "unusable", reason)
        log.warning("shopify webhook %s refused: %s", webhook_id, reason)
        return None
    except Exception as exc:  # kept pending for the sweep; the merchant sees the error
        log.exception("shopify webhook %s (%s) failed; it stays pending and will be retried", webhook_id, row.topic)
        with transaction(engine) as session:
            session.execute(
                update(ShopifyWebhook)
                .where(col(ShopifyWebhook.webhook_id) == webhook_id)
                .values(attempts=col(ShopifyWebhook.attempts) + 1, outcome=f"{type(exc).__name__}: {exc}"[:ERROR_KEEP])
            )
        return None
    with transaction(engine) as session:
        _finish(session, webhook_id, "applied", outcome.note or f"{outcome.stored} events stored", outcome.person_id)
    return outcome


def _finish(session: Session, webhook_id: str, status: str, outcome: str, person_id: str | None = None) -> None:
    session.execute(
        update(ShopifyWebhook)
        .where(col(ShopifyWebhook.webhook_id) == webhook_id)
        .values(
            status=status,
            outcome=outcome,
            person_id=person_id,
            body=None,
            applied_at=utcnow(),
            attempts=col(ShopifyWebhook.attempts) + 1,
        )
    )


def sweep(
    engine: Engine,
    settings: Settings,
    older_than: timedelta = SWEEP_AFTER,
    limit: int = SWEEP_BATCH,
    max_attempts: int = SWEEP_ATTEMPTS,
) -> int:
    """Apply again pending webhooks received more than `older_than` ago and tried fewer than
    `max_attempts` times; returns how many were applied."""
    with Session(reading(engine)) as session:
        rows = session.exec(
            select(ShopifyWebhook)
            .where(
                col(ShopifyWebhook.status) == "pending",
                col(ShopifyWebhook.body).is_not(None),
                col(ShopifyWebhook.attempts) < max_attempts,
                col(ShopifyWebhook.received_at) < utcnow() - older_than,
            )
            .order_by(col(ShopifyWebhook.received_at))
            .limit(limit)
        ).all()
    return sum(1 for row in rows if apply(engine, settings, row) is not None)


def recent(engine: Engine, status: str | None = None, limit: int = 100) -> list[dict]:
    """Webhooks newest first, for the merchant: what each did, or why it is still pending."""
    query = select(ShopifyWebhook).order_by(col(ShopifyWebhook.received_at).desc()).limit(limit)
    if status:
        query = query.where(col(ShopifyWebhook.status) == status)
    with Session(reading(engine)) as session:
        rows = session.exec(query).all()
    return [
        {
            "webhook_id": r.webhook_id,
            "topic": r.topic,
            "shop_domain": r.shop_domain,
            "received_at": iso(r.received_at),
            "status": r.status,
            "attempts": r.attempts,
            "outcome": r.outcome,
            "person_id": r.person_id,
            "applied_at": iso(r.applied_at),
        }
        for r in rows
    ]
