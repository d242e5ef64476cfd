"""Read-side queries for the admin API: profiles, messages, quarantine, identity conflicts."""

from __future__ import annotations


from sqlalchemy import or_
from sqlmodel import Session, col, select

from store.models import Event, Identifier, IdentityConflict, JourneyRun, Message, Person, Rejected, iso


def message_view(message: Message) -> dict:
    return {
        "message_id": message.id,
        "person_id": message.person_id,
        "journey": message.journey,
        "step": message.step,
        "channel": message.channel,
        "recipient": message.recipient,
        "subject": message.subject,
        "items": message.items,
        "status": message.status,
        "reason": message.reason,
        "attempts": message.attempts,
        "idempotency_key": message.idempotency_key,
        "created_at": iso(message.created_at),
        "sent_at": iso(message.sent_at),
    }


def message_detail(session: Session, message_id: str) -> dict | None:
    """One message with what was rendered: both parts of an email, the SMS text, the unsubscribe link."""
    message = session.get(Message, message_id)
    if message is None:
        return None
    return {
        **message_view(message),
        "template": message.template,
        "variant": message.variant,  # the experiment variant (docs/experiments.md), None for a plain step
        "workflow_id": message.workflow_id,
        "cart_id": message.cart_id,
        "text": message.body,
        "html": message.html,
        "unsubscribe_url": message.unsubscribe_url,
    }


def messages_of(session: Session, person_id: str | None = None, limit: int = 500) -> list[dict]:
    query = select(Message).order_by(col(Message.created_at), col(Message.step)).limit(limit)
    if person_id:
        query = query.where(col(Message.person_id) == person_id)
    return [message_view(m) for m in session.exec(query).all()]


def journeys_of(session: Session, person_id: str) -> list[dict]:
    """Routing decisions and the journeys they started, oldest first."""
    runs = session.exec(
        select(JourneyRun).where(col(JourneyRun.person_id) == person_id).order_by(col(JourneyRun.started_at))
    ).all()
    return [
        {
            "workflow_id": run.workflow_id,
            "route": run.route,
            "status": run.status,
            "reason": run.reason,
            "cart_id": run.cart_id,
            "cart_value": run.cart_value,
            "started_at": iso(run.started_at),
            "ended_at": iso(run.ended_at),
        }
        for run in runs
    ]


def profile(session: Session, person_id: str, events_limit: int = 1000) -> dict | None:
    person = session.get(Person, person_id)
    if person is None:
        return None
    identifiers: dict[str, list[str]] = {"user_id": [], "email": [], "phone": [], "anonymous_id": []}
    for kind, value in session.exec(
        select(col(Identifier.kind), col(Identifier.value))
        .where(col(Identifier.person_id) == person_id)
        .order_by(col(Identifier.id))
    ).all():
        identifiers.setdefault(kind, []).append(value)
    events = session.exec(
        select(Event)
        .where(col(Event.person_id) == person_id)
        .order_by(col(Event.timestamp), col(Event.id))
        .limit(events_limit)
    ).all()
    return {
        "person_id": person.id,
        "user_id": identifiers["user_id"][0] if identifiers["user_id"] else None,
        "user_ids": identifiers["user_id"],
        "emails": identifiers["email"],
        "phones": identifiers["phone"],
        "anonymous_ids": identifiers["anonymous_id"],
        "traits": person.traits,
        "timezone": person.timezone,
        "suppressed": person.suppressed,
        "email_unsubscribed": person.email_unsubscribed,
        "sms_consent": person.sms_consent,
        "created_at": iso(person.created_at),
        "identified_at": iso(person.identified_at),
        "events": [
            {
                "name": e.name,
                "original_name": e.original_name,
                "type": e.type,
                "message_id": e.message_id,
                "anonymous_id": e.anonymous_id,
                "timestamp": iso(e.timestamp),
                "source": e.source,
                "properties": e.properties,
            }
            for e in events
        ],
        "journeys": journeys_of(session, person_id),
        "messages": messages_of(session, person_id),
    }


def rejected(session: Session, limit: int = 100, offset: int = 0) -> list[dict]:
    rows = session.exec(select(Rejected).order_by(col(Rejected.id).desc()).limit(limit).offset(offset)).all()
    return [
        {
            "id": r.id,
            "received_at": iso(r.received_at),
            "api": r.api,
            "endpoint": r.endpoint,
            "message_id": r.message_id,
            "reason": r.reason,
            "payload": r.payload,
        }
        for r in rows
    ]


def conflicts(session: Session, limit: int = 100, offset: int = 0, person_id: str | None = None) -> list[dict]:
    """Identity conflicts, newest first: who owned what, who claimed it, and the identify that did."""
    query = select(IdentityConflict)
    if person_id:
        query = query.where(
            or_(
                col(IdentityConflict.owner_person_id) == person_id,
                col(IdentityConflict.claimant_person_id) == person_id,
            )
        )
    rows = session.exec(query.order_by(col(IdentityConflict.id).desc()).limit(limit).offset(offset)).all()
    return [
        {
            "id": c.id,
            "kind": c.kind,
            "created_at": iso(c.created_at),
            "owner_person_id": c.owner_person_id,
            "claimant_person_id": c.claimant_person_id,
            "anonymous_id": c.anonymous_id,
            "identifiers": c.identifiers,
            "message_id": c.message_id,
        }
        for c in rows
    ]
