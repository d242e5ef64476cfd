"""The one ingest core behind both front doors (Segment and Customer.io).

A request's valid messages are written in one transaction: duplicates dropped by messageId,
events bulk-inserted, identify moments resolved in order, invalid input quarantined with reasons.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, case, or_, text, update
from sqlmodel import Session, col, select

from journeys import taxonomy
from journeys.attribution import order_revenue
from journeys.links import LinkHosts
from journeys.policy import Policy
from store import message_ids, outbox, segments
from store.db import transaction
from store.dialect import among, bind_processors, is_postgresql
from store.identity import (
    Claim,
    InvalidIdentifier,
    attach_identifier,
    moved_events,
    find_person,
    identify,
    identity_writes_together,
    lock_person,
    lock_up_front,
    merge_people,
    normalise_email,
    normalise_phone,
    owner,
    owners_of,
    retry_moved_locks,
    update_device_owner,
    valid_timezone,
)
from store.catalog import upsert_from_events
from store.models import Event, Rejected, as_utc, table_of, utcnow

PAYLOAD_KEEP = 64 * 1024  # quarantined payloads are kept up to this many characters
FLAGGED_LINK_KEEP = 512  # a refused link is kept in the event's flags up to this many characters


@dataclass(slots=True)
class Incoming:
    """One message in the shape both front doors agree on."""

    type: str  # identify | track | page | screen | alias | group
    original_name: str
    timestamp: datetime
    received_at: datetime
    message_id: str = ""
    anonymous_id: str | None = None
    user_id: str | None = None
    email: str | None = None  # set by front doors that key people by email (normalised)
    properties: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    source: str = "client"
    previous_id: str | None = None
    # Trusted senders (server keys, Customer.io, a verified user_hash) may change consent, add
    # identifiers to a known person and merge people; a browser key may not.
    trusted: bool = False
    flags: dict = field(default_factory=dict)  # what ingest corrected or refused, kept on the event
    refused: list[str] = field(default_factory=list)  # parts not applied, said in the quarantine

    def __post_init__(self) -> None:
        if not self.message_id:
            self.message_id = str(uuid.uuid4())

    @property
    def name(self) -> str:
        return taxonomy.canonical_name(self.original_name) if self.type == "track" else self.original_name


@dataclass(slots=True)
class Quarantined:
    reason: str
    payload: str
    message_id: str | None = None


@dataclass(frozen=True)
class Guards:
    """What ingest checks in everything a front door hands it: message links stay on the shop's
    hosts, and no client clock pins the future."""

    link_hosts: LinkHosts
    max_clock_skew: timedelta

    @classmethod
    def from_settings(cls, settings) -> Guards:
        return cls(settings.message_link_hosts, timedelta(seconds=settings.max_clock_skew))

    def apply(self, m: Incoming) -> None:
        """Clamp a device's timestamp (a client event's) too far ahead of its arrival to the arrival,
        and take links that point off the shop out of the properties of the shopping events messages
        are made from (of the event and of its `products[]`), so the catalog and messages fall back
        to the shop's own; the originals are kept in the event's flags."""
        if m.source == "client" and m.timestamp > m.received_at + self.max_clock_skew:
            m.flags["timestamp_clamped"] = m.timestamp.isoformat()
            m.timestamp = m.received_at
        if m.type != "track" or m.name not in taxonomy.ACTIVITY_EVENTS:
            return
        foreign: dict[str, str] = {}
        properties = self._without_foreign(m.properties, "", foreign)
        products = properties.get("products")
        if isinstance(products, list):
            lines = [
                self._without_foreign(line, f"products[{i}].", foreign) if isinstance(line, dict) else line
                for i, line in enumerate(products)
            ]
            properties = {**properties, "products": lines} if foreign else properties
        if foreign:
            m.properties = properties
            m.flags["foreign_links"] = foreign

    def _without_foreign(self, properties: dict, where: str, foreign: dict[str, str]) -> dict:
        """`properties` without its foreign links (the same dict when it has none); notes them in `foreign`."""
        refused = self.link_hosts.foreign(properties)
        if not refused:
            return properties
        foreign.update({where + key: str(properties[key])[:FLAGGED_LINK_KEEP] for key in refused})
        return {k: v for k, v in properties.items() if k not in refused}


@dataclass
class IngestResult:
    stored: list[Incoming] = field(default_factory=list)
    duplicates: int = 0
    people: dict[str, str] = field(default_factory=dict)  # message_id → person_id of identify moments
    warnings: list[Quarantined] = field(default_factory=list)
    signals: int = 0  # outbox rows queued for hubs


def _no_nul(text: str) -> str:
    """PostgreSQL text cannot hold U+0000: quarantine keeps it visible as the escape `\\u0000`."""
    return text.replace("\x00", "\\u0000")


def quarantine(session: Session, api: str, endpoint: str, items: Sequence[Quarantined]) -> None:
    if not items:
        return
    now = utcnow()
    session.execute(
        table_of(Rejected).insert(),
        [
            {
                "received_at": now,
                "api": api,
                "endpoint": endpoint,
                "message_id": _no_nul(q.message_id or "")[:255] or None,
                "reason": _no_nul(q.reason),
                "payload": _no_nul(q.payload[:PAYLOAD_KEEP]),
            }
            for q in items
        ],
    )


# Contact details an identify-moment event's properties carry besides email and phone; identify
# calls take all their traits.
CONTACT_TRAITS = ("sms_consent", "unsubscribed")
# Consent, unsubscribe and suppression: only a trusted sender changes them.
CONSENT_TRAITS = ("sms_consent", "unsubscribed", "email_unsubscribed", "suppressed")


def identify_claim(message: Incoming, policy: Policy, phone_region: str) -> tuple[Claim | None, list[str]]:
    """The identify moment a message carries, if any — identify calls, and the configured
    `identify_events` carrying an email or phone — and what is wrong with its email or phone (an
    invalid one is left out of the claim). An identify naming nobody (only an anonymous id) still
    gives a claim: its traits are for the device's owner."""
    props = message.properties
    if message.type == "track":
        if not (message.name in policy.identify_events and (props.get("email") or props.get("phone"))):
            return None, []
    elif message.type != "identify":
        return None, []
    field_prefix = "traits" if message.type == "identify" else "properties"
    claim = Claim(
        at=message.timestamp,
        anonymous_id=message.anonymous_id,
        user_id=message.user_id,
        email=message.email,
        trusted=message.trusted,
        message_id=message.message_id,
    )
    problems = []
    for key, normalise in (("email", normalise_email), ("phone", lambda v: normalise_phone(v, phone_region))):
        if props.get(key) in (None, "") or getattr(claim, key):
            continue
        try:
            setattr(claim, key, normalise(props[key]))
        except InvalidIdentifier as exc:
            problems.append(f"{field_prefix}.{key} {exc}")
    if message.type == "identify":
        claim.traits = {k: v for k, v in props.items() if k not in ("email", "phone")}
    else:
        claim.traits = {k: props[k] for k in CONTACT_TRAITS if k in props}
    if not message.trusted:
        refused = [key for key in CONSENT_TRAITS if key in claim.traits]
        if refused:
            claim.refused.append(
                f"{', '.join(f'{field_prefix}.{key}' for key in refused)} not applied: consent and "
                "unsubscribe change only through a server key or a verified user_hash"
            )
            claim.traits = {k: v for k, v in claim.traits.items() if k not in refused}
    if claim.email:
        claim.traits["email"] = claim.email
    if claim.phone:
        claim.traits["phone"] = claim.phone
    claim.timezone = valid_timezone(message.context.get("timezone")) or valid_timezone(props.get("timezone"))
    if not (claim.strong() or (message.type == "identify" and claim.anonymous_id)):
        return None, problems
    return claim, problems


def _lock_keys(messages: list[Incoming], claims: dict[str, Claim | None]) -> set[tuple[str, str]]:
    """Every identifier the request names: the ones it resolves people by and the ones it attaches."""
    keys = set()
    for m in messages:
        keys.update([("anonymous_id", m.anonymous_id), ("user_id", m.user_id), ("email", m.email)])
        if m.previous_id:
            keys.update([("user_id", m.previous_id), ("anonymous_id", m.previous_id)])
    for claim in claims.values():
        if claim is not None:
            keys.update(claim.identifiers())
    return {(kind, value) for kind, value in keys if value}


def _warning(m: Incoming, problems: list[str], refused: list[str]) -> Quarantined:
    """The quarantine row for a message stored with a part left out: an invalid email or phone, or
    what its sender may not change (the rest of the message took effect)."""
    field_name = "traits" if m.type == "identify" else "properties"
    payload = {
        "type": m.type,
        "messageId": m.message_id,
        "anonymousId": m.anonymous_id,
        "userId": m.user_id,
        field_name: m.properties,
    }
    if m.previous_id:
        payload["previousId"] = m.previous_id
    reasons = [f"{'; '.join(problems)}; the message was stored without it"] if problems else []
    return Quarantined("; ".join(reasons + refused), orjson.dumps(payload, default=str).decode(), m.message_id)


def _event_row(m: Incoming, person_id: str | None) -> dict:
    name = m.name
    props = m.properties
    return {
        "message_id": m.message_id,
        "type": m.type,
        "name": name,
        "original_name": m.original_name,
        "anonymous_id": m.anonymous_id,
        "user_id": m.user_id,
        "person_id": person_id,
        "properties": props,
        "context": m.context,
        "timestamp": m.timestamp,
        "received_at": m.received_at,
        "source": m.source,
        "cart_id": _short_str(props.get("cart_id")),
        "order_id": _short_str(props.get("order_id")),
        "missing_properties": taxonomy.missing_recommended(name, props) if m.type == "track" else [],
        "flags": m.flags or None,
    }


def _short_str(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:255]


def alias(session: Session, m: Incoming, merge_window) -> tuple[str | None, list[str]]:
    """Segment alias: `previous_id` (an older user id or an anonymous id) becomes `user_id`'s; returns
    the person and what was refused. Merging two known people, or giving a known person a new user
    id, needs a trusted sender; a browser key may only claim an anonymous device."""
    previous_id, user_id = m.previous_id, m.user_id
    primary = find_person(session, user_id=user_id)
    secondary = find_person(session, user_id=previous_id) or find_person(session, anonymous_id=previous_id)
    if secondary and not m.trusted and secondary != primary:
        return None, [
            "alias refused: merging two known people needs a server key"
            if primary
            else "alias refused: adding a userId to a known person needs a server key"
        ]
    if primary and secondary:
        merge_people(session, primary, secondary)
        return primary, []
    if secondary:
        assert user_id is not None, "an alias without a userId is refused at the front door"
        attach_identifier(session, secondary, "user_id", user_id)
        return secondary, []
    claim = Claim(at=m.timestamp, anonymous_id=previous_id, user_id=user_id, trusted=m.trusted, message_id=m.message_id)
    resolution = identify(session, claim, merge_window)
    return resolution.person_id, resolution.refused


def ingest(
    engine: Engine,
    messages: list[Incoming],
    policy: Policy,
    *,
    api: str,
    endpoint: str,
    rejected: Sequence[Quarantined] = (),
    phone_region: str = "US",
    guards: Guards | None = None,
    wake_hubs: bool = True,
) -> IngestResult:
    """Store `messages` (already validated) and quarantine `rejected`, all in one transaction. The
    front doors pass `guards` (clock skew, link hosts); without them messages are taken as they are.
    A backfill of the past passes `wake_hubs=False`: what it stores is there when a hub next reads
    the person, but it starts no journey (an imported customer list must not get a welcome series)."""
    if guards is not None:
        for m in messages:
            guards.apply(m)
    return retry_moved_locks(
        lambda: _ingest(engine, messages, policy, api, endpoint, rejected, phone_region, wake_hubs)
    )


def _ingest(
    engine: Engine,
    messages: list[Incoming],
    policy: Policy,
    api: str,
    endpoint: str,
    rejected: Sequence[Quarantined],
    phone_region: str,
    wake_hubs: bool,
) -> IngestResult:
    result = IngestResult()
    unique: dict[str, Incoming] = {}
    for m in messages:
        if m.message_id in unique:
            result.duplicates += 1
        else:
            unique[m.message_id] = m
    batch = list(unique.values())
    claims = {m.message_id: identify_claim(m, policy, phone_region) for m in batch}
    with transaction(engine) as session:
        lock_up_front(session, _lock_keys(batch, {k: claim for k, (claim, _) in claims.items()}))
        quarantine(session, api, endpoint, list(rejected))
        if not batch:
            return result
        # Every identifier the request names, with its owner or None: what identify moments look up
        # (kept current as they attach identifiers; dropped after an alias, which moves them).
        names = {(kind, getattr(m, kind)) for m in batch for kind in _NAMES if getattr(m, kind)}
        names.update(key for claim, _ in claims.values() if claim is not None for key in claim.identifiers())
        named = owners_of(session, names)
        owned: dict[tuple[str, str], str | None] = {key: named.get(key) for key in names}
        by_device = {value: person for (kind, value), person in named.items() if kind == "anonymous_id"}
        known_people = {
            kind: {value: person for (k, value), person in named.items() if k == kind} for kind in ("user_id", "email")
        }
        for known in {*by_device.values(), *known_people["user_id"].values(), *known_people["email"].values()}:
            lock_person(session, known)  # their events are written below
        rows = [
            _event_row(m, _known_person(m, known_people) or (by_device.get(m.anonymous_id) if m.anonymous_id else None))
            for m in batch
        ]
        # ON CONFLICT DO NOTHING RETURNING: messages we already hold (a client's retry) come back missing.
        inserted = _insert_events(session, rows)
        result.duplicates += len(batch) - len(inserted)
        with identity_writes_together(session):  # the moments' people, identifiers and merges: a few statements
            for m in batch:
                if m.message_id not in inserted:
                    continue
                result.stored.append(m)
                claim, problems = claims[m.message_id]
                person_id, refused = _resolve(session, m, claim, policy, known_people, owned)
                refused = m.refused + (claim.refused if claim is not None else []) + refused
                if problems or refused:
                    result.warnings.append(_warning(m, problems, refused))
                if person_id:
                    result.people[m.message_id] = person_id
        signals = _hub_signals(session, result, policy, {row["message_id"]: row["person_id"] for row in rows})
        if wake_hubs:  # a backfill wakes no hub: the copies among its events are marked all the same
            outbox.queue(session, signals)
            result.signals = len(signals)
        upsert_from_events(session, result.stored)  # one statement, only when products were seen
        quarantine(session, api, endpoint, result.warnings)
        if policy.segments:  # membership stays live for everyone this call touched, in its transaction
            segments.refresh(session, _touched(session, result), policy.segments, utcnow())
    return result


_NAMES = ("anonymous_id", "user_id", "email")  # the identifiers a message's row is attributed by


def _touched(session: Session, result: IngestResult) -> set[str]:
    """The people whose stored events (or identify) this call wrote."""
    owners = session.exec(
        select(col(Event.person_id)).where(
            among(session, col(Event.message_id), [m.message_id for m in result.stored]),
            col(Event.person_id).is_not(None),
        )
    ).all()
    return {p for p in owners if p is not None} | set(result.people.values())


def _insert_events(session: Session, rows: list[dict]) -> set[str]:
    """Insert the rows, skipping messages we already hold (a client's retry); returns the message
    ids written. On PostgreSQL a message id is new when the ledger of accepted ids takes it
    (`store.message_ids`: partitioned `events` cannot hold it unique), and the rows travel as one JSON document expanded by the server
    (`jsonb_populate_record` on the table's own row type, in the request's order): a multi-row
    VALUES of 500 × 16 parameters costs the driver more to build than the database to insert."""
    if not is_postgresql(session):
        return _insert_events_sqlite(session, rows)
    columns = ", ".join(f'"{column}"' for column in rows[0])
    statement = text(
        f"WITH incoming AS (SELECT r.*, e.n FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS e(doc, n), "
        "jsonb_populate_record(NULL::events, e.doc) AS r), "
        f'fresh AS (INSERT INTO {message_ids.TABLE} (message_id, "timestamp") SELECT message_id, "timestamp" FROM incoming '
        "ORDER BY n ON CONFLICT DO NOTHING RETURNING message_id) "
        f"INSERT INTO events ({columns}) SELECT {columns} FROM incoming WHERE message_id IN (SELECT message_id FROM fresh) "
        "ORDER BY n ON CONFLICT DO NOTHING RETURNING message_id"
    )
    return set(session.execute(statement, {"rows": orjson.dumps(rows, default=str).decode()}).scalars())


def _insert_events_sqlite(session: Session, rows: list[dict]) -> set[str]:
    """SQLite: the ids already held are read in one statement (this transaction is the only writer:
    nobody adds one meanwhile), and the new rows go to the driver's `executemany`, bound by the
    columns' own types: SQLAlchemy's per-row parameter handling cost more than the insert itself."""
    held = set(
        session.execute(
            select(col(Event.message_id)).where(among(session, col(Event.message_id), [r["message_id"] for r in rows]))
        ).scalars()
    )
    fresh = [row for row in rows if row["message_id"] not in held]
    if fresh:
        columns = tuple(fresh[0])
        binds = bind_processors(session.get_bind().dialect, table_of(Event), columns)
        session.connection().exec_driver_sql(
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(bind(row[c]) if bind else row[c] for c, bind in zip(columns, binds, strict=True)) for row in fresh],
        )
    return {row["message_id"] for row in fresh}


def _hub_signals(
    session: Session, result: IngestResult, policy: Policy, written_as: dict[str, str | None]
) -> list[tuple[str, str, dict, str]]:
    """The hub signals (outbox rows) this request means: identify moments, journey-relevant activity
    and purchases of known people — unless the event is the other copy (client vs server) of one
    already seen, which is marked as its duplicate here, or comes from a source the policy does not
    trust for it. `written_as`: each stored event's person as its row was written, but for the
    events identify moments gave to someone (`moved_events`); after a merge of people, which does
    not list what it moved, they are read back."""
    signals = [
        ("identified", result.people[m.message_id], {"message_id": m.message_id}, f"identified:{m.message_id}")
        for m in result.stored
        if m.message_id in result.people
    ]
    triggers = [
        m
        for m in result.stored
        if m.type == "track"
        and m.name in taxonomy.ACTIVITY_EVENTS | taxonomy.PURCHASE_EVENTS
        and m.message_id not in result.people
        and policy.source_of_truth_for(m.name) in ("any", m.source)
    ]
    if not triggers:
        return signals
    moved = moved_events(session)
    owners_now = (
        dict(
            session.exec(
                select(Event.message_id, Event.person_id).where(
                    among(session, col(Event.message_id), [m.message_id for m in triggers]),
                    col(Event.person_id).is_not(None),
                )
            ).all()
        )
        if moved is None
        else {**written_as, **moved}
    )
    just_identified = set(result.people.values())
    waking = [
        (m, person_id)
        for m in triggers
        if (person_id := owners_now.get(m.message_id)) is not None
        # an unknown shopper wakes nobody; an identify in this request already wakes the hub
        and not (person_id in just_identified and m.name in taxonomy.ACTIVITY_EVENTS)
    ]
    related = _sharing_a_cart_or_order(session, waking)
    copies: dict[str, str] = {}  # message id → the other copy's
    woken: set[str] = set()  # people whose hub this request already wakes for activity
    for m, person_id in waking:
        original = _copy_of(m, person_id, policy, related)
        if original:
            copies[m.message_id] = original
            continue
        kind = "purchased" if m.name in taxonomy.PURCHASE_EVENTS else "activity"
        if kind == "activity":
            if person_id in woken:
                continue  # the hub re-reads the store when it wakes: one activity signal per person per request
            woken.add(person_id)
        payload: dict[str, Any] = {"message_id": m.message_id, "event": m.name, "at": m.timestamp.isoformat()}
        dedupe_key = f"{kind}:{m.message_id}"
        if kind == "purchased":
            order_id = _short_str(m.properties.get("order_id"))
            if order_id and _order_known(m, person_id, order_id, related):
                continue
            payload.update(order_id=order_id, revenue=order_revenue(m.properties))
            dedupe_key = f"purchased:{person_id}:{order_id}" if order_id else dedupe_key  # concurrent repeats: once
        signals.append((kind, person_id, payload, dedupe_key))
    if copies:  # one UPDATE marks them all
        session.execute(
            update(table_of(Event))  # Core: nothing of the ORM session to synchronise
            .where(among(session, col(Event.message_id), copies))
            .values(duplicate_of=case(copies, value=col(Event.message_id)))
        )
    return signals


def _sharing_a_cart_or_order(session: Session, wanted: list[tuple[Incoming, str]]) -> dict[str, list[Any]]:
    """The stored events of these people that share a cart or an order with the request's own (theirs
    included), by person, oldest first: one look-up for every copy and known-order check of the
    request."""
    people = {person_id for _, person_id in wanted}
    orders = {order for m, _ in wanted if (order := _short_str(m.properties.get("order_id")))}
    carts = {cart for m, _ in wanted if (cart := _short_str(m.properties.get("cart_id")))}
    sharing = [among(session, col(Event.order_id), orders)] if orders else []
    sharing += [among(session, col(Event.cart_id), carts)] if carts else []
    if not sharing:
        return {}
    events = table_of(Event)
    wanted_columns = (
        "id",
        "message_id",
        "person_id",
        "name",
        "source",
        "timestamp",
        "order_id",
        "cart_id",
        "properties",
    )
    by_person: dict[str, list[Any]] = {}
    for row in session.execute(
        events.select()
        .with_only_columns(*(events.c[name] for name in wanted_columns))
        .where(among(session, events.c.person_id, people), or_(*sharing))
        .order_by(events.c.id)
    ):
        by_person.setdefault(row.person_id, []).append(row)
    return by_person


def _stored_before(m: Incoming, person_id: str, related: dict[str, list[Any]]) -> list[Any]:
    """The person's related events stored before `m` (a smaller id than its own row's)."""
    theirs = related.get(person_id, [])
    own = next((row.id for row in theirs if row.message_id == m.message_id), None)
    return [row for row in theirs if own is not None and row.id < own]


def _order_known(m: Incoming, person_id: str, order_id: str, related: dict[str, list[Any]]) -> bool:
    """The person's hub already heard of this order: an earlier purchase event of theirs names it
    (a resent order with a new message id, at any distance in time). Its signal was queued then, or
    it arrived before they were known and the identify that attached it woke the hub."""
    return any(
        row.order_id == order_id and row.name in taxonomy.PURCHASE_EVENTS
        for row in _stored_before(m, person_id, related)
    )


def _copy_of(m: Incoming, person_id: str, policy: Policy, related: dict[str, list[Any]]) -> str | None:
    """The message id of the other copy of this cart/order event (sent by the storefront and by the
    shop's server) inside the duplicate window, if there is one (the first stored)."""
    props = m.properties
    order_id, cart_id = _short_str(props.get("order_id")), _short_str(props.get("cart_id"))
    if not (order_id or cart_id):
        return None
    for row in _stored_before(m, person_id, related):
        if row.name != m.name or row.source == m.source:
            continue
        if abs(as_utc(row.timestamp) - m.timestamp) > policy.duplicate_window:
            continue
        if order_id and row.order_id == order_id:
            return row.message_id
        same_line = all(row.properties.get(k) == props.get(k) for k in ("sku", "variant", "quantity"))
        if not order_id and row.cart_id == cart_id and same_line:
            return row.message_id
    return None


def _known_person(m: Incoming, known_people: dict[str, dict[str, str]]) -> str | None:
    by_user_id = known_people["user_id"].get(m.user_id) if m.user_id else None
    return by_user_id or (known_people["email"].get(m.email) if m.email else None)


def _remember(m: Incoming, person_id: str, known_people: dict[str, dict[str, str]]) -> None:
    for kind in ("user_id", "email"):
        if getattr(m, kind):
            known_people[kind][getattr(m, kind)] = person_id


def _resolve(
    session: Session,
    m: Incoming,
    claim: Claim | None,
    policy: Policy,
    known_people: dict[str, dict[str, str]],
    owned: dict[tuple[str, str], str | None],
) -> tuple[str | None, list[str]]:
    """Identity work a stored message implies; returns the person of an identify moment and what of
    it was refused. `owned`: the request's identifiers and their owners, for identify moments."""
    if m.type == "alias":
        owned.clear()  # a merge moves identifiers: later moments look them up again
        return alias(session, m, policy.merge_window)
    if claim is not None and not claim.strong():
        update_device_owner(session, claim)
        return None, []
    if claim is not None:
        # The identify's own row may have been attached to the device's earlier owner: it is theirs now.
        resolution = identify(session, claim, policy.merge_window, own_event=True, owned=owned)
        person_id = resolution.person_id
        _remember(m, person_id, known_people)
        return person_id, resolution.refused
    if (m.user_id or m.email) and not _known_person(m, known_people):
        if not m.trusted and owner(session, "anonymous_id", m.anonymous_id or ""):
            return None, []  # the device's owner keeps it (its row is theirs); a browser names nobody new on it
        # Someone we have never seen, named by id or email: known from now on, with this device.
        claim = Claim(
            at=m.timestamp,
            anonymous_id=m.anonymous_id,
            user_id=m.user_id,
            email=m.email,
            trusted=m.trusted,
            message_id=m.message_id,
        )
        person_id = identify(session, claim, policy.merge_window, own_event=True, owned=owned).person_id
        _remember(m, person_id, known_people)
    return None, []
