"""Segment membership in the store: the facts of many people loaded in a few queries per batch,
judged by the pure rule (`journeys.segments.is_member`), and kept in `segment_memberships` — one
row per stay, with its entry and exit times.

Ingest refreshes the people a call touches in its own transaction (`refresh`); the
`segment_refresh` workflow refreshes everyone (`refresh_everyone`): windows that slid by, consent
changed outside ingest, people merged away or deleted, segments no longer configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Engine, and_, func, update
from sqlalchemy import select as columns_of
from sqlmodel import Session, col, select

from journeys import taxonomy
from journeys.segments import Condition, PersonFacts, StoredEvent, channel_consent, facts_of, members_of
from store.db import insert_ignoring_conflicts, reading, transaction
from store.models import Event, Identifier, Person, SegmentMembership, as_utc, table_of

BATCH = 500  # people judged per round of queries
CHANNEL_OF = {"email": "email", "phone": "sms"}  # identifier kind → the channel it reaches


def _event_names(segments: Iterable[Condition]) -> set[str]:
    """The event names the segments read (orders are read from their events)."""
    names: set[str] = set()
    for segment in segments:
        names |= {rule.name for rule in segment.event_rules()}
        if segment.reads_orders():
            names |= {taxonomy.ORDER_COMPLETED, taxonomy.ORDER_CANCELLED}
    return names


def load_facts(session: Session, person_ids: list[str], segments: dict[str, Condition]) -> dict[str, PersonFacts]:
    """The facts of these people (those who exist) that `segments` read: three queries, whatever the
    number of people and conditions. Only the events the segments name are read; the other copy of
    a client/server event (`duplicate_of`) never counts."""
    if not person_ids:
        return {}
    people = session.execute(  # columns, not rows: no ORM objects, no unused JSON to decode
        columns_of(
            col(Person.id),
            col(Person.traits),
            col(Person.suppressed),
            col(Person.email_unsubscribed),
            col(Person.sms_consent),
        ).where(col(Person.id).in_(person_ids))
    ).all()
    addresses: dict[str, set[str]] = {}
    for person_id, kind in session.exec(
        select(col(Identifier.person_id), col(Identifier.kind))
        .where(col(Identifier.person_id).in_(person_ids), col(Identifier.kind).in_(tuple(CHANNEL_OF)))
        .distinct()
    ).all():
        addresses.setdefault(person_id, set()).add(CHANNEL_OF[kind])
    names = _event_names(segments.values())
    events: dict[str, list[StoredEvent]] = {}
    if names:
        rows = session.execute(
            columns_of(
                col(Event.person_id),
                col(Event.message_id),
                col(Event.name),
                col(Event.timestamp),
                col(Event.properties),
                col(Event.order_id),
            ).where(col(Event.person_id).in_(person_ids), col(Event.name).in_(names), col(Event.duplicate_of).is_(None))
        ).all()
        for person_id, message_id, name, timestamp, properties, order_id in rows:
            events.setdefault(cast(str, person_id), []).append(  # selected by person: never None
                StoredEvent(
                    message_id=message_id,
                    name=name,
                    at=as_utc(timestamp),
                    properties=properties or {},
                    order_id=order_id,
                )
            )
    return {
        person_id: facts_of(
            person_id,
            traits or {},
            events.get(person_id, []),
            consent=channel_consent(suppressed, email_unsubscribed, sms_consent),
            address={channel: channel in addresses.get(person_id, set()) for channel in CHANNEL_OF.values()},
        )
        for person_id, traits, suppressed, email_unsubscribed, sms_consent in people
    }


def members(
    session: Session, person_ids: list[str], segments: dict[str, Condition], now: datetime
) -> dict[str, set[str]]:
    """Person → the segments (of `segments`) they are in at `now`; people who do not exist are left out.
    No segments: nothing is read (and nobody is returned)."""
    if not segments:
        return {}
    found = load_facts(session, person_ids, segments)
    return {person_id: members_of(segments, facts, now) for person_id, facts in found.items()}


@dataclass
class Refreshed:
    entered: int = 0
    left: int = 0

    def add(self, other: Refreshed) -> None:
        self.entered += other.entered
        self.left += other.left


def refresh(session: Session, person_ids: Iterable[str], segments: dict[str, Condition], now: datetime) -> Refreshed:
    """Bring these people's open stays in line with their membership at `now`: a stay opens for each
    segment they entered, and closes (`left_at = now`) for each they left. Stays in segments no longer
    configured, and of people who no longer exist, close too."""
    ids = sorted(set(person_ids))
    if not ids:
        return Refreshed()
    now_in = members(session, ids, segments, now)
    wanted = {(name, person_id) for person_id, names in now_in.items() for name in names}
    open_stays = set(
        session.exec(
            select(col(SegmentMembership.segment), col(SegmentMembership.person_id)).where(
                col(SegmentMembership.person_id).in_(ids), col(SegmentMembership.left_at).is_(None)
            )
        ).all()
    )
    entered = sorted(wanted - open_stays)
    left = sorted(open_stays - wanted)
    if entered:
        session.execute(
            insert_ignoring_conflicts(session, table_of(SegmentMembership)),
            [{"segment": name, "person_id": person_id, "entered_at": now} for name, person_id in entered],
        )
    for name in {name for name, _ in left}:
        session.execute(
            update(SegmentMembership)
            .where(
                col(SegmentMembership.segment) == name,
                col(SegmentMembership.person_id).in_([p for n, p in left if n == name]),
                col(SegmentMembership.left_at).is_(None),
            )
            .values(left_at=now)
        )
    return Refreshed(entered=len(entered), left=len(left))


def refresh_everyone(
    engine: Engine,
    segments: dict[str, Condition],
    now: datetime,
    batch: int = BATCH,
    progress: Callable[[], None] = lambda: None,
) -> Refreshed:
    """The scheduled refresh: every person, BATCH at a time (one short transaction each, `progress`
    called after each), judged on every segment — windows slide by, and consent changes (an
    unsubscribe link) and admin edits do not pass through ingest; then the stays of people no longer
    in the store, or in segments no longer configured, are closed."""
    total = Refreshed()
    after = ""
    while segments:
        with Session(reading(engine)) as session:
            ids = list(
                session.exec(
                    select(col(Person.id)).where(col(Person.id) > after).order_by(col(Person.id)).limit(batch)
                ).all()
            )
        if not ids:
            break
        with transaction(engine) as session:
            total.add(refresh(session, ids, segments, now))
        after = ids[-1]
        progress()
    with transaction(engine) as session:
        stale = and_(
            col(SegmentMembership.left_at).is_(None),
            col(SegmentMembership.segment).not_in(list(segments))
            | col(SegmentMembership.person_id).not_in(select(col(Person.id))),
        )
        closed = session.execute(update(SegmentMembership).where(stale).values(left_at=now))
        total.left += closed.rowcount or 0  # type: ignore[attr-defined]
    return total


def counts(session: Session, segments: Iterable[str]) -> dict[str, int]:
    """How many people are in each segment now (every configured one, 0 when empty)."""
    found = dict(
        session.exec(
            select(col(SegmentMembership.segment), func.count())
            .where(col(SegmentMembership.left_at).is_(None))
            .group_by(col(SegmentMembership.segment))
        ).all()
    )
    return {name: int(found.get(name, 0)) for name in segments}


def people_in(session: Session, segment: str, after: str | None, limit: int) -> list[dict[str, object]]:
    """A page of a segment's current members, by person id after `after` (the cursor), with when they entered."""
    query = select(SegmentMembership).where(
        col(SegmentMembership.segment) == segment, col(SegmentMembership.left_at).is_(None)
    )
    if after:
        query = query.where(col(SegmentMembership.person_id) > after)
    rows = session.exec(query.order_by(col(SegmentMembership.person_id)).limit(limit)).all()
    return [{"person_id": r.person_id, "entered_at": as_utc(r.entered_at).isoformat()} for r in rows]
