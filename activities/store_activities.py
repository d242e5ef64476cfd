"""Activities: the hub's and journeys' only way to read the store and send. All I/O lives here."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, update
from sqlmodel import Session, select
from temporalio import activity

from activities.channels import Channel, OutboxChannel
from activities.render import Renderer
from journeys import taxonomy
from journeys.history import HistoryEvent, PersonHistory
from journeys.personalise import category_anchor, recently_viewed
from journeys.routing import open_cart
from store.db import insert_ignoring_conflicts, transaction
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person, as_utc
from workflows.models import (
    Conversion,
    JourneyNote,
    JourneyStart,
    PersonContext,
    SendCheck,
    SendCheckInput,
    SendInput,
    SendResult,
)

HISTORY_HORIZON = timedelta(days=90)  # routing looks back at most this far (orders: always)
JOURNEY_ROUTES = ("cart_recovery", "browse_recovery", "welcome")


def person_history(session: Session, person: Person, now: datetime) -> PersonHistory:
    rows = session.exec(
        select(Event)
        .where(Event.person_id == person.id, Event.duplicate_of.is_(None))
        .where((Event.timestamp >= now - HISTORY_HORIZON) | (Event.name == taxonomy.ORDER_COMPLETED))
        .order_by(Event.timestamp, Event.id)
    ).all()
    return PersonHistory(
        person_id=person.id,
        identified_at=as_utc(person.identified_at),
        timezone=person.timezone,
        events=[
            HistoryEvent(name=e.name, timestamp=e.timestamp, properties=e.properties or {}, cart_id=e.cart_id,
                         order_id=e.order_id, source=e.source)
            for e in rows
        ],
    )


def _first_identifier(session: Session, person_id: str, kind: str) -> str | None:
    return session.exec(
        select(Identifier.value).where(Identifier.person_id == person_id, Identifier.kind == kind).order_by(Identifier.id)
    ).first()


class StoreActivities:
    def __init__(self, engine: Engine, channels: dict[str, Channel] | None = None,
                 renderer: Renderer | None = None) -> None:
        self.engine = engine
        outbox = OutboxChannel()
        self.channels = {"email": outbox, "sms": outbox, "outbox": outbox, **(channels or {})}
        self.renderer = renderer or Renderer()

    def all(self) -> list:
        return [self.load_person, self.start_journey, self.check_before_send, self.send_step,
                self.record_journey_note, self.record_conversion]

    @activity.defn(name="load_person")
    def load_person(self, person_id: str) -> PersonContext | None:
        with Session(self.engine) as session:
            person = session.get(Person, person_id)
            if person is None:
                return None
            runs = session.exec(
                select(JourneyRun.route, func.max(JourneyRun.started_at), func.count())
                .where(JourneyRun.person_id == person_id, JourneyRun.route.in_(JOURNEY_ROUTES))
                .group_by(JourneyRun.route)
            ).all()
            return PersonContext(
                history=person_history(session, person, datetime.now().astimezone()),
                last_started={route: as_utc(started) for route, started, _ in runs},
                journeys_count=sum(count for _, _, count in runs),
            )

    @activity.defn(name="start_journey")
    def start_journey(self, start: JourneyStart) -> bool:
        """Record the routing decision; False when this cart already had its one recovery."""
        cart_key = start.cart_id if start.route == "cart_recovery" and start.cart_id else None
        with transaction(self.engine) as session:
            if session.get(JourneyRun, start.workflow_id):
                return True  # a retried activity: already recorded
            if cart_key and session.exec(select(JourneyRun).where(JourneyRun.cart_recovery_key == cart_key)).first():
                self._log(session, start.workflow_id, start.person_id, start.route, "skipped",
                          f"cart {cart_key} already had its recovery journey", start.at)
                return False
            is_journey = start.route in JOURNEY_ROUTES
            session.add(JourneyRun(workflow_id=start.workflow_id, person_id=start.person_id, route=start.route,
                                   status="running" if is_journey else "decided", reason=start.reason,
                                   cart_id=start.cart_id, cart_value=start.cart_value, cart_recovery_key=cart_key,
                                   started_at=start.at, ended_at=None if is_journey else start.at))
            self._log(session, start.workflow_id, start.person_id, start.route, "decision", start.reason, start.at)
        return True

    @activity.defn(name="check_before_send")
    def check_before_send(self, check: SendCheckInput) -> SendCheck:
        with Session(self.engine) as session:
            person = session.get(Person, check.person_id)
            if person is None:
                return SendCheck(person_exists=False)
            history = person_history(session, person, datetime.now().astimezone())
            order = next((e for e in reversed(history.events) if e.name == taxonomy.ORDER_COMPLETED), None)
            result = SendCheck(timezone=person.timezone)
            if order is not None:
                result.purchased = f"order {order.order_key or 'without id'} at {order.timestamp.isoformat()}"
            if person.suppressed:
                result.suppressed = "suppressed"
            elif check.channel == "email" and person.email_unsubscribed:
                result.suppressed = "unsubscribed from email"
            elif check.channel == "sms" and not person.sms_consent:
                result.suppressed = "no SMS consent"
            if check.route == "cart_recovery":
                result.cart_open = self._cart(history, check.cart_id) is not None
            result.recipient = self._recipient(session, person.id, check.channel)
            last = session.exec(
                select(func.max(Message.sent_at)).where(Message.person_id == person.id, Message.status == "sent")
            ).one()
            result.last_message_at = as_utc(last)
            return result

    @staticmethod
    def _cart(history: PersonHistory, cart_id: str | None):
        events = [e for e in history.events if cart_id is None or e.cart_key == cart_id
                  or e.name == taxonomy.ORDER_COMPLETED]
        return open_cart(events)

    def _recipient(self, session: Session, person_id: str, channel: str) -> str | None:
        if channel == "sms":
            return _first_identifier(session, person_id, "phone")
        email = _first_identifier(session, person_id, "email")
        if channel == "outbox":
            return email or _first_identifier(session, person_id, "phone") or person_id
        return email

    @activity.defn(name="send_step")
    def send_step(self, send: SendInput) -> SendResult:
        """Write the message under `{workflow_id}:{step}` before delivering: a retry finds it and never
        delivers a second time."""
        key = f"{send.workflow_id}:{send.step}"
        with transaction(self.engine) as session:
            message = session.exec(select(Message).where(Message.idempotency_key == key)).first()
            if message is None:
                session.execute(insert_ignoring_conflicts(session, Message.__table__).values(
                    **self._compose(session, send, key)))
                message = session.exec(select(Message).where(Message.idempotency_key == key)).one()
        if message.status != "pending":
            return self._result(message, duplicate=True)
        try:
            self.channels[message.channel].deliver(message)
        except Exception as exc:
            if not getattr(exc, "permanent", False):
                raise  # transient: the activity retry policy tries again, same row, same key
            return self._finish(message, "failed", str(exc))
        return self._finish(message, "sent", None, sent_at=send.at)

    def _compose(self, session: Session, send: SendInput, key: str) -> dict:
        person = session.get(Person, send.person_id)
        history = person_history(session, person, send.at)
        if send.route == "cart_recovery":
            cart = self._cart(history, send.cart_id)
            items = [item.model_dump() for item in cart.items] if cart else []
            cart_value = cart.value if cart else None
        else:
            items, cart_value = recently_viewed(history.events), None
        traits = person.traits or {}
        rendered = self.renderer.render(send.template, {
            "first_name": traits.get("first_name") or traits.get("firstName"),
            "items": items, "cart_value": cart_value, "category": category_anchor(history.events),
            "resume_url": f"/cart/{send.cart_id}" if send.cart_id else "/cart",
        })
        return dict(
            id=str(uuid.uuid4()), person_id=send.person_id, workflow_id=send.workflow_id, journey=send.route,
            step=send.step, template=send.template, channel=send.channel,
            recipient=self._recipient(session, send.person_id, send.channel) or "", subject=rendered.subject,
            body=rendered.body, items=items, status="pending", idempotency_key=key, cart_id=send.cart_id,
            created_at=send.at,
        )

    def _finish(self, message: Message, status: str, reason: str | None, sent_at: datetime | None = None) -> SendResult:
        with transaction(self.engine) as session:
            session.execute(update(Message).where(Message.id == message.id, Message.status == "pending")
                            .values(status=status, reason=reason, sent_at=sent_at))
            self._log(session, message.workflow_id, message.person_id, message.journey,
                      "sent" if status == "sent" else "failed", reason or message.subject, sent_at or message.created_at,
                      step=message.step, message_id=message.id)
        message.status, message.reason = status, reason
        return self._result(message)

    @staticmethod
    def _result(message: Message, duplicate: bool = False) -> SendResult:
        return SendResult(message_id=message.id, status=message.status, subject=message.subject,
                          items=message.items or [], reason=message.reason, duplicate=duplicate)

    @activity.defn(name="record_journey_note")
    def record_journey_note(self, note: JourneyNote) -> None:
        with transaction(self.engine) as session:
            self._log(session, note.workflow_id, note.person_id, note.journey, note.kind, note.reason, note.at,
                      step=note.step, until=note.until, message_id=note.message_id)
            if note.final_status:
                session.execute(update(JourneyRun).where(JourneyRun.workflow_id == note.workflow_id)
                                .values(status=note.final_status, ended_at=note.at, reason=note.reason))

    @activity.defn(name="record_conversion")
    def record_conversion(self, conversion: Conversion) -> None:
        """Last-touch attribution: the order goes to the last message sent inside the window before it."""
        ordered_at = conversion.ordered_at or conversion.at
        with transaction(self.engine) as session:
            message = session.exec(
                select(Message)
                .where(Message.person_id == conversion.person_id, Message.status == "sent",
                       Message.sent_at <= ordered_at, Message.sent_at >= ordered_at - conversion.attribution_window)
                .order_by(Message.sent_at.desc())
            ).first()
            revenue = f"{conversion.revenue:.2f}" if conversion.revenue is not None else "unknown value"
            reason = f"order {conversion.order_id or 'without id'} ({revenue})"
            reason += f" after {message.journey} step {message.step}" if message else " with no message in the window"
            self._log(session, message.workflow_id if message else conversion.hub_id, conversion.person_id,
                      message.journey if message else "none", "conversion", reason, ordered_at,
                      message_id=message.id if message else None)

    @staticmethod
    def _log(session: Session, workflow_id: str, person_id: str, journey: str, kind: str, reason: str,
             at: datetime, **extra) -> None:
        session.add(JourneyLog(workflow_id=workflow_id, person_id=person_id, journey=journey, kind=kind,
                               reason=reason, at=at, **extra))
