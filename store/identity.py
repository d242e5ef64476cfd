"""Identity: resolve or create a person from identifiers, merge anonymous history into them,
merge two people, delete one. Every function runs inside the caller's transaction."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy import delete, text, update
from sqlmodel import Session, select

from store import outbox
from store.db import insert_ignoring_conflicts
from store.models import Event, Identifier, IdentityConflict, JourneyLog, JourneyRun, Message, Person, utcnow

STRONG_KINDS = ("user_id", "email", "phone")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
MAX_IDENTIFIER = 254

# Tables whose rows belong to a person: re-pointed on merge, removed on delete.
PERSON_OWNED = [Identifier, Event, Message, JourneyRun, JourneyLog]


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

    def strong(self) -> list[tuple[str, str]]:
        return [(kind, value) for kind in STRONG_KINDS if (value := getattr(self, kind))]

    def keys(self) -> list[tuple[str, str]]:
        keys = self.strong()
        if self.anonymous_id:
            keys.append(("anonymous_id", self.anonymous_id))
        return keys


@dataclass
class Resolution:
    person_id: str
    created: bool
    attached_events: int = 0
    conflict: bool = False


def lock_identifiers(session: Session, keys: list[tuple[str, str]]) -> None:
    """Serialise work on the same identifiers (PostgreSQL advisory locks, in sorted order so two
    transactions never deadlock). SQLite needs nothing: its writers already run one at a time."""
    if session.get_bind().dialect.name != "postgresql" or not keys:
        return
    names = sorted({f"{kind}:{value}" for kind, value in keys})
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"),
        {"keys": names},
    )


def owner(session: Session, kind: str, value: str) -> str | None:
    return session.exec(select(Identifier.person_id).where(Identifier.kind == kind, Identifier.value == value)).first()


def owners(session: Session, kind: str, values: set[str]) -> dict[str, str]:
    if not values:
        return {}
    rows = session.exec(select(Identifier.value, Identifier.person_id).where(Identifier.kind == kind, Identifier.value.in_(values)))
    return dict(rows.all())


def attach_identifier(session: Session, person_id: str, kind: str, value: str) -> None:
    stmt = insert_ignoring_conflicts(session, Identifier.__table__).values(
        person_id=person_id, kind=kind, value=value, created_at=utcnow()
    )
    session.execute(stmt)


def _contradicts(session: Session, person_id: str, strong: list[tuple[str, str]]) -> bool:
    """True when the device's owner already has a different value of a kind this claim carries:
    a second person on a shared device, not the same person adding details."""
    kinds = {kind for kind, _ in strong}
    existing = session.exec(
        select(Identifier.kind, Identifier.value).where(Identifier.person_id == person_id, Identifier.kind.in_(kinds))
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


def new_person(session: Session, at: datetime) -> Person:
    now = utcnow()
    person = Person(id=str(uuid.uuid4()), created_at=now, identified_at=at, updated_at=now)
    session.add(person)
    session.flush()
    return person


def identify(session: Session, claim: Claim, merge_window: timedelta) -> Resolution:
    """Resolve or create the person behind `claim` and merge the device's anonymous history into them.

    Strong identifiers (user_id, then email, then phone) win; a device alone identifies its first
    owner only while the claim does not contradict them (shared device → own profile + conflict row).
    """
    lock_identifiers(session, claim.keys())
    strong = claim.strong()
    strong_owners = {kind: owner(session, kind, value) for kind, value in strong}
    person_id = next((pid for pid in strong_owners.values() if pid), None)
    device_owner = owner(session, "anonymous_id", claim.anonymous_id) if claim.anonymous_id else None
    if person_id is None and device_owner and not _contradicts(session, device_owner, strong):
        person_id = device_owner

    created = person_id is None
    person = new_person(session, claim.at) if created else session.get(Person, person_id)
    person_id = person.id
    for kind, value in strong:
        if strong_owners[kind] is None:
            attach_identifier(session, person_id, kind, value)

    resolution = Resolution(person_id=person_id, created=created)
    if claim.anonymous_id:
        if device_owner is None:
            attach_identifier(session, person_id, "anonymous_id", claim.anonymous_id)
            resolution.attached_events += session.execute(
                update(Event)
                .where(
                    Event.anonymous_id == claim.anonymous_id,
                    Event.person_id.is_(None),
                    Event.timestamp >= claim.at - merge_window,
                )
                .values(person_id=person_id)
            ).rowcount
        elif device_owner != person_id:
            resolution.conflict = True
            session.add(
                IdentityConflict(
                    anonymous_id=claim.anonymous_id,
                    owner_person_id=device_owner,
                    claimant_person_id=person_id,
                    created_at=utcnow(),
                )
            )
    if claim.user_id and strong_owners["user_id"] is None:
        # A known user id's events were attached as they arrived; only a new one has any waiting.
        resolution.attached_events += session.execute(
            update(Event).where(Event.user_id == claim.user_id, Event.person_id.is_(None)).values(person_id=person_id)
        ).rowcount
    _apply_traits(person, claim)
    return resolution


def find_person(session: Session, *, person_id: str | None = None, user_id: str | None = None,
                email: str | None = None, anonymous_id: str | None = None, phone: str | None = None,
                phone_region: str = "US") -> str | None:
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
    lock_identifiers(session, [("person", min(primary_id, secondary_id)), ("person", max(primary_id, secondary_id))])
    primary, secondary = session.get(Person, primary_id), session.get(Person, secondary_id)
    if primary is None or secondary is None:
        return
    for table in PERSON_OWNED:
        session.execute(update(table).where(table.person_id == secondary_id).values(person_id=primary_id))
    session.execute(
        update(IdentityConflict).where(IdentityConflict.owner_person_id == secondary_id).values(owner_person_id=primary_id)
    )
    session.execute(
        update(IdentityConflict)
        .where(IdentityConflict.claimant_person_id == secondary_id)
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
    session.flush()
    # The secondary's journey stops; the primary's hub re-evaluates with the merged history.
    outbox.signal(session, "absorbed", secondary_id, {"into": primary_id})
    outbox.signal(session, "merged", primary_id, {"absorbed": secondary_id})


def delete_person(session: Session, person_id: str) -> bool:
    """Remove the person and everything we hold about them."""
    person = session.get(Person, person_id)
    if person is None:
        return False
    for table in PERSON_OWNED:
        session.execute(delete(table).where(table.person_id == person_id))
    session.execute(
        delete(IdentityConflict).where(
            (IdentityConflict.owner_person_id == person_id) | (IdentityConflict.claimant_person_id == person_id)
        )
    )
    session.delete(person)
    session.flush()
    outbox.signal(session, "erased", person_id)
    return True
