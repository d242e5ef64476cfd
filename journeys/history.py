"""A person's merged event history as the journeys see it: canonical names, UTC timestamps,
oldest first. Loaded by an activity and handed to pure routing code, so it must serialise
cleanly through Temporal (no defaults that read the clock or draw random ids)."""

from __future__ import annotations

import math
from datetime import datetime, UTC
from typing import Any

from pydantic import BaseModel, field_validator

from journeys import taxonomy


def number(value: object) -> float | None:
    """A finite number from an event property (a price, a cart value), else None: what a client
    sends as text or a boolean, or not at all, is no amount."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return amount if math.isfinite(amount) else None


def as_utc(moment: datetime) -> datetime:
    """UTC-aware copy of a moment. A naive moment is read as UTC: SQLite drops the offset on the
    way back, and every timestamp we store was UTC on the way in."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class HistoryEvent(BaseModel):
    """One thing the shopper did. `name` is already canonical (aliases were mapped at ingest)."""

    name: str
    timestamp: datetime
    properties: dict[str, Any] = {}
    cart_id: str | None = None
    order_id: str | None = None
    source: str = "client"

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        # Ingest already maps aliases; doing it again here is free and keeps routing honest
        # for histories built by hand (tests, replays, back-fills).
        return taxonomy.canonical_name(name)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @property
    def cart_key(self) -> str | None:
        """The cart this event belongs to: the column, else the Segment property."""
        return self.cart_id if self.cart_id is not None else _text(self.properties.get("cart_id"))

    @property
    def order_key(self) -> str | None:
        return self.order_id if self.order_id is not None else _text(self.properties.get("order_id"))


class CartSummary(BaseModel):
    """The open cart as routing reads it (`journeys.routing.open_cart`): which one and its value."""

    cart_id: str | None = None
    value: float


class HistorySummary(BaseModel):
    """What a projected history (`journeys.routing.project_history`) left out, pre-computed for routing
    at `as_of` (the moment the hub routes): the open cart and the browse intent of the left-out events."""

    as_of: datetime
    events_left_out: int = 0
    open_cart: CartSummary | None = None
    intent_left_out: float = 0.0

    @field_validator("as_of")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class PersonHistory(BaseModel):
    """Everything routing needs about one person; events are kept oldest first. A projected history
    carries a `summary` of what it left out (see `journeys.routing.project_history`)."""

    person_id: str
    identified_at: datetime
    timezone: str | None = None
    events: list[HistoryEvent] = []
    summary: HistorySummary | None = None

    @field_validator("identified_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @field_validator("events")
    @classmethod
    def _oldest_first(cls, events: list[HistoryEvent]) -> list[HistoryEvent]:
        # Stable: events with the same timestamp keep the order the store gave them.
        return sorted(events, key=lambda e: e.timestamp)


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)
