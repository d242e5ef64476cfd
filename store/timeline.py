"""A person's timeline: "why did she get this?" answered in one read, in time order — their events
from every device, identity decisions (devices and identifiers linked, merges, conflicts), segment
entries and exits, every routing decision, guardrail wait or skip and journey end with its reason,
every message with its variant and status, and each purchase with the message it is credited to.

One small function per source, each reading at most `limit` of its newest rows before `before`;
`timeline` merges them and keeps the newest `limit` (`page`), so a long-lived customer costs one
bounded query per source."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select as select_columns  # sqlmodel's select takes at most four columns
from sqlalchemy import func, or_, true
from sqlmodel import Session, col, select

from journeys.attribution import Order, Touch, credit, order_revenue
from journeys.taxonomy import ORDER_COMPLETED
from store.models import (
    Event,
    Identifier,
    IdentityConflict,
    JourneyLog,
    Message,
    PersonMerge,
    SegmentMembership,
    as_utc,
    iso,
    table_of,
)

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000

# Kinds, in the order items of one instant are shown: what the shopper did, who they turned out to
# be, then what the engine decided because of it.
KINDS = (
    "event",
    "purchase",
    "identity",
    "merge",
    "conflict",
    "segment",
    "routing",
    "guardrail",
    "message",
    "journey",
)
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Item:
    """One line of the timeline. `device` is the anonymous id the line came from (events, device
    links, shared-device conflicts); `ref` names the row behind it (an event's or message's id, a
    journey's workflow id) so support can look it up."""

    at: datetime
    kind: str
    title: str
    detail: str = ""
    device: str | None = None
    source: str | None = None
    ref: str | None = None

    def as_json(self) -> dict:
        return {**asdict(self), "at": iso(self.at)}


@dataclass(frozen=True)
class Window:
    """What one read asks for: the newest `limit` items strictly before `before` (None: up to now)."""

    before: datetime | None = None
    limit: int = DEFAULT_LIMIT
    attribution_window: timedelta = timedelta(days=5)

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")


@dataclass
class Timeline:
    person_id: str
    items: list[Item]  # oldest first
    older: datetime | None = None  # pass as `before` for the page before this one; None: nothing older

    def as_json(self) -> dict:
        return {
            "person_id": self.person_id,
            "items": [item.as_json() for item in self.items],
            "older": iso(self.older),
        }


def in_order(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda item: (item.at, _RANK.get(item.kind, len(KINDS))))


def page(items: Iterable[Item], limit: int) -> tuple[list[Item], datetime | None]:
    """The newest `limit` items, oldest first, and the `before` of the next (older) page. The cut
    never splits one instant between pages (its items all go to the older page), unless one instant
    alone fills the page — then they stay here, in full or to the limit, rather than never showing."""
    ordered = in_order(items)
    if len(ordered) <= limit:
        return ordered, None
    kept = ordered[-limit:]
    boundary = kept[0].at
    if ordered[-limit - 1].at == boundary:
        newer = [item for item in kept if item.at > boundary]
        if newer:
            return newer, boundary + timedelta(microseconds=1)
    return kept, boundary


Source = Callable[[Session, str, Window], list[Item]]


def _event_item(event: Event, attribution: str | None) -> Item:
    return Item(
        at=as_utc(event.timestamp),
        kind="event" if attribution is None else "purchase",
        title=event.name if event.name == event.original_name else f"{event.name} (sent as {event.original_name})",
        detail=describe(event.properties) if attribution is None else attribution,
        device=event.anonymous_id,
        source=event.source,
        ref=event.message_id,
    )


def describe(properties: dict | None, most: int = 6) -> str:
    """A short `key: value` summary of an event's properties (nested values left out)."""
    shown = [f"{k}: {v}" for k, v in (properties or {}).items() if isinstance(v, (str, int, float, bool))]
    return ", ".join(shown[:most]) + (" …" if len(shown) > most else "")


def events(session: Session, person_id: str, window: Window) -> list[Item]:
    """Every event of the person, from each of their devices and the shop's server; the other copy
    of an event stored twice (client and server) is left out. Purchases carry their attribution."""
    rows = session.exec(
        select(Event)
        .where(
            col(Event.person_id) == person_id,
            _before(col(Event.timestamp), window),
            col(Event.duplicate_of).is_(None),
        )
        .order_by(col(Event.timestamp).desc(), col(Event.id).desc())
        .limit(window.limit)
    ).all()
    orders = [e for e in rows if e.name == ORDER_COMPLETED]
    notes = attributions(session, person_id, orders, window.attribution_window)
    return [_event_item(e, notes.get(e.message_id)) for e in rows]


def attributions(session: Session, person_id: str, orders: Sequence[Event], window: timedelta) -> dict[str, str]:
    """Each order's attribution note by the event's message id: the reports' rule (the last message
    sent inside the attribution window before it), read from the messages sent then."""
    if not orders:
        return {}
    first, last = min(as_utc(o.timestamp) for o in orders), max(as_utc(o.timestamp) for o in orders)
    sent = session.exec(
        select(Message).where(
            col(Message.person_id) == person_id,
            col(Message.status) == "sent",
            col(Message.sent_at) >= first - window,
            col(Message.sent_at) <= last,
        )
    ).all()
    touches = [
        Touch(message_id=m.id, person_id=person_id, journey=m.journey, step=m.step, sent_at=as_utc(m.sent_at))
        for m in sent
        if m.sent_at is not None
    ]
    notes = {}
    for o in orders:
        order = Order(
            order_key=o.order_id or o.message_id,
            person_id=person_id,
            ordered_at=as_utc(o.timestamp),
            revenue=order_revenue(o.properties),
        )
        attribution = credit(order, touches, window)
        message = f" (message {attribution.touch.message_id})" if attribution.touch else ""
        notes[o.message_id] = attribution.note + message
    return notes


IDENTIFIER_TITLES = {
    "anonymous_id": "device linked",
    "user_id": "user id linked",
    "email": "email linked",
    "phone": "phone linked",
}


def identifiers(session: Session, person_id: str, window: Window) -> list[Item]:
    """When each device and identifier became theirs (merges bring the absorbed person's along)."""
    rows = session.exec(
        select(Identifier)
        .where(col(Identifier.person_id) == person_id, _before(col(Identifier.created_at), window))
        .order_by(col(Identifier.created_at).desc())
        .limit(window.limit)
    ).all()
    return [
        Item(
            at=as_utc(i.created_at),
            kind="identity",
            title=IDENTIFIER_TITLES.get(i.kind, f"{i.kind} linked"),
            detail=i.value,
            device=i.value if i.kind == "anonymous_id" else None,
        )
        for i in rows
    ]


def merges(session: Session, person_id: str, window: Window) -> list[Item]:
    rows = session.exec(
        select(PersonMerge)
        .where(col(PersonMerge.person_id) == person_id, _before(col(PersonMerge.at), window))
        .order_by(col(PersonMerge.at).desc())
        .limit(window.limit)
    ).all()
    return [
        Item(
            at=as_utc(m.at),
            kind="merge",
            title="merged with another profile",
            detail=f"person {m.absorbed_person_id} was found to be the same shopper: "
            "their devices, events, journeys and messages are this person's now",
            ref=m.absorbed_person_id,
        )
        for m in rows
    ]


def conflicts(session: Session, person_id: str, window: Window) -> list[Item]:
    """Identifies that named someone else's identity: recorded, never merged (a person decides)."""
    rows = session.exec(
        select(IdentityConflict)
        .where(
            or_(
                col(IdentityConflict.owner_person_id) == person_id,
                col(IdentityConflict.claimant_person_id) == person_id,
            ),
            _before(col(IdentityConflict.created_at), window),
        )
        .order_by(col(IdentityConflict.created_at).desc())
        .limit(window.limit)
    ).all()
    return [_conflict_item(c, person_id) for c in rows]


def _conflict_item(conflict: IdentityConflict, person_id: str) -> Item:
    other = conflict.claimant_person_id if conflict.owner_person_id == person_id else conflict.owner_person_id
    if conflict.kind == "shared_device":
        title = "shared device"
        detail = f"device {conflict.anonymous_id} is also used by person {other}: nothing merged"
    else:
        named = ", ".join(f"{kind} → {pid}" for kind, pid in (conflict.identifiers or {}).items())
        title = "identify named two known people"
        detail = f"{named}: nothing merged or copied (merge with alias or merge_customers)"
    return Item(
        at=as_utc(conflict.created_at),
        kind="conflict",
        title=title,
        detail=detail,
        device=conflict.anonymous_id,
        ref=conflict.message_id,
    )


# Journal kinds that are a message's outcome: the message line already says it.
MESSAGE_OUTCOMES = ("sent", "failed", "skipped")
GUARDRAILS = ("waiting", "skipped")


def journal(session: Session, person_id: str, window: Window) -> list[Item]:
    """Routing decisions (with routes that start no journey), guardrail waits and skips, and how each
    journey ended, each with its reason. Attribution lines are left out: each purchase carries its own."""
    rows = session.exec(
        select(JourneyLog)
        .where(
            col(JourneyLog.person_id) == person_id,
            _before(col(JourneyLog.at), window),
            col(JourneyLog.kind) != "conversion",
            or_(col(JourneyLog.message_id).is_(None), col(JourneyLog.kind).not_in(MESSAGE_OUTCOMES)),
        )
        .order_by(col(JourneyLog.at).desc(), col(JourneyLog.id).desc())
        .limit(window.limit)
    ).all()
    return [_journal_item(line) for line in rows]


def _journal_item(line: JourneyLog) -> Item:
    step = f" step {line.step}" if line.step is not None else ""
    if line.kind == "decision":
        kind, title = "routing", f"routed: {line.journey}"
    elif line.kind in GUARDRAILS:
        until = f" until {as_utc(line.until):%Y-%m-%d %H:%M} UTC" if line.until and line.kind == "waiting" else ""
        kind, title = "guardrail", f"{line.journey}{step}: {line.kind}{until}"
    else:
        kind, title = "journey", f"{line.journey}{step}: {line.kind}"
    return Item(at=as_utc(line.at), kind=kind, title=title, detail=line.reason, ref=line.workflow_id)


def _before(column: Any, window: Window) -> Any:
    return column < window.before if window.before is not None else true()


def messages(session: Session, person_id: str, window: Window) -> list[Item]:
    """Every message a journey decided to send, at its send time (or when decided, if never sent),
    with its channel, step, subject, status and experiment variant."""
    at = func.coalesce(col(Message.sent_at), col(Message.created_at))
    rows = session.execute(
        select_columns(
            col(Message.id),
            col(Message.journey),
            col(Message.step),
            col(Message.channel),
            col(Message.subject),
            col(Message.status),
            col(Message.reason),
            col(Message.created_at),
            col(Message.sent_at),
            col(Message.variant),
        )
        .where(col(Message.person_id) == person_id, _before(at, window))
        .order_by(at.desc())
        .limit(window.limit)
    ).all()
    items = []
    for m in rows:
        facts = [m.status] + ([f"variant {m.variant}"] if m.variant else []) + ([m.reason] if m.reason else [])
        items.append(
            Item(
                at=as_utc(m.sent_at or m.created_at),
                kind="message",
                title=f"{m.channel} · {m.journey} step {m.step}: {m.subject}",
                detail=" · ".join(facts),
                source=m.channel,
                ref=m.id,
            )
        )
    return items


def segments(session: Session, person_id: str, window: Window) -> list[Item]:
    """Segment entries and exits (store/segments.py): the newest of each, as a stay entered long ago
    may have been left lately."""
    c = table_of(SegmentMembership).c
    items = []
    for moment, verb in ((c.entered_at, "entered"), (c.left_at, "left")):
        rows = session.execute(
            select_columns(c.segment, moment)
            .where(c.person_id == person_id, moment.is_not(None), _before(moment, window))
            .order_by(moment.desc())
            .limit(window.limit)
        ).all()
        items += [Item(at=as_utc(at), kind="segment", title=f"{verb} segment {segment}") for segment, at in rows]
    return items


SOURCES: dict[str, Source] = {
    "events": events,
    "identifiers": identifiers,
    "merges": merges,
    "conflicts": conflicts,
    "segments": segments,
    "journal": journal,
    "messages": messages,
}


def timeline(session: Session, person_id: str, window: Window) -> Timeline:
    """The person's newest `window.limit` items before `window.before`, oldest first."""
    found: list[Item] = []
    for read in SOURCES.values():
        found += read(session, person_id, window)
    items, older = page(found, window.limit)
    return Timeline(person_id=person_id, items=items, older=older)
