"""The rules a send is checked against, as the store activities and the what-if simulation both
apply them: who receives a channel, which cart a step is about, and what stops or skips a step.

Pure functions over what the caller read (from the store, or from a simulation's snapshot), so the
two cannot drift apart and the rules are tested without a database or Temporal."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, model_validator

from journeys import taxonomy
from journeys.history import PersonHistory
from journeys.routing import OpenCart, open_cart


class SendCheck(BaseModel):
    """Everything a journey re-checks before a send, read fresh from the store."""

    person_exists: bool = True
    purchased: str | None = None  # why we think they bought, e.g. "order o-1 at …"
    suppressed: str | None = None  # why they must not be messaged at all (ends the journey)
    channel_blocked: str | None = None  # why this step's channel cannot reach them (skips the step)
    segment: str | None = None  # the journey's segment rule they no longer meet ("left segment vip"): ends it
    cart_open: bool = True
    reachable: bool = True  # the person has an address for this channel (the address stays in the store)
    last_message_at: datetime | None = None
    timezone: str | None = None
    product_stop: str | None = None  # a catalogue journey's product sold out or dearer again (ends it)

    @model_validator(mode="before")
    @classmethod
    def _from_recorded_recipient(cls, data: object) -> object:
        """Histories recorded before `reachable` carry the address itself: read whether there was one.
        The oldest (before `channel_blocked`) had no reason for a missing one: it is the block that
        ended their journey ("no address for this channel"), as a current check reports it."""
        if isinstance(data, dict) and "recipient" in data and "reachable" not in data:
            data = {**data, "reachable": bool(data["recipient"])}
            if not data["reachable"] and not data.get("channel_blocked"):
                data["channel_blocked"] = "no address for this channel"
        return data


def recipient(channel: str, emails: list[str], phones: list[str], person_id: str) -> str | None:
    """Where a channel's message goes: SMS → the first phone; email → the first email; the outbox
    → the email, else the phone, else the person id (it always has someone to write down)."""
    email = emails[0] if emails else None
    phone = phones[0] if phones else None
    if channel == "sms":
        return phone
    if channel == "outbox":
        return email or phone or person_id
    return email


def step_cart(history: PersonHistory, cart_id: str | None) -> OpenCart | None:
    """The cart a cart-recovery step is about, if still open: this cart's events (and every order,
    which may close it) through the routing rule. No cart id: whichever cart is open."""
    events = [
        e for e in history.events if cart_id is None or e.cart_key == cart_id or e.name == taxonomy.ORDER_COMPLETED
    ]
    return open_cart(events)


def check_send(
    history: PersonHistory,
    *,
    route: str,
    channel: str,
    cart_id: str | None,
    timezone: str | None,
    suppressed: str | None,
    email_unsubscribed: bool,
    sms_consent: bool,
    reachable: bool,
    last_message_at: datetime | None,
    since: datetime | None = None,
) -> SendCheck:
    """What a journey learns right before a send. A suppression (the person, or a listed address)
    ends the journey; a channel they left or cannot be reached on only skips this step; a purchase
    and a closed cart are reported for the journey's own rule (`workflows.journey.reason_to_stop`).
    With `since` (a catalogue journey's start) only an order from then on counts as purchased: a past
    customer is who back-in-stock mail is for."""
    result = SendCheck(timezone=timezone, reachable=reachable, last_message_at=last_message_at)
    order = next(
        (
            e
            for e in reversed(history.events)
            if e.name == taxonomy.ORDER_COMPLETED and (since is None or e.timestamp >= since)
        ),
        None,
    )
    if order is not None:
        result.purchased = f"order {order.order_key or 'without id'} at {order.timestamp.isoformat()}"
    if suppressed:
        result.suppressed = suppressed
    elif channel == "email" and email_unsubscribed:
        result.channel_blocked = "unsubscribed from email"
    elif channel == "sms" and not sms_consent:
        result.channel_blocked = "no SMS consent"
    elif not reachable:
        result.channel_blocked = "no phone number" if channel == "sms" else "no email address"
    if route == "cart_recovery":
        result.cart_open = step_cart(history, cart_id) is not None
    return result
