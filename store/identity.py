"""Identity: resolve or create a person from identifiers, merge anonymous history into them,
merge two people, delete one. Every function runs inside the caller's transaction."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import phonenumbers
from sqlalchemy import ColumnElement, case, delete, func, or_, text, update
from sqlmodel import Session, col, select

from store import outbox, suppression
from store.db import insert_ignoring_conflicts
from store.dialect import is_postgresql
from store.models import (
    Event,
    Identifier,
    IdentityConflict,
    JourneyLog,
    JourneyRun,
    Message,
    OutboxRow,
    Person,
    PersonMerge,
    Rejected,
    table_of,
    utcnow,
)

STRONG_KINDS = ("user_id", "email", "phone")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
MAX_IDENTIFIER = 254
T = TypeVar("T")

# Tables whose rows belong to a person: re-pointed on merge, removed on delete.
PERSON_OWNED: list[type[Any]] = [Identifier, Event, Message, JourneyRun, JourneyLog, PersonMerge]


class InvalidIdentifier(ValueError):
    pass


def normalise_email(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier("must be a string")
    email = value.strip().lower()
    if len(email) > MAX_IDENTIFIER:
        raise InvalidIdentifier(f"is {len(email)} characters long; the limit is {MAX_IDENTIFIER}")
    if not _EMAIL.match(email):
        raise InvalidIdentifier(f"{email[:80]!r} is not a valid email address")
    return email


def normalise_phone(value: object, region: str = "US") -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidIdentifier("must be a string")
    raw = str(value).strip()
    try:
        number = phonenumbers.parse(raw[:64], None if raw.startswith("+") else region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier(f"{raw[:40]!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier(f"{raw[:40]!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def valid_timezone(name: object) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


@dataclass
class Claim:
    """What an identify moment says about who this is."""

    at: datetime
    anonymous_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    traits: dict = field(default_factory=dict)
    timezone: str | None = None
    # An untrusted (browser-key) claim may claim a device, never add an identifier to a known person.
    trusted: bool = False
    message_id: str | None = None  # the identify moment, named in any conflict it records
    refused: list[str] = field(default_factory=list)  # what was left out (said in the quarantine)

    def strong(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind in STRONG_KINDS if (value := getattr(self, kind))]

    def identifiers(self) -> list[tuple[str, str]]:
        keys = self.strong()
        if self.anonymous_id:
            keys.append(("anonymous_id", self.anonymous_id))
        return keys


@dataclass
class Resolution:
    person_id: str
    created: bool
    conflict: bool = False
    refused: list[str] = field(default_factory=list)  # identifiers of the claim not given to the person


class LocksMoved(Exception):
    """A person this transaction must write became involved after its locks were taken (a
    concurrent merge or delete moved an identifier in between) and someone else holds them."""


def _held(session: Session) -> set[str]:
    """Advisory locks this session's transaction holds (our sessions live for one transaction)."""
    return session.info.setdefault("breadcrumb_locks", set())


_MOVED = "breadcrumb_moved_events"


def moved_events(session: Session) -> dict[str, str] | None:
    """The stored events this transaction gave to someone, message id → person: identify moments'
    merges say which (every other event is still attributed as it was written) — or None once a
    merge of people moved whole histories, which it does not list."""
    return session.info.get(_MOVED, {})


@dataclass
class _Pending:
    """Identity writes waiting to go out together (`identity_writes_together`)."""

    people: dict[str, Person] = field(default_factory=dict)  # new people, by id
    identifiers: list[dict] = field(default_factory=list)
    own_events: list[tuple[str, str]] = field(default_factory=list)  # (message id, person): an identify's own row
    histories: list[tuple[ColumnElement[bool], str]] = field(default_factory=list)  # unowned events, in order


_PENDING = "breadcrumb_pending_identity"
_EVENTS = table_of(Event)  # Core updates: the ORM would fetch the rows' ids to synchronise a session that holds none


@contextmanager
def identity_writes_together(session: Session) -> Iterator[None]:
    """Inside, identify moments' writes wait and go out together when the block ends — one INSERT of
    new people, one of identifiers, one UPDATE giving events to their people — or sooner, before
    anything here reads identifiers, people or ownership (`_write_pending`). A request's moments
    cost a few statements, not a few each."""
    session.info[_PENDING] = _Pending()
    try:
        yield
        _write_pending(session)
    finally:
        session.info.pop(_PENDING, None)


def _pending(session: Session) -> _Pending | None:
    return session.info.get(_PENDING)


@contextmanager
def _writes(session: Session) -> Iterator[_Pending]:
    """Where an identity write goes: the waiting writes inside `identity_writes_together`, else a
    batch of its own, sent as the block ends."""
    pending = _pending(session)
    if pending is not None:
        yield pending
        return
    alone = _Pending()
    yield alone
    _send(session, alone)


def _write_pending(session: Session) -> None:
    """Send what waits (inside `identity_writes_together`; outside, nothing waits)."""
    pending = _pending(session)
    if pending is not None:
        session.info[_PENDING] = _Pending()  # what follows is sent once, whatever it reads next
        _send(session, pending)


def _send(session: Session, writes: _Pending) -> None:
    """One INSERT of the people, one of the identifiers, one UPDATE of events. The UPDATE keeps the
    order the moments happened in: an identify's own row is its person's whatever came before; an
    unowned event goes to the first moment that claimed it (later ones see it owned)."""
    if writes.people:
        table = table_of(Person)
        people = writes.people.values()
        session.execute(table.insert(), [{c.name: getattr(person, c.name) for c in table.columns} for person in people])
    if writes.identifiers:
        session.execute(insert_ignoring_conflicts(session, table_of(Identifier)), writes.identifiers)
    whens = [(col(Event.message_id) == message_id, person) for message_id, person in writes.own_events]
    whens += writes.histories
    if whens:
        moved = session.execute(
            update(_EVENTS)
            .where(or_(*(when for when, _ in whens)))
            .values(person_id=case(*whens, else_=_EVENTS.c.person_id))
            .returning(_EVENTS.c.message_id, _EVENTS.c.person_id)
        )
        listed = session.info.setdefault(_MOVED, {})
        if listed is not None:
            listed.update((message_id, person_id) for message_id, person_id in moved)


def lock_up_front(session: Session, keys: Iterable[tuple[str, str]]) -> None:
    """Take every advisory lock the transaction may wait for, as one sorted set, before it writes:
    the identifiers it names and the people who own them now — found and locked in one statement.
    Two transactions that wait only here, in one global order, cannot deadlock; a person met later
    is only tried (`lock_person`). SQLite needs nothing: its writers already run one at a time."""
    keys = {(kind, value) for kind, value in keys if value}
    if not is_postgresql(session) or not keys:
        return
    _held(session).update(session.execute(text(LOCK_IN_ORDER), _arrays(keys)).scalars())


def _arrays(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(kind, value) pairs as the two parallel arrays `_NAMED` takes."""
    pairs = list(keys)
    return {"kinds": [kind for kind, _ in pairs], "values": [value for _, value in pairs]}


# The identifiers rows named by (kind, value) pairs given as one parameter (whatever their number,
# the same statement): two parallel arrays on PostgreSQL, one JSON array of pairs on SQLite.
_NAMED = (
    "identifiers AS i JOIN unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS n(kind, value) "
    "ON i.kind = n.kind AND i.value = n.value"
)
_NAMED_SQLITE = (
    "json_each(:pairs) AS n JOIN identifiers AS i "
    "ON i.kind = json_extract(n.value, '$[0]') AND i.value = json_extract(n.value, '$[1]')"
)

# The identifiers' names and their owners' ("person:…"), each locked once, in name order: PostgreSQL
# evaluates the volatile lock calls of the select list after the sort (a test reads the plan).
LOCK_IN_ORDER = (
    "SELECT k, pg_advisory_xact_lock(hashtextextended(k, 0)) FROM ("
    "SELECT c.kind || ':' || c.value AS k FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS c(kind, value) "
    f"UNION SELECT 'person:' || i.person_id FROM {_NAMED}"
    ") AS wanted ORDER BY k"
)


def lock_person(session: Session, person_id: str) -> None:
    """Hold `person_id`'s lock before writing their rows, never waiting for it out of order: it was
    taken up front, or it is free now; otherwise `LocksMoved` (the caller runs again)."""
    name = f"person:{person_id}"
    if not is_postgresql(session) or name in _held(session):
        return
    if not session.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": name}).scalar():
        raise LocksMoved(f"person {person_id} is locked by another transaction")
    _held(session).add(name)


def retry_moved_locks(work: Callable[[], T], attempts: int = 5) -> T:
    """Run `work` (one whole transaction) again when it met a person it could not lock in order;
    the next run reads the new owners before it locks. A short, growing, jittered pause lets the
    other transaction finish; after the last attempt `LocksMoved` reaches the API (a 503 with
    Retry-After: nothing was stored, and a retry with the same message ids is safe)."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except LocksMoved:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def owner(session: Session, kind: str, value: str) -> str | None:
    _write_pending(session)
    return session.exec(
        select(col(Identifier.person_id)).where(col(Identifier.kind) == kind, col(Identifier.value) == value)
    ).first()


def owners_of(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The people who own these identifiers now, in one statement: (kind, value) → person id."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    _write_pending(session)
    if is_postgresql(session):
        rows = session.execute(text(f"SELECT i.kind, i.value, i.person_id FROM {_NAMED}"), _arrays(keys))
    else:
        rows = session.execute(
            text(f"SELECT i.kind, i.value, i.person_id FROM {_NAMED_SQLITE}"), {"pairs": orjson.dumps(keys).decode()}
        )
    return {(kind, value): person_id for kind, value, person_id in rows}


def attach_identifiers(session: Session, person_id: str, keys: Sequence[tuple[str, str]]) -> None:
    """Give `person_id` these identifiers, in one statement (or with the waiting writes)."""
    if not keys:
        return
    lock_person(session, person_id)
    now = utcnow()
    with _writes(session) as writes:
        writes.identifiers += [
            {"person_id": person_id, "kind": kind, "value": value, "created_at": now} for kind, value in keys
        ]


def attach_identifier(session: Session, person_id: str, kind: str, value: str) -> None:
    attach_identifiers(session, person_id, [(kind, value)])


def _contradicts(session: Session, person_id: str, strong: list[tuple[str, str]], trusted: bool) -> bool:
    """True when the device's owner already has a different value of a kind this claim carries:
    a second person on a shared device, not the same person adding details. An untrusted claim
    cannot add details to a known person, so any identifier it brings makes a person of its own."""
    if not trusted and strong:
        return True
    _write_pending(session)
    kinds = {kind for kind, _ in strong}
    existing = session.exec(
        select(col(Identifier.kind), col(Identifier.value)).where(
            col(Identifier.person_id) == person_id, col(Identifier.kind).in_(kinds)
        )
    ).all()
    claimed = set(strong)
    return any((kind, value) not in claimed for kind, value in existing)


def _apply_traits(person: Person, claim: Claim) -> None:
    traits = {k: v for k, v in claim.traits.items() if v is not None}
    if traits:
        person.traits = {**(person.traits or {}), **traits}
    if claim.timezone:
        person.timezone = claim.timezone
    if traits.get("unsubscribed") is True:
        person.email_unsubscribed = True
    elif traits.get("unsubscribed") is False:
        person.email_unsubscribed = False
    consent = traits.get("sms_consent")
    if isinstance(consent, bool):
        person.sms_consent = consent
    person.updated_at = utcnow()


def new_person(session: Session, at: datetime, claim: Claim | None = None) -> Person:
    """A new person with `claim`'s traits: one INSERT (or one row of the waiting writes), outside the
    ORM's unit of work, whose flush with a batch's other people in the session cost more than it."""
    now = utcnow()
    person = Person(id=str(uuid.uuid4()), created_at=now, identified_at=at, updated_at=now)
    if claim is not None:
        _apply_traits(person, claim)
    with _writes(session) as writes:
        writes.people[person.id] = person
    _held(session).add(f"person:{person.id}")  # nobody else can know a new id: nothing to wait for
    return person


def identify(
    session: Session,
    claim: Claim,
    merge_window: timedelta,
    *,
    own_event: bool = False,
    owned: dict[tuple[str, str], str | None] | None = None,
) -> Resolution:
    """Resolve or create the person behind `claim` and merge the device's anonymous history into them.

    Strong identifiers (user_id, then email, then phone) win; a device alone identifies its first
    owner only while the claim does not contradict them (shared device → own profile + conflict row).
    A claim naming two known people (userId of one, email of the other) resolves to the first, gives
    them nothing of the other's, and is recorded as a conflict: merging is an explicit alias/merge.
    An untrusted claim adds no identifier to a person who is already known.
    `own_event`: the claim's own stored event (`claim.message_id`) becomes the person's too, in the
    same UPDATE that merges the history (it may have been stored as the device's earlier owner's).
    `owned`: identifiers and their owners (None: nobody's) as this transaction knows them — a
    request's, looked up at once for all its identify moments; what this one attaches is added.
    A handful of statements, however many identifiers the claim names: one look-up of their owners
    (none when `owned` holds them all), one INSERT of the new ones, one UPDATE of events.
    The caller has taken the claim's keys with `lock_up_front`.
    """
    strong = claim.strong()
    keys = claim.identifiers()
    found: Mapping[tuple[str, str], str | None]
    if owned is not None and all(key in owned for key in keys):
        found = {key: owned[key] for key in keys}
    else:
        found = owners_of(session, keys)
    strong_owners = {kind: found.get((kind, value)) for kind, value in strong}
    known = list(dict.fromkeys(pid for pid in strong_owners.values() if pid))
    person_id = known[0] if known else None
    device_owner = found.get(("anonymous_id", claim.anonymous_id)) if claim.anonymous_id else None
    if person_id is None and device_owner and not _contradicts(session, device_owner, strong, claim.trusted):
        person_id = device_owner
    created = person_id is None

    refused: list[str] = []
    if len(known) > 1:
        refused.append(
            f"the identify names {len(known)} known people: nothing merged or copied between "
            "them, recorded at GET /admin/conflicts (merge with alias or merge_customers)"
        )
    theirs = {kind for kind, pid in strong_owners.items() if pid is not None and pid == person_id}
    new_keys: list[tuple[str, str]] = []
    for kind, value in strong:
        if strong_owners[kind] is not None:
            continue
        if len(known) > 1:
            refused.append(f"{kind} not added: the identify names two known people (recorded as a conflict)")
        elif not (created or claim.trusted):
            refused.append(
                f"{kind} not added to a known person: new identifiers of a known person come "
                "only through a server key or a verified user_hash"
            )
        else:
            new_keys.append((kind, value))
            theirs.add(kind)
    # Contact traits only for identifiers that are this person's: never someone else's email.
    traits = {k: v for k, v in claim.traits.items() if k not in STRONG_KINDS or k in theirs}
    if person_id is None:
        person = new_person(session, claim.at, replace(claim, traits=traits))
    else:
        lock_person(session, person_id)
        pending = _pending(session)
        found_person = (pending.people.get(person_id) if pending else None) or session.get(Person, person_id)
        assert found_person is not None, "an identifier's owner exists while its lock is held"
        person = found_person
        _apply_traits(person, replace(claim, traits=traits))
    person_id = person.id
    resolution = Resolution(person_id=person_id, created=created, conflict=len(known) > 1, refused=refused)
    if len(known) > 1:
        session.add(
            IdentityConflict(
                kind="identifiers",
                anonymous_id=claim.anonymous_id,
                owner_person_id=known[1],
                claimant_person_id=person_id,
                message_id=claim.message_id,
                created_at=utcnow(),
                identifiers={kind: pid for kind, pid in strong_owners.items() if pid},
            )
        )
    if claim.anonymous_id and device_owner is None:
        new_keys.append(("anonymous_id", claim.anonymous_id))
    attach_identifiers(session, person_id, new_keys)
    if owned is not None:
        owned.update(dict.fromkeys(new_keys, person_id))
    if device_owner is not None and device_owner != person_id:
        resolution.conflict = True
        session.add(
            IdentityConflict(
                anonymous_id=claim.anonymous_id,
                owner_person_id=device_owner,
                claimant_person_id=person_id,
                message_id=claim.message_id,
                created_at=utcnow(),
            )
        )

    histories: list[ColumnElement[bool]] = []
    if claim.anonymous_id and device_owner is None:  # the device's anonymous history, inside the window
        histories.append(
            (col(Event.anonymous_id) == claim.anonymous_id)
            & col(Event.person_id).is_(None)
            & (col(Event.timestamp) >= claim.at - merge_window)
        )
    if claim.user_id and ("user_id", claim.user_id) in new_keys:
        # A known user id's events were attached as they arrived; only a new one has any waiting.
        histories.append((col(Event.user_id) == claim.user_id) & col(Event.person_id).is_(None))
    with _writes(session) as writes:
        writes.histories += [(history, person_id) for history in histories]
        if own_event and claim.message_id:
            writes.own_events.append((claim.message_id, person_id))
    return resolution


def update_device_owner(session: Session, claim: Claim) -> str | None:
    """An identify that names nobody (only an anonymous id and traits) describes the device's owner,
    if it has one; returns them. The caller has taken the device's key with `lock_up_front`."""
    _write_pending(session)
    person_id = owner(session, "anonymous_id", claim.anonymous_id) if claim.anonymous_id else None
    if person_id is None:
        return None
    lock_person(session, person_id)
    person = session.get(Person, person_id)
    assert person is not None, "an identifier's owner exists while its lock is held"
    _apply_traits(person, claim)
    return person_id


def find_person(
    session: Session,
    *,
    person_id: str | None = None,
    user_id: str | None = None,
    email: str | None = None,
    anonymous_id: str | None = None,
    phone: str | None = None,
    phone_region: str = "US",
) -> str | None:
    _write_pending(session)
    if person_id:
        return person_id if session.get(Person, person_id) else None
    for kind, value in (("user_id", user_id), ("email", email), ("anonymous_id", anonymous_id), ("phone", phone)):
        if value:
            try:
                if kind == "email":
                    value = normalise_email(value)
                elif kind == "phone":  # stored as E.164, so look it up the same way
                    value = normalise_phone(value, phone_region)
            except InvalidIdentifier:
                return None
            return owner(session, kind, value)
    return None


def merge_people(session: Session, primary_id: str, secondary_id: str) -> None:
    """Move everything of `secondary` onto `primary` (primary's traits win) and remove secondary."""
    if primary_id == secondary_id:
        return
    _write_pending(session)
    lock_person(session, primary_id)
    lock_person(session, secondary_id)
    primary, secondary = session.get(Person, primary_id), session.get(Person, secondary_id)
    if primary is None or secondary is None:
        return
    for table in PERSON_OWNED:
        session.execute(update(table).where(table.person_id == secondary_id).values(person_id=primary_id))
    session.info[_MOVED] = None  # whole histories moved, unlisted
    session.execute(
        update(IdentityConflict)
        .where(col(IdentityConflict.owner_person_id) == secondary_id)
        .values(owner_person_id=primary_id)
    )
    session.execute(
        update(IdentityConflict)
        .where(col(IdentityConflict.claimant_person_id) == secondary_id)
        .values(claimant_person_id=primary_id)
    )
    primary.traits = {**(secondary.traits or {}), **(primary.traits or {})}
    primary.timezone = primary.timezone or secondary.timezone
    primary.email_unsubscribed = primary.email_unsubscribed or secondary.email_unsubscribed
    primary.suppressed = primary.suppressed or secondary.suppressed
    primary.sms_consent = primary.sms_consent or secondary.sms_consent  # consent travels with the phone it came with
    primary.identified_at = min(primary.identified_at, secondary.identified_at)
    primary.updated_at = utcnow()
    session.delete(secondary)
    session.add(PersonMerge(person_id=primary_id, absorbed_person_id=secondary_id, at=utcnow()))
    session.flush()
    outbox.follow_merge(session, primary_id, secondary_id)
    # The secondary's journey stops; the primary's hub re-evaluates with the merged history.
    outbox.signal(session, "absorbed", secondary_id, {"into": primary_id})
    outbox.signal(session, "merged", primary_id, {"absorbed": secondary_id})


def delete_person(session: Session, person_id: str) -> bool:
    """Remove the person and everything we hold about them: their rows, the events of their devices
    that stayed anonymous (outside the merge window), quarantined input that names them, and queued
    hub signals — all but the `erased` signal that ends their workflows. An unsubscribed or
    suppressed person's email/phone stays on the suppression list, as a hash (store/suppression.py)."""
    _write_pending(session)
    person = session.get(Person, person_id)
    if person is None:
        return False
    lock_person(session, person_id)
    identifiers = session.exec(
        select(col(Identifier.kind), col(Identifier.value)).where(col(Identifier.person_id) == person_id)
    ).all()
    suppression.keep_on_delete(session, person, identifiers)
    devices = [value for kind, value in identifiers if kind == "anonymous_id"]
    user_ids = [value for kind, value in identifiers if kind == "user_id"]
    theirs = (col(Event.person_id) == person_id) | (
        col(Event.person_id).is_(None) & (col(Event.anonymous_id).in_(devices) | col(Event.user_id).in_(user_ids))
    )
    session.execute(
        delete(Rejected).where(_quarantine_naming(session, identifiers, select(col(Event.message_id)).where(theirs)))
    )
    session.execute(delete(Event).where(theirs))
    for table in PERSON_OWNED:
        session.execute(delete(table).where(table.person_id == person_id))
    session.execute(
        delete(IdentityConflict).where(
            (col(IdentityConflict.owner_person_id) == person_id)
            | (col(IdentityConflict.claimant_person_id) == person_id)
        )
    )
    session.execute(delete(OutboxRow).where(col(OutboxRow.person_id) == person_id))
    session.delete(person)
    session.flush()
    outbox.signal(session, "erased", person_id)
    return True


# The payload keys that carry each kind of identifier: Segment's and Customer.io's spellings.
IDENTIFIER_KEYS = {
    "user_id": ("userId", "user_id", "id", "previousId"),
    "anonymous_id": ("anonymousId", "anonymous_id", "previousId"),
    "email": ("email",),
    "phone": ("phone",),
}


def _quarantine_naming(session: Session, identifiers: Sequence[tuple[str, str]], their_message_ids):
    """Quarantine rows about a person: kept for one of their stored messages, refused on a
    Customer.io path naming them (`/customers/{id or email}…`), or whose payload gives one of their
    identifiers under an identifier key (`"userId":"42"`, `"email":"…"` — a sku or a quantity that
    happens to read "42" is somebody else's business). Payloads are our own compact JSON, so the
    pair is found exactly (case-sensitive, except for emails) alike on SQLite and PostgreSQL; a raw
    value that only normalises to the identifier (an email with spaces, a phone in another format)
    is found through the message's other identifiers."""
    position = func.strpos if is_postgresql(session) else func.instr  # LIKE ignores case on SQLite

    def holds(column, needle: str):
        return position(column, needle) > 0

    named = []
    for kind, value in identifiers:  # emails are stored lower-case; any case in the input is theirs
        payload, endpoint = (
            (func.lower(col(Rejected.payload)), func.lower(col(Rejected.endpoint)))
            if kind == "email"
            else (col(Rejected.payload), col(Rejected.endpoint))
        )
        quoted = orjson.dumps(value).decode()
        for key in IDENTIFIER_KEYS.get(kind, ()):
            named.append(holds(payload, f'"{key}":{quoted}'))
            if value.isdigit():  # a numeric user id sent as a number
                named += [holds(payload, f'"{key}":{value},'), holds(payload, f'"{key}":{value}}}')]
        if kind in ("user_id", "email"):
            named += [endpoint == f"/api/v1/customers/{value}", holds(endpoint, f"/api/v1/customers/{value}/")]
    return or_(col(Rejected.message_id).in_(their_message_ids), *named)
