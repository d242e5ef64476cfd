"""The suppression list: emails and phones we must never message again, kept as peppered hashes.

A person's row says whether they unsubscribed or were suppressed, but a delete removes the row. So
that "forget me" does not turn into "mail me again" when the same address comes back (a server
event from the shop's backend, an import), a delete keeps HMAC-SHA256(pepper, "kind:value") of the
unsubscribed or suppressed person's normalised email/phone — never the address itself — and every
send consults the list for the identifiers of the person it is about to message. The pepper is
`BREADCRUMB_SUPPRESSION_PEPPER` (process configuration, not in the database), so a copy of the
database alone does not confirm whether an address is on the list.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import cache

from sqlmodel import Session, col, select

from store.db import insert_ignoring_conflicts
from store.models import Identifier, Person, Suppression, table_of, utcnow

SUPPRESSED = "suppressed"  # nothing on any channel
UNSUBSCRIBED = "unsubscribed"  # nothing on the identifier's own channel
CHANNEL_KIND = {"email": "email", "sms": "phone"}


@cache
def _pepper() -> bytes:
    from store.settings import Settings

    return Settings().suppression_pepper.encode()


def digest(kind: str, value: str) -> str:
    """The list's key for a normalised identifier (emails lower-case, phones E.164)."""
    return hmac.new(_pepper(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def keep_on_delete(session: Session, person: Person, identifiers: Sequence[tuple[str, str]]) -> int:
    """Before `person` is deleted: list the identifiers they must not be messaged at again.
    Suppressed: every email and phone; unsubscribed from email: their emails. Returns how many."""
    kinds = {"email", "phone"} if person.suppressed else {"email"} if person.email_unsubscribed else set()
    reason = SUPPRESSED if person.suppressed else UNSUBSCRIBED
    entries = [
        dict(digest=digest(kind, value), kind=kind, reason=reason, created_at=utcnow())
        for kind, value in identifiers
        if kind in kinds
    ]
    if entries:
        session.execute(insert_ignoring_conflicts(session, table_of(Suppression)).values(entries))
    return len(entries)


def listed(session: Session, person_id: str, channel: str) -> str | None:
    """Why the list forbids messaging `person_id` on `channel`, or None: one of their emails or
    phones is suppressed (any channel), or this channel's identifier was unsubscribed."""
    identifiers = session.exec(
        select(col(Identifier.kind), col(Identifier.value)).where(
            col(Identifier.person_id) == person_id, col(Identifier.kind).in_(("email", "phone"))
        )
    ).all()
    if not identifiers:
        return None
    digests = {digest(kind, value): kind for kind, value in identifiers}
    for kind, reason in session.exec(
        select(col(Suppression.kind), col(Suppression.reason)).where(col(Suppression.digest).in_(list(digests)))
    ).all():
        if reason == SUPPRESSED or CHANNEL_KIND.get(channel, kind) == kind:
            return f"{kind} on the suppression list ({reason} before their data was deleted)"
    return None
