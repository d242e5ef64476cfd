"""Activities: the hub's and journeys' only way to read the store and send. All I/O lives here."""

from __future__ import annotations

import logging
import secrets
import threading
import time
import typing
from typing import Any
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jinja2 import TemplateError
from sqlalchemy import CursorResult, Engine, Text, and_, bindparam, case, cast, func, literal_column, or_, true, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempt import Attempt
from activities.channels import Channel, OutboxChannel
from activities.render import Renderer, Rendered, TemplateProblem, absolute, describe
from journeys import taxonomy
from journeys.experiments import Variant
from journeys.attribution import Order, Touch, credit
from journeys.history import HistoryEvent, PersonHistory
from journeys.links import LinkHosts
from journeys.personalise import Catalog, CatalogEntry, category_anchor, nothing_to_show, personalise, skus_in
from journeys.catalogue import Stock, product_stop, seen_price
from journeys.policy import ALL_JOURNEYS, CATALOGUE_WINDOW, JOURNEY_NAMES, Policy, PolicyError, load_policy
from journeys.routing import OpenCart, project_history
from journeys.send_rules import check_send, recipient, step_cart
from store import segments, suppression
from store.experiments import Checks, variant_for
from store.db import insert_ignoring_conflicts, reading, transaction
from store.dialect import dialect_name
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person, Product, as_utc, table_of, utcnow
from store.settings import Settings
from store.unsubscribe import unsubscribe_url
from workflows.journey import reason_to_stop
from workflows.models import (
    Conversion,
    JourneyNote,
    JourneyStart,
    PersonContext,
    PersonLookup,
    SendCheck,
    SendCheckInput,
    SendInput,
    SendResult,
)

log = logging.getLogger("breadcrumb.activities")

LEASE_MARGIN = timedelta(seconds=5)  # beyond the delivery deadline: clock skew between workers, the row write
LEASE_POLL = 1.0  # seconds between looks at a message another attempt is delivering
HISTORY_HORIZON = timedelta(days=90)  # routing looks back at most this far (orders: always)


def person_history(session: Session, person: Person, now: datetime) -> PersonHistory:
    rows = session.exec(
        select(Event)
        .where(col(Event.person_id) == person.id, col(Event.duplicate_of).is_(None))
        .where((col(Event.timestamp) >= now - HISTORY_HORIZON) | (col(Event.name) == taxonomy.ORDER_COMPLETED))
        .order_by(col(Event.timestamp), col(Event.id))
    ).all()
    return PersonHistory(
        person_id=person.id,
        identified_at=as_utc(person.identified_at),
        timezone=person.timezone,
        events=[
            HistoryEvent(
                name=e.name,
                timestamp=e.timestamp,
                properties=e.properties or {},
                cart_id=e.cart_id,
                order_id=e.order_id,
                source=e.source,
            )
            for e in rows
        ],
    )


DEV_SHOP_URL = "https://shop.example"
DEV_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
CATALOG_PICKS_SCAN = 200  # ranked in-stock rows read for category picks and bestsellers
BESTSELLER_WINDOW = timedelta(days=90)  # the orders that rank products the admin did not rank
SALES_REFRESH = timedelta(minutes=10)  # how stale a worker lets `products.recent_orders` get


@dataclass(frozen=True)
class MessageLinks:
    """What messages link to and say about the shop (from settings; dev placeholders when unset,
    which only the outbox channel accepts — see channels_from_settings)."""

    shop_name: str
    shop_url: str
    shop_address: str
    public_base_url: str
    unsubscribe_key: bytes
    currency: str

    @classmethod
    def from_settings(cls, settings: Settings | None) -> MessageLinks:
        settings = settings or Settings()
        key = settings.unsubscribe_key
        if key is None:
            log.warning(
                "no BREADCRUMB_UNSUBSCRIBE_SECRET: unsubscribe links in outbox messages are "
                "signed with a throwaway key and will not verify"
            )
            key = secrets.token_bytes(32)
        return cls(
            shop_name=settings.shop_name,
            shop_url=(settings.shop_url or DEV_SHOP_URL).rstrip("/"),
            shop_address=settings.shop_address,
            public_base_url=(settings.public_base_url or DEV_PUBLIC_BASE_URL).rstrip("/"),
            unsubscribe_key=key,
            currency=settings.currency.upper(),
        )


def orders_by_sku(dialect: str, since: datetime):
    """(sku, orders): how many orders since `since` listed each product in their `products[]` (its
    `sku`, else `product_id`, as journeys.taxonomy.product_key reads it). The other copy of an order
    (client/server) and a repeated order id count once."""
    e = table_of(Event)
    if dialect == "postgresql":
        listed = e.c.properties.op("->")(literal_column("'products'"))
        lines = func.jsonb_array_elements(
            case((func.jsonb_typeof(listed) == "array", listed), else_=literal_column("'[]'::jsonb"))
        ).table_valued("value")

        def field(key: str):
            name: ColumnElement[Any] = literal_column(f"'{key}'")
            return case(
                (
                    func.jsonb_typeof(lines.c.value.op("->")(name)).in_(("string", "number")),
                    func.nullif(lines.c.value.op("->>")(name), ""),
                )
            )

        is_list: ColumnElement[bool] = true()
    else:
        lines = func.json_each(e.c.properties, "$.products").table_valued("value", "type")

        def field(key: str):
            path: ColumnElement[Any] = literal_column(f"'$.{key}'")
            return case(
                (lines.c.type != "object", None),  # json_type below would choke on a bare string
                (
                    func.json_type(lines.c.value, path).in_(("text", "integer", "real")),
                    func.nullif(cast(func.json_extract(lines.c.value, path), Text), ""),
                ),
            )

        is_list = func.json_type(e.c.properties, "$.products") == "array"
    sku = func.coalesce(field("sku"), field("product_id"))
    return (
        select(sku.label("sku"), func.count(func.distinct(func.coalesce(e.c.order_id, e.c.message_id))).label("orders"))
        .select_from(e.join(lines, true()))
        .where(
            e.c.name == taxonomy.ORDER_COMPLETED,
            e.c.duplicate_of.is_(None),
            e.c.timestamp >= since,
            is_list,
            sku.is_not(None),
        )
        .group_by(sku)
    )


def refresh_recent_orders(engine: Engine, now: datetime) -> int:
    """Set every product's `recent_orders` to the orders of the BESTSELLER_WINDOW before `now` that
    listed it: the count is read once (the aggregate over the orders' `products[]`), then written
    in one short transaction. Returns the products that sold."""
    with reading(engine).connect() as connection:
        sold = dict(connection.execute(orders_by_sku(dialect_name(engine), now - BESTSELLER_WINDOW)).all())
    products = table_of(Product)
    with transaction(engine) as session:
        session.execute(update(products).where(products.c.recent_orders != 0).values(recent_orders=0))
        if sold:
            session.execute(
                update(products)
                .where(products.c.sku == bindparam("sold_sku"))
                .values(recent_orders=bindparam("sold_count")),
                [{"sold_sku": sku, "sold_count": count} for sku, count in sold.items()],
            )
    return len(sold)


def load_catalog(session: Session, events: list[HistoryEvent], cart: OpenCart | None) -> Catalog:
    """The catalog rows a message can use: every product the history mentions, plus the ranked
    in-stock products of the shopper's category and the shop's bestsellers — the admin's
    `bestseller_rank` first, then `recent_orders`. Three queries."""
    rows = (
        list(session.exec(select(Product).where(col(Product.sku).in_(skus)))) if (skus := skus_in(events, cart)) else []
    )
    anchor = category_anchor(events, Catalog(catalog_entry(r) for r in rows))
    return ranked_catalog(session, rows, [anchor] if anchor else [])


def ranked_catalog(session: Session, rows: list[Product], categories: list[str]) -> Catalog:
    """`rows` plus the best CATALOG_PICKS_SCAN in-stock products of the shop (bestsellers) and of
    each category, each list limited on its own: a category's unsold products must not lose their
    place to the shop's bestsellers. Best is the admin's rank, then recent orders, then the name."""
    ranked = (
        select(Product)
        .where(col(Product.in_stock).is_(True))
        .order_by(
            col(Product.bestseller_rank).is_(None),
            col(Product.bestseller_rank),
            col(Product.recent_orders).desc(),
            col(Product.name),
            col(Product.sku),
        )
        .limit(CATALOG_PICKS_SCAN)
    )
    rows = list(rows)
    for where in [
        or_(col(Product.bestseller_rank).is_not(None), col(Product.recent_orders) > 0),
        *(col(Product.category) == category for category in categories),
    ]:
        rows += session.exec(ranked.where(where)).all()
    unique = {(r.sku, r.variant): r for r in rows}
    return Catalog(catalog_entry(r) for r in unique.values())


def catalog_entry(row: Product) -> CatalogEntry:
    """A catalog row as personalisation reads it."""
    return CatalogEntry(
        sku=row.sku,
        variant=row.variant or None,
        name=row.name,
        category=row.category,
        price=row.price,
        currency=row.currency,
        image_url=row.image_url,
        url=row.url,
        in_stock=row.in_stock,
        bestseller_rank=row.bestseller_rank,
        orders=row.recent_orders or 0,
    )


def _resume_url(events: list[HistoryEvent], cart: OpenCart | None, shop_url: str, link_hosts=()) -> str:
    """Where "return to your cart" goes: the newest checkout/cart URL the storefront sent for this
    cart (`checkout_url`, `cart_url`) on the shop's hosts, else the shop's /cart."""
    hosts = LinkHosts.of(shop_url, link_hosts)
    for event in reversed(events):
        if cart is not None and cart.cart_id is not None and event.cart_key != cart.cart_id:
            continue
        for key in ("checkout_url", "cart_url"):
            value = (event.properties or {}).get(key)
            if isinstance(value, str) and value.strip() and hosts.allows(value):
                return absolute(value.strip(), shop_url)
    return f"{shop_url}/cart"


def _currency(events: list[HistoryEvent], default: str) -> str:
    for event in reversed(events):
        value = (event.properties or {}).get("currency")
        if isinstance(value, str) and len(value.strip()) == 3:
            return value.strip().upper()
    return default


class PolicySource:
    """The worker's journeys.toml, re-read when the file changes, so a hub's next decision uses the
    edited policy. A file that does not parse is logged and the last good policy kept."""

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.journeys)
        self.policy: Policy = settings.policy
        self.read_at = self._mtime()
        self._lock = threading.Lock()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def current(self) -> Policy:
        modified = self._mtime()
        if modified is None or modified == self.read_at:
            return self.policy
        with self._lock:
            if modified != self.read_at:
                try:
                    self.policy = load_policy(self.path)
                    log.info("journey policy reloaded from %s (version %s)", self.path, self.policy.version)
                except PolicyError as exc:
                    log.error("journey policy not reloaded, keeping version %s: %s", self.policy.version, exc)
                self.read_at = modified
        return self.policy


class JourneyActivities:
    """The activities the hub and the journeys call, by name: the store serves them, and the what-if
    simulation serves the same names from memory."""

    NAMES = (
        "load_person",
        "start_journey",
        "check_before_send",
        "send_step",
        "record_journey_note",
        "record_conversion",
    )

    def all(self) -> list:
        return [getattr(self, name) for name in self.NAMES]


class StoreActivities(JourneyActivities):
    def __init__(
        self,
        engine: Engine,
        channels: dict[str, Channel] | None = None,
        renderer: Renderer | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.engine = engine
        outbox = OutboxChannel()
        self.channels = {"email": outbox, "sms": outbox, "outbox": outbox, **(channels or {})}
        self.renderer = renderer or Renderer(link_hosts=settings.link_hosts if settings else ())
        self.links = MessageLinks.from_settings(settings)
        self.lease = timedelta(seconds=(settings or Settings()).delivery_deadline) + LEASE_MARGIN
        self._sales_counted_at: float | None = None  # time.monotonic() of this worker's last refresh
        self._sales_lock = threading.Lock()
        self.policies = PolicySource(settings) if settings is not None else None
        self.experiment_checks = Checks()

    @activity.defn(name="load_person")
    def load_person(self, lookup: PersonLookup) -> PersonContext | None:
        """The person as routing sees them at `lookup.at`: a projected history (routing fields only,
        constant size), their journeys' last starts, the carts already recovered, and the policy now
        in force when journeys.toml changed since the hub's version."""
        at = as_utc(lookup.at) if lookup.at is not None else datetime.now().astimezone()
        policy = self.policies.current() if self.policies is not None else None
        with Session(reading(self.engine)) as session:
            person = session.get(Person, lookup.person_id)
            if person is None:
                return None
            runs = session.exec(
                select(col(JourneyRun.route), func.max(col(JourneyRun.started_at)), func.count())
                .where(col(JourneyRun.person_id) == lookup.person_id, col(JourneyRun.route).in_(JOURNEY_NAMES))
                .group_by(col(JourneyRun.route))
            ).all()
            recovered = session.exec(
                select(col(JourneyRun.cart_recovery_key))
                .where(col(JourneyRun.person_id) == lookup.person_id, col(JourneyRun.cart_recovery_key).is_not(None))
                .order_by(col(JourneyRun.cart_recovery_key))
            ).all()
            history = person_history(session, person, at)
            if policy is not None:
                history = project_history(history, policy, at)
            member_of = segments.members(session, [person.id], policy.journey_segments(), at) if policy else {}
            return PersonContext(
                history=history,
                last_started={route: as_utc(started) for route, started, _ in runs},
                journeys_count=sum(count for _, _, count in runs),
                recovered_carts=list(recovered),
                policy=policy if policy is not None and policy.version != lookup.policy_version else None,
                segments=sorted(member_of.get(person.id, set())),
            )

    @activity.defn(name="start_journey")
    def start_journey(self, start: JourneyStart) -> bool:
        """Record the routing decision; False when this cart already had its one recovery. A row under
        the same id is this request retried, or else a bug that would make the journey find another's
        messages as its own: that fails loudly instead of passing as a retry."""
        cart_key = start.cart_id if start.route == "cart_recovery" and start.cart_id else None
        with transaction(self.engine) as session:
            existing = session.get(JourneyRun, start.workflow_id)
            if existing is not None and (existing.route, existing.cart_id, as_utc(existing.started_at)) == (
                start.route,
                start.cart_id,
                as_utc(start.at),
            ):
                return True  # a retried activity: already recorded
            refused = None
            if (
                cart_key
                and session.exec(select(JourneyRun).where(col(JourneyRun.cart_recovery_key) == cart_key)).first()
            ):
                refused = f"cart {cart_key} already had its recovery journey"
            elif start.product_id is not None and (earlier := _notified(session, start)):
                refused = (
                    f"product {start.product_id} already had its {start.route} journey "
                    f"({earlier.workflow_id}, started {as_utc(earlier.started_at).isoformat()}) within the window"
                )
            if refused:
                self._log(session, start.workflow_id, start.person_id, start.route, "skipped", refused, start.at)
                return False
            if existing is not None:
                raise ApplicationError(
                    f"journey id {start.workflow_id} is already taken by a {existing.route} started at "
                    f"{as_utc(existing.started_at).isoformat()}",
                    type="JourneyIdTaken",
                    non_retryable=True,
                )
            is_journey = start.route in ALL_JOURNEYS
            session.add(
                JourneyRun(
                    workflow_id=start.workflow_id,
                    person_id=start.person_id,
                    route=start.route,
                    status="running" if is_journey else "decided",
                    reason=start.reason,
                    cart_id=start.cart_id,
                    cart_value=start.cart_value,
                    cart_recovery_key=cart_key,
                    started_at=start.at,
                    ended_at=None if is_journey else start.at,
                    product_id=start.product_id,
                )
            )
            self._log(session, start.workflow_id, start.person_id, start.route, "decision", start.reason, start.at)
        return True

    @activity.defn(name="check_before_send")
    def check_before_send(self, check: SendCheckInput) -> SendCheck:
        with Session(reading(self.engine)) as session:
            person = session.get(Person, check.person_id)
            if person is None:
                return SendCheck(person_exists=False)
            history = person_history(session, person, datetime.now().astimezone())
            last = session.exec(
                select(func.max(col(Message.sent_at))).where(
                    col(Message.person_id) == person.id, col(Message.status) == "sent"
                )
            ).one()
            # The person first (nothing on any channel), then an address listed as suppressed (survives a delete).
            suppressed = "suppressed" if person.suppressed else suppression.listed(session, person.id, check.channel)
            result = check_send(
                history,
                route=check.route,
                channel=check.channel,
                cart_id=check.cart_id,
                timezone=person.timezone,
                suppressed=suppressed,
                email_unsubscribed=bool(person.email_unsubscribed),
                sms_consent=bool(person.sms_consent),
                reachable=bool(self._recipient(session, person.id, check.channel)),
                last_message_at=as_utc(last),
                since=check.since,
            )
            result.segment = self._segment_rule(session, person.id, check.route)
            if check.product_id is not None:
                rows = session.exec(select(Product).where(col(Product.sku) == check.product_id)).all()
                result.product_stop = product_stop(
                    check.route,
                    [Stock(in_stock=row.in_stock, price=row.price) for row in rows],
                    seen_price(history.events, check.product_id),
                )
            return result

    def _segment_rule(self, session: Session, person_id: str, route: str) -> str | None:
        """The journey's `only_if`/`unless` as journeys.toml says now, judged on the person now:
        why it must end ("left segment vip", "in segment recent_buyers"), or None."""
        policy = self.policies.current() if self.policies is not None else None
        named = policy.route_segments(route) if policy is not None else {}
        if policy is None or not named:
            return None
        member_of = segments.members(session, [person_id], named, datetime.now().astimezone()).get(person_id, set())
        return policy.segment_block(route, member_of, started=True)

    @staticmethod
    def _recipient(session: Session, person_id: str, channel: str) -> str | None:
        identifiers = session.exec(
            select(col(Identifier.kind), col(Identifier.value))
            .where(col(Identifier.person_id) == person_id, col(Identifier.kind).in_(("email", "phone")))
            .order_by(col(Identifier.id))
        ).all()
        emails = [value for kind, value in identifiers if kind == "email"]
        return recipient(channel, emails, [value for kind, value in identifiers if kind == "phone"], person_id)

    @activity.defn(name="send_step")
    def send_step(self, send: SendInput) -> SendResult:
        """Write the message under `{workflow_id}:{step}` before delivering: a retry finds it and never
        delivers a second time. The row is claimed with a lease before delivery, so two attempts of
        one send (a retry after a lost heartbeat, a restarted worker) never deliver at once: the
        second waits for the first's outcome or its lease to run out. Before every delivery attempt
        the journey's guardrails are read again: a send Temporal retries for hours while the relay
        is down must not go out once the shopper has bought, unsubscribed, been suppressed or closed
        their cart."""
        key = f"{send.workflow_id}:{send.step}"
        attempt = Attempt()
        self._count_sales_when_stale()
        with transaction(self.engine) as session:
            message = session.exec(select(Message).where(col(Message.idempotency_key) == key)).first()
            if message is None:
                person = session.get(Person, send.person_id)
                if person is None:  # erased (or merged away) before the first attempt: nothing to write
                    return SendResult(
                        message_id="",
                        status="skipped",
                        ends_journey=True,
                        reason=reason_to_stop(SendCheck(person_exists=False), send.route),
                    )
                inserted = typing.cast(
                    CursorResult[Any],
                    session.execute(
                        insert_ignoring_conflicts(session, table_of(Message)).values(
                            **self._compose(session, person, send, key)
                        )
                    ),
                ).rowcount
                message = session.exec(select(Message).where(col(Message.idempotency_key) == key)).one()
                if inserted and message.status != "pending":  # nothing to show, or a template that cannot render
                    self._log_outcome(session, message)
        if message.status in ("pending", "sending"):
            attempt.refuse_when_shutting_down()
            message = self._claim(message, attempt)
        if message.lease_owner != attempt.token:  # final already, or finished by another attempt meanwhile
            return self._result(message)
        check = self.check_before_send(
            SendCheckInput(
                person_id=send.person_id,
                route=send.route,
                channel=send.channel,
                cart_id=send.cart_id,
                product_id=send.product_id,
                since=send.since,
            )
        )
        if stop := reason_to_stop(check, send.route):
            return self._finish(message, attempt, "skipped", stop).model_copy(update={"ends_journey": True})
        if check.channel_blocked:  # this step's channel no longer reaches them (unsubscribed, consent withdrawn)
            return self._finish(message, attempt, "skipped", check.channel_blocked)
        tries = self._attempt(message)
        with attempt.shielded():
            try:
                attempt.run(lambda: self.channels[message.channel].deliver(message))
            except Exception as exc:
                reason = _without(message.recipient, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
                if getattr(exc, "permanent", False):
                    return self._finish(message, attempt, "failed", reason)
                # Transient: the activity retry policy tries again with backoff, same row, same key.
                # The row says what went wrong meanwhile, so a stuck send is visible in /admin/messages.
                self._release(message, attempt, f"attempt {tries} failed, retrying: {reason}")
                raise
            return self._finish(message, attempt, "sent", None, sent_at=attempt.now())

    def _claim(self, message: Message, attempt: Attempt) -> Message:
        """The message row with this attempt's lease on it (`sending`), waiting (heartbeating) while
        another attempt's lease is live; or the row as another attempt finished it."""
        while True:
            now = utcnow()
            with transaction(self.engine) as session:
                session.execute(
                    update(Message)
                    .where(col(Message.id) == message.id, _claimable(now))
                    .values(status="sending", lease_owner=attempt.token, lease_until=now + self.lease)
                )
                row = session.exec(select(Message).where(col(Message.id) == message.id)).one()
            if row.status != "sending" or row.lease_owner == attempt.token:
                return row
            attempt.pause(LEASE_POLL)

    def _count_sales_when_stale(self) -> None:
        """Bestseller counts at most SALES_REFRESH old, counted by one send of this worker at a time
        (not by every message: on a shop with 30 000 orders a quarter the count takes half a second)."""
        with self._sales_lock:
            counted = self._sales_counted_at
            if counted is None or time.monotonic() - counted > SALES_REFRESH.total_seconds():
                refresh_recent_orders(self.engine, utcnow())
                self._sales_counted_at = time.monotonic()

    def _attempt(self, message: Message) -> int:
        with transaction(self.engine) as session:
            session.execute(
                update(Message).where(col(Message.id) == message.id).values(attempts=col(Message.attempts) + 1)
            )
            return session.exec(select(col(Message.attempts)).where(col(Message.id) == message.id)).one()

    def _release(self, message: Message, attempt: Attempt, reason: str) -> None:
        """Give the lease back after a transient failure (the retry may claim at once), noting why."""
        try:
            with transaction(self.engine) as session:
                session.execute(
                    update(Message)
                    .where(
                        col(Message.id) == message.id,
                        col(Message.lease_owner) == attempt.token,
                        col(Message.status) == "sending",
                    )
                    .values(status="pending", lease_owner=None, lease_until=None, reason=reason[:2000])
                )
        except Exception:  # the store being down too must not hide the delivery error
            log.exception("could not record the delivery error of %s", message.idempotency_key)

    def _compose(self, session: Session, person: Person, send: SendInput, key: str) -> dict:
        """The message row: rendered and `pending`; or already final when it must not go out —
        `skipped` when the step has nothing to show, `failed` when its template cannot render
        (rendering again cannot help, so it is not left for Temporal to retry forever)."""
        history = person_history(session, person, send.at)
        cart = step_cart(history, send.cart_id) if send.route == "cart_recovery" else None
        catalog = load_catalog(session, history.events, cart)
        shown = personalise(send.route, history.events, catalog, cart, product_id=send.product_id)
        message_id = str(uuid.uuid4())
        links = self.links
        unsubscribe = unsubscribe_url(
            links.public_base_url,
            links.unsubscribe_key,
            person.id,
            "sms" if send.channel == "sms" else "email",
            message_id,
        )
        traits = person.traits or {}
        first_name = traits.get("first_name") or traits.get("firstName")
        reason = nothing_to_show(send.route, shown, history.events)
        status = "skipped" if reason else "pending"
        variant = self._variant(session, send)
        template = variant.template if variant else send.template or ""
        try:
            rendered = self.renderer.render(
                template,
                send.channel,
                {
                    "first_name": first_name.strip() if isinstance(first_name, str) and first_name.strip() else None,
                    "journey": send.route,
                    "step": send.step,
                    "items": [item.model_dump() for item in shown.items],
                    "cart_value": shown.cart_value,
                    "category": shown.category,
                    "picks": [item.model_dump() for item in shown.picks],
                    "currency": _currency(history.events, links.currency),
                    "resume_url": _resume_url(history.events, cart, links.shop_url, self.renderer.link_hosts),
                    "unsubscribe_url": unsubscribe,
                    "shop": {"name": links.shop_name, "url": links.shop_url, "address": links.shop_address},
                },
                subject=variant.subject if variant else None,
            )
        except (TemplateProblem, TemplateError) as exc:
            status, reason = "failed", f"template error: {describe(exc, template, send.channel)}"
            log.error("message %s not sent: %s", key, reason)
            rendered = Rendered(subject="", text="")
        return dict(
            id=message_id,
            person_id=send.person_id,
            workflow_id=send.workflow_id,
            journey=send.route,
            step=send.step,
            template=template,
            variant=variant.label if variant else None,
            channel=send.channel,
            recipient=self._recipient(session, send.person_id, send.channel) or "",
            subject=rendered.subject,
            body=rendered.text,
            html=rendered.html,
            unsubscribe_url=unsubscribe,
            items=[item.model_dump() for item in shown.items],
            status=status,
            reason=reason,
            idempotency_key=key,
            cart_id=send.cart_id,
            created_at=send.at,
        )

    def _variant(self, session: Session, send: SendInput) -> Variant | None:
        """The experiment variant of this send (store/experiments.py), None for a plain step."""
        if not send.variants:
            return None
        window = (self.policies.current() if self.policies else Policy()).attribution_window
        return variant_for(
            session.connection(),
            send.person_id,
            send.route,
            send.step,
            send.variants,
            send.auto_winner,
            window,
            send.at,
            compute=send.auto_winner is not None and self.experiment_checks.due(send.route, send.step),
        )

    def _finish(
        self, message: Message, attempt: Attempt, status: str, reason: str | None, sent_at: datetime | None = None
    ) -> SendResult:
        """Move the message this attempt holds to its final status (sent, failed, skipped) and log it
        once, for whoever owns the message now (a merge during delivery re-points it; a delete
        removes it)."""
        with transaction(self.engine) as session:
            owner = session.execute(
                update(Message)
                .where(
                    col(Message.id) == message.id,
                    col(Message.status) == "sending",
                    col(Message.lease_owner) == attempt.token,
                )
                .values(status=status, reason=reason, sent_at=sent_at, lease_until=None)
                .returning(col(Message.person_id))
            ).scalar_one_or_none()
            message.status, message.reason, message.sent_at = status, reason, sent_at
            if owner is not None:
                message.person_id = owner
                self._log_outcome(session, message)
        return self._result(message)

    def _log_outcome(self, session: Session, message: Message) -> None:
        """The journey log line of a message's final status (kind `sent`, `failed` or `skipped`)."""
        self._log(
            session,
            message.workflow_id,
            message.person_id,
            message.journey,
            message.status,
            message.reason or message.subject,
            message.sent_at or message.created_at,
            step=message.step,
            message_id=message.id,
            note_key=f"{message.idempotency_key}:{message.status}",
        )

    @staticmethod
    def _result(message: Message) -> SendResult:
        return SendResult(
            message_id=message.id,
            status=message.status,
            reason=_without(message.recipient, message.reason),
            variant=message.variant,
        )

    @activity.defn(name="record_journey_note")
    def record_journey_note(self, note: JourneyNote) -> None:
        """The line goes to whoever owns the journey's run now: a merge re-points runs to the
        surviving person, a delete removes them — and then nothing of the person is written back."""
        with transaction(self.engine) as session:
            run = session.get(JourneyRun, note.workflow_id)
            if run is None:
                return
            self._log(
                session,
                note.workflow_id,
                run.person_id,
                note.journey,
                note.kind,
                note.reason,
                note.at,
                step=note.step,
                until=note.until,
                message_id=note.message_id,
                note_key=_call_key(),
            )
            if note.kind == "failed" and note.step is not None:
                # The journey gave up on this step (its send's retries ran out): the row says so too,
                # unless an attempt still holds a live lease on it.
                session.execute(
                    update(Message)
                    .where(
                        col(Message.idempotency_key) == f"{note.workflow_id}:{note.step}",
                        _claimable(utcnow()),
                    )
                    .values(status="failed", reason=note.reason, lease_owner=None, lease_until=None)
                )
            if note.final_status:
                session.execute(
                    update(JourneyRun)
                    .where(col(JourneyRun.workflow_id) == note.workflow_id)
                    .values(status=note.final_status, ended_at=note.at, reason=note.reason)
                )

    @activity.defn(name="record_conversion")
    def record_conversion(self, conversion: Conversion) -> None:
        """Last-touch attribution: the order goes to the last message sent inside the window before it."""
        ordered_at = conversion.ordered_at or conversion.at
        with transaction(self.engine) as session:
            candidates = session.exec(
                select(Message).where(
                    col(Message.person_id) == conversion.person_id,
                    col(Message.status) == "sent",
                    col(Message.sent_at) <= ordered_at,
                    col(Message.sent_at) >= ordered_at - conversion.attribution_window,
                )
            ).all()
            attribution = credit(
                Order(
                    order_key=conversion.order_id or "",
                    person_id=conversion.person_id,
                    ordered_at=ordered_at,
                    revenue=conversion.revenue,
                ),
                [
                    Touch(message_id=m.id, person_id=m.person_id, journey=m.journey, step=m.step, sent_at=m.sent_at)
                    for m in candidates
                    if m.sent_at is not None
                ],
                conversion.attribution_window,
            )  # the reports' rule, so the log and the reports credit the same message
            message = next((m for m in candidates if attribution.touch and m.id == attribution.touch.message_id), None)
            reason = attribution.note
            self._log(
                session,
                message.workflow_id if message else conversion.hub_id,
                conversion.person_id,
                message.journey if message else "none",
                "conversion",
                reason,
                ordered_at,
                message_id=message.id if message else None,
                note_key=_call_key(),
            )

    @staticmethod
    def _log(
        session: Session, workflow_id: str, person_id: str, journey: str, kind: str, reason: str, at: datetime, **extra
    ) -> None:
        """One journal line; a line with a `note_key` already written (a retried write) is not repeated."""
        session.execute(
            insert_ignoring_conflicts(session, table_of(JourneyLog)).values(
                workflow_id=workflow_id, person_id=person_id, journey=journey, kind=kind, reason=reason, at=at, **extra
            )
        )


def _notified(session: Session, start: JourneyStart) -> JourneyRun | None:
    """The person's journey of this kind about this product that started within the window, if any."""
    since = as_utc(start.at) - (start.window or CATALOGUE_WINDOW)
    return session.exec(
        select(JourneyRun)
        .where(
            col(JourneyRun.person_id) == start.person_id,
            col(JourneyRun.route) == start.route,
            col(JourneyRun.product_id) == start.product_id,
            col(JourneyRun.started_at) > since,
        )
        .order_by(col(JourneyRun.started_at).desc())
    ).first()


def _claimable(now: datetime):
    """A message no attempt is delivering: still pending, or `sending` under a lease that ran out."""
    return or_(col(Message.status) == "pending", and_(col(Message.status) == "sending", col(Message.lease_until) < now))


def _call_key() -> str | None:
    """What every retry of this activity call shares and no other call has: the workflow run and the
    activity's id in it. None outside Temporal (a direct call is written as it comes)."""
    if not activity.in_activity():
        return None
    info = activity.info()
    return f"{info.workflow_run_id}:{info.activity_id}"


def _without(recipient: str, reason: str | None) -> str | None:
    """A delivery reason as it may leave the store: a relay that echoes the address (`550 <ann@…>:
    no such user`) does not put it into Temporal's history."""
    if not reason or not recipient:
        return reason
    return reason.replace(recipient, "<recipient>")
