"""Signed unsubscribe links: `GET {PUBLIC_BASE_URL}/u/{token}`, no login.

The token carries the person id, the channel and the message it came in, and an HMAC-SHA256 over
them with the shop's secret. Without the secret nobody can make a token for another person:
changing any byte of the payload breaks the signature. The message decides whose link it is: a
merge moves messages to the surviving person, so a link mailed before the merge unsubscribes the
survivor (the person id is the fallback for a link without a message).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from dataclasses import replace

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from store.db import insert_ignoring_conflicts, transaction
from store.identity import LocksMoved, lock_person, lock_up_front, retry_moved_locks
from store.models import Event, Identifier, Message, Person, table_of, utcnow

VERSION = b"u1"
CHANNELS = ("email", "sms")
_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SIGNATURE_BYTES = 16  # 128-bit tag: short links, far beyond guessing


@dataclass(frozen=True)
class UnsubscribeClaim:
    person_id: str
    channel: str
    message_id: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, VERSION + b"|" + payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def make_token(key: bytes, person_id: str, channel: str = "email", message_id: str | None = None) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    payload = f"{person_id}|{channel}|{message_id or ''}".encode()
    return f"{_b64(payload)}.{_b64(_tag(key, payload))}"


def read_token(keys: bytes | list[bytes], token: str) -> UnsubscribeClaim | None:
    """The claim of a genuine token signed with any of `keys` (newest first; older ones stay valid
    through a rotation); None for anything forged, truncated or malformed."""
    keys = [keys] if isinstance(keys, bytes) else [key for key in keys if key]
    if not keys or len(token) > 512 or token.count(".") != 1:
        return None
    payload_part, tag_part = token.split(".")
    try:
        payload, tag = _unb64(payload_part), _unb64(tag_part)
    except (binascii.Error, ValueError):
        return None
    if not any([hmac.compare_digest(tag, _tag(key, payload)) for key in keys]):  # every key, no early exit
        return None
    try:
        person_id, channel, message_id = payload.decode().split("|")
    except (UnicodeDecodeError, ValueError):
        return None
    if channel not in CHANNELS or not _ID.match(person_id) or (message_id and not _ID.match(message_id)):
        return None
    return UnsubscribeClaim(person_id=person_id, channel=channel, message_id=message_id or None)


def unsubscribe_url(
    base_url: str, key: bytes, person_id: str, channel: str = "email", message_id: str | None = None
) -> str:
    return f"{base_url.rstrip('/')}/u/{make_token(key, person_id, channel, message_id)}"


def set_subscription(
    session: Session, claim: UnsubscribeClaim, subscribed: bool, via: str, at: datetime | None = None
) -> Person | None:
    """Unsubscribe (or re-subscribe) the claim's person from its channel, and keep an `Unsubscribed`
    / `Resubscribed` event on their profile saying which message it came from. Idempotent."""
    person = session.get(Person, claim.person_id)
    if person is None:
        return None
    at = at or utcnow()
    if claim.channel == "email":
        changed = person.email_unsubscribed == subscribed
        person.email_unsubscribed = not subscribed
    else:
        changed = person.sms_consent != subscribed
        person.sms_consent = subscribed
    if not changed:
        return person
    person.updated_at = at
    name = "Resubscribed" if subscribed else "Unsubscribed"
    session.execute(
        insert_ignoring_conflicts(session, table_of(Event)).values(
            message_id=f"{name.lower()}:{claim.person_id}:{claim.channel}:{at.isoformat()}"[:255],
            type="track",
            name=name,
            original_name=name,
            person_id=claim.person_id,
            properties={"channel": claim.channel, "via": via, "message_id": claim.message_id},
            context={},
            timestamp=at,
            received_at=at,
            source="server",
            missing_properties=[],
        )
    )
    return person


def person_of(session: Session, claim: UnsubscribeClaim) -> str | None:
    """Who the link belongs to now: the person its message was re-pointed to by merges, else the
    person it was made for; None when they were deleted."""
    if claim.message_id:
        owner = session.exec(select(col(Message.person_id)).where(col(Message.id) == claim.message_id)).first()
        if owner:
            return owner
    return claim.person_id if session.get(Person, claim.person_id) is not None else None


def change_subscription(engine: Engine, claim: UnsubscribeClaim, subscribed: bool, via: str) -> bool:
    """`set_subscription` for the link's current person, under that person's lock (the same
    advisory locks ingest takes on PostgreSQL, so an identify's consent traits and a click never
    interleave). False when the person is gone."""

    def work() -> bool:
        with transaction(engine) as session:
            person_id = person_of(session, claim)
            if person_id is None:
                return False
            keys = session.exec(
                select(col(Identifier.kind), col(Identifier.value)).where(col(Identifier.person_id) == person_id)
            ).all()
            lock_up_front(session, keys)
            if person_of(session, claim) != person_id:  # merged away while we waited: resolve again
                raise LocksMoved(f"person {person_id} was merged")
            lock_person(session, person_id)
            return set_subscription(session, replace(claim, person_id=person_id), subscribed, via) is not None

    return retry_moved_locks(work)
