"""Everything we hold on one person, for a data-subject request (Shopify's `customers/data_request`)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from store import queries
from store.models import Event, IdentityConflict, JourneyLog, Message, PersonMerge, iso


def person_export(session: Session, person_id: str) -> dict | None:
    """The profile with every event (no limit, with context), every message as rendered, every
    journey decision, the identity conflicts naming them and the profiles merged into them; None
    for an unknown person."""
    profile = queries.profile(session, person_id, events_limit=2**31 - 1)
    if profile is None:
        return None
    events = session.exec(
        select(Event).where(Event.person_id == person_id).order_by(col(Event.timestamp), col(Event.id))
    ).all()
    messages = session.exec(
        select(Message).where(Message.person_id == person_id).order_by(col(Message.created_at))
    ).all()
    log = session.exec(select(JourneyLog).where(JourneyLog.person_id == person_id).order_by(col(JourneyLog.at))).all()
    conflicts = session.exec(
        select(IdentityConflict).where(
            (IdentityConflict.owner_person_id == person_id) | (IdentityConflict.claimant_person_id == person_id)
        )
    ).all()
    merges = session.exec(
        select(PersonMerge).where(PersonMerge.person_id == person_id).order_by(col(PersonMerge.at))
    ).all()
    return {
        **profile,
        "events": [
            {**view, "context": e.context, "received_at": iso(e.received_at), "user_id": e.user_id}
            for view, e in zip(profile["events"], events, strict=True)
        ],
        "messages": [queries.message_detail(session, m.id) for m in messages],
        "journey_log": [
            {
                "workflow_id": n.workflow_id,
                "journey": n.journey,
                "step": n.step,
                "kind": n.kind,
                "reason": n.reason,
                "at": iso(n.at),
                "until": iso(n.until),
            }
            for n in log
        ],
        "identity_conflicts": [
            {"kind": c.kind, "anonymous_id": c.anonymous_id, "created_at": iso(c.created_at)} for c in conflicts
        ],
        "merges": [{"absorbed_person_id": m.absorbed_person_id, "at": iso(m.at)} for m in merges],
    }
