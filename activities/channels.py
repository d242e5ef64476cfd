"""Delivery channels behind one small interface. `outbox` keeps the message in the store only
(the default for `breadcrumb dev`); real SMTP and SMS channels plug in here."""

from __future__ import annotations

import logging
from typing import Protocol

from store.models import Message

log = logging.getLogger("breadcrumb.delivery")


class Channel(Protocol):
    def deliver(self, message: Message) -> None:
        """Deliver once; the message's idempotency key travels with it so a downstream can dedupe."""


class OutboxChannel:
    def deliver(self, message: Message) -> None:
        log.info("outbox delivery %s step %s of %s (%s)", message.id, message.step, message.journey, message.idempotency_key)
