"""What each Shopify webhook topic means to the store, in Shopify's REST webhook shapes.

Entry point (stable; the Admin GraphQL backfill converts its nodes to these shapes and calls it too):

    apply_topic(engine, settings, policy, topic: str, payload: dict, shop_domain: str, *, backfill=False)
        -> TopicOutcome

Synchronous; does everything a webhook of that topic does except the signature and webhook-id
handling (api/shopify.py); idempotent — applying the same checkout/order/customer/product state twice
stores it once (message ids are derived from Shopify's ids and `updated_at`). Raises `UnusableWebhook`
for a payload missing what the topic needs (say, a checkout without `token`).

Conventions the other Shopify parts share:
- Catalogue key: `sku` = the product's numeric id, `variant` = the variant's numeric id (both strings;
  `gid://shopify/Product/123` counts as `123`, see `shopify_id`). The variant's own SKU is kept as
  `product_sku` in event lines.
- Carts: `cart_id` = `cart_token`, else the checkout `token`. A device's anonymous id comes from the
  `_breadcrumb_anonymous_id` note attribute, else from a stored event of this device whose `cart_id`
  is the cart token or the checkout token (the web pixel sends its checkout events with
  `cart_id` = the checkout token).
- Server-sourced (`source` "server") and trusted: consent changes come from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from journeys import taxonomy
from journeys.policy import Policy
from store import catalog
from store.catalogue_triggers import watching
from store.db import reading, transaction
from store.identity import (
    InvalidIdentifier,
    delete_person,
    lock_up_front,
    normalise_email,
    normalise_phone,
    owner,
    retry_moved_locks,
)
from store.ingest import Guards, Incoming, ingest
from store.models import Event, Product, ShopifyVariant, utcnow
from store.settings import Settings

log = logging.getLogger("breadcrumb.shopify")

ANONYMOUS_ID_ATTRIBUTE = "_breadcrumb_anonymous_id"
API = "shopify"


class UnusableWebhook(ValueError):
    """A verified webhook whose payload lacks what its topic needs; the reason names the field."""


@dataclass
class TopicOutcome:
    topic: str
    handled: bool  # False: a topic Breadcrumb does not map (acknowledged, nothing stored)
    stored: int = 0  # events stored (0 for a repeat)
    person_id: str | None = None
    note: str = ""  # what happened, for the merchant (shown in GET /admin/shopify/webhooks)
    signals: int = 0  # hub signals queued (the caller nudges the dispatcher)


@dataclass
class _Call:
    engine: Engine
    settings: Settings
    policy: Policy
    topic: str
    shop_domain: str
    wake_hubs: bool = True  # False for the backfill: the past is stored, no journey is started for it
    received_at: datetime = field(default_factory=utcnow)

    @property
    def triggers(self) -> Policy | None:
        """The policy catalogue triggers start journeys under; None for a backfill (the past starts none)."""
        return self.policy if self.wake_hubs else None

    def ingest(self, messages: list[Incoming]) -> TopicOutcome:
        result = ingest(
            self.engine,
            messages,
            self.policy,
            api=API,
            endpoint=f"shopify {self.topic}",
            phone_region=self.settings.default_phone_region,
            guards=Guards.from_settings(self.settings),
            wake_hubs=self.wake_hubs,
        )
        person = next(iter(result.people.values()), None) or self.person_of(messages)
        return TopicOutcome(self.topic, True, stored=len(result.stored), person_id=person, signals=result.signals)

    def person_of(self, messages: list[Incoming]) -> str | None:
        with Session(reading(self.engine)) as session:
            return session.exec(
                select(Event.person_id).where(
                    col(Event.message_id).in_([m.message_id for m in messages]), col(Event.person_id).is_not(None)
                )
            ).first()


# --- reading Shopify's shapes --------------------------------------------------------------------


def shopify_id(value: object) -> str | None:
    """Shopify's numeric id as a string: `123`, `"123"` and `"gid://shopify/Product/123"` give `"123"`."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    text = str(value).strip()
    return text.rsplit("/", 1)[-1] or None


def money(value: object) -> float | None:
    """Shopify sends amounts as decimal strings ("19.99"); parsed exactly, then kept as a number."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return float(amount) if amount.is_finite() else None


def moment(value: object, default: datetime) -> datetime:
    """An ISO-8601 time with its offset ("2026-12-04T11:00:00-05:00"), in UTC; `default` when absent."""
    if not isinstance(value, str) or not value:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return default
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text[:255] or None


def anonymous_id_of(payload: dict) -> str | None:
    """The device's anonymous id that breadcrumb.js wrote into the cart attributes."""
    for attribute in payload.get("note_attributes") or ():
        if isinstance(attribute, dict) and attribute.get("name") == ANONYMOUS_ID_ATTRIBUTE:
            return _text(attribute.get("value"))
    return None


def _email(value: object) -> str | None:
    try:
        return normalise_email(value) if value else None
    except InvalidIdentifier:
        return None


def lines(payload: dict) -> list[dict]:
    """`line_items` as event product lines (catalogue keys, prices as numbers)."""
    products = []
    for line in payload.get("line_items") or ():
        if not isinstance(line, dict):
            continue
        product = {
            "sku": shopify_id(line.get("product_id")),
            "variant": shopify_id(line.get("variant_id")),
            "product_sku": _text(line.get("sku")),
            "name": _text(line.get("title")),
            "variant_title": _text(line.get("variant_title")),
            "price": money(line.get("price")),
            "quantity": line.get("quantity") if isinstance(line.get("quantity"), int) else 1,
        }
        products.append({k: v for k, v in product.items() if v is not None})
    return products


def _object(payload: dict, key: str) -> dict:
    """`payload[key]` when it is a JSON object, else an empty one (Shopify sends null for a guest)."""
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def _customer_id(payload: dict) -> str | None:
    customer = payload.get("customer")
    return shopify_id(customer.get("id")) if isinstance(customer, dict) else None


def _contact(payload: dict) -> dict:
    """Email and phone of a checkout or order (its own, else its customer's)."""
    customer = _object(payload, "customer")
    contact = {
        "email": payload.get("email") or customer.get("email"),
        "phone": payload.get("phone") or customer.get("phone"),
    }
    return {k: v for k, v in contact.items() if isinstance(v, str) and v.strip()}


def _device_of_cart(engine: Engine, cart_keys: Iterable[str]) -> str | None:
    """The anonymous id of the device that last sent an event for this cart or checkout."""
    keys = [key for key in cart_keys if key]
    if not keys:
        return None
    with Session(reading(engine)) as session:
        return session.exec(
            select(Event.anonymous_id)
            .where(col(Event.cart_id).in_(keys), col(Event.anonymous_id).is_not(None))
            .order_by(col(Event.timestamp).desc())
            .limit(1)
        ).first()


def _order_event_of_cart(engine: Engine, cart_id: str) -> str | None:
    """The message id of a stored Shopify order for this cart, if one came first."""
    with Session(reading(engine)) as session:
        return session.exec(
            select(Event.message_id).where(
                Event.cart_id == cart_id,
                Event.name == taxonomy.ORDER_COMPLETED,
                Event.source == "server",
                col(Event.message_id).like("shopify:order:%"),
            )
        ).first()


def _incoming(call: _Call, kind: str, name: str, message_id: str, at: datetime, properties: dict, **ids) -> Incoming:
    return Incoming(
        type=kind,
        original_name=name,
        message_id=message_id,
        timestamp=at,
        received_at=call.received_at,
        properties=properties,
        context={"integration": {"name": "shopify", "shop": call.shop_domain}},
        source="server",
        trusted=True,
        **ids,
    )


# --- checkouts -----------------------------------------------------------------------------------


def _checkout(call: _Call, payload: dict) -> TopicOutcome:
    """Checkout Started (an identify moment with email/phone), or, for a checkout already paid for,
    only what it says about the person: a completed checkout closes its cart with an Order Completed
    (until the order itself arrives), and a checkout whose order came first opens nothing."""
    token = _text(payload.get("token"))
    if not token:
        raise UnusableWebhook(f"{call.topic}: the checkout has no token")
    cart_id = _text(payload.get("cart_token")) or token
    at = moment(payload.get("updated_at") or payload.get("created_at"), call.received_at)
    contact = _contact(payload)
    ids = {
        "user_id": _customer_id(payload),
        "anonymous_id": anonymous_id_of(payload) or _device_of_cart(call.engine, {cart_id, token}),
    }
    consent = {"unsubscribed": False} if payload.get("buyer_accepts_marketing") is True else {}
    properties = {
        "cart_id": cart_id,
        "checkout_token": token,
        "value": money(payload.get("total_price")),
        "subtotal": money(payload.get("subtotal_price")),
        "currency": _text(payload.get("currency")),
        "products": lines(payload),
        "checkout_url": _text_url(payload.get("abandoned_checkout_url")),
        "accepts_marketing": payload.get("buyer_accepts_marketing"),
        **contact,
        **consent,
    }
    properties = {k: v for k, v in properties.items() if v is not None}
    stamp = at.isoformat()
    order_first = _order_event_of_cart(call.engine, cart_id)
    messages = []
    if order_first or payload.get("completed_at"):
        if contact:
            traits = {**contact, **consent, "accepts_marketing": payload.get("buyer_accepts_marketing")}
            messages.append(
                _incoming(
                    call,
                    "identify",
                    taxonomy.IDENTIFY,
                    f"shopify:checkout:{token}:{stamp}:identify",
                    at,
                    {k: v for k, v in traits.items() if v is not None},
                    **ids,
                )
            )
        if not order_first:
            completed = moment(payload.get("completed_at"), at)
            messages.append(
                _incoming(
                    call,
                    "track",
                    taxonomy.ORDER_COMPLETED,
                    f"shopify:checkout:{token}:completed",
                    completed,
                    {**properties, "checkout_completed": True},
                    email=_email(contact.get("email")),
                    **ids,
                )
            )
    else:
        messages.append(
            _incoming(
                call, "track", taxonomy.CHECKOUT_STARTED, f"shopify:checkout:{token}:{stamp}", at, properties, **ids
            )
        )
    if not messages:
        return TopicOutcome(call.topic, True, note="checkout already ordered, no contact details: nothing to store")
    return call.ingest(messages)


def _text_url(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


# --- orders --------------------------------------------------------------------------------------


def _order_message(call: _Call, payload: dict) -> Incoming:
    order_id = shopify_id(payload.get("id"))
    if not order_id:
        raise UnusableWebhook(f"{call.topic}: the order has no id")
    checkout_token = _text(payload.get("checkout_token"))
    contact = _contact(payload)
    properties = {
        "order_id": order_id,
        "order_name": _text(payload.get("name")),
        "cart_id": _text(payload.get("cart_token")) or checkout_token,
        "checkout_token": checkout_token,
        "value": money(payload.get("total_price")),
        "subtotal": money(payload.get("subtotal_price")),
        "currency": _text(payload.get("currency")),
        "financial_status": _text(payload.get("financial_status")),
        "products": lines(payload),
        **contact,
    }
    properties = {k: v for k, v in properties.items() if v is not None}
    at = moment(payload.get("processed_at") or payload.get("created_at"), call.received_at)
    anonymous_id = anonymous_id_of(payload) or _device_of_cart(
        call.engine, {key for key in (properties.get("cart_id"), checkout_token) if key}
    )
    return _incoming(
        call,
        "track",
        taxonomy.ORDER_COMPLETED,
        f"shopify:order:{order_id}",
        at,
        properties,
        user_id=_customer_id(payload),
        email=_email(contact.get("email")),
        anonymous_id=anonymous_id,
    )


def _order(call: _Call, payload: dict) -> TopicOutcome:
    """Order Completed, once per order (orders/create and orders/paid share the message id). A
    completed checkout stored for the same checkout becomes this order's other copy, so reports
    count the order once, with its id."""
    message = _order_message(call, payload)
    outcome = call.ingest([message])
    checkout_token = message.properties.get("checkout_token")
    if checkout_token:
        with transaction(call.engine) as session:
            session.execute(
                update(Event)
                .where(
                    col(Event.message_id) == f"shopify:checkout:{checkout_token}:completed",
                    col(Event.duplicate_of).is_(None),
                )
                .values(duplicate_of=message.message_id)
            )
    return outcome


def _order_cancelled(call: _Call, payload: dict) -> TopicOutcome:
    """The order (stored if we had not seen it) and an `Order Cancelled` event naming it."""
    order = _order_message(call, payload)
    at = moment(payload.get("cancelled_at"), call.received_at)
    cancelled = _incoming(
        call,
        "track",
        taxonomy.ORDER_CANCELLED,
        f"{order.message_id}:cancelled",
        at,
        {
            "order_id": order.properties["order_id"],
            "value": order.properties.get("value"),
            "currency": order.properties.get("currency"),
            "reason": _text(payload.get("cancel_reason")),
        },
        user_id=order.user_id,
        email=order.email,
        anonymous_id=order.anonymous_id,
    )
    return call.ingest([order, cancelled])


# --- customers -----------------------------------------------------------------------------------

# Shopify's consent states → ours. Email: only an explicit unsubscribe stops mail, a subscription
# lifts it; "not_subscribed" (never asked) leaves it as it is. SMS: only "subscribed" is consent.
EMAIL_UNSUBSCRIBED = {"subscribed": False, "unsubscribed": True, "redacted": True}
SMS_STATES = ("subscribed", "not_subscribed", "unsubscribed", "redacted")


def consent_traits(customer: dict) -> dict:
    """`email_marketing_consent` / `sms_marketing_consent` objects as our consent traits."""
    traits = {}
    email = customer.get("email_marketing_consent")
    if isinstance(email, dict) and email.get("state") in EMAIL_UNSUBSCRIBED:
        traits["unsubscribed"] = EMAIL_UNSUBSCRIBED[email["state"]]
    sms = customer.get("sms_marketing_consent")
    if isinstance(sms, dict) and sms.get("state") in SMS_STATES:
        traits["sms_consent"] = sms["state"] == "subscribed"
    return traits


CUSTOMER_TRAITS = ("first_name", "last_name", "state", "tags", "verified_email", "currency", "orders_count", "note")


def _customer(call: _Call, payload: dict) -> TopicOutcome:
    customer_id = shopify_id(payload.get("id"))
    if not customer_id:
        raise UnusableWebhook(f"{call.topic}: the customer has no id")
    traits = {key: payload[key] for key in CUSTOMER_TRAITS if payload.get(key) not in (None, "")}
    traits.update(_contact(payload))
    traits.update(consent_traits(payload))
    for key in ("email_marketing_consent", "sms_marketing_consent"):
        if isinstance(payload.get(key), dict):
            traits[f"shopify_{key}"] = payload[key].get("state")
    at = moment(payload.get("updated_at") or payload.get("created_at"), call.received_at)
    message = _incoming(
        call,
        "identify",
        taxonomy.IDENTIFY,
        f"shopify:customer:{customer_id}:{at.isoformat()}",
        at,
        traits,
        user_id=customer_id,
    )
    return call.ingest([message])


# --- catalogue -----------------------------------------------------------------------------------


def _variant_in_stock(variant: dict, levels: dict | None) -> bool:
    """Sellable: untracked, or sold when out of stock, or units left (the locations' levels when
    inventory webhooks sent them, else the variant's own count)."""
    if variant.get("inventory_management") in (None, "") or variant.get("inventory_policy") == "continue":
        return True
    if levels:
        return sum(v for v in levels.values() if isinstance(v, int)) > 0
    quantity = variant.get("inventory_quantity")
    return isinstance(quantity, int) and quantity > 0


def _image_of(product: dict, variant: dict) -> str | None:
    images = [i for i in product.get("images") or () if isinstance(i, dict)]
    for image in images:
        if variant.get("image_id") is not None and image.get("id") == variant.get("image_id"):
            return _absolute(image.get("src"))
    main = _object(product, "image") or (images[0] if images else {})
    return _absolute(main.get("src"))


def _absolute(src: object) -> str | None:
    """An image link mail clients can load: Shopify's CDN links, protocol-relative ones made https."""
    src = _text_url(src)
    if src and src.startswith("//"):
        src = "https:" + src
    return src if src and src.lower().startswith(("https://", "http://")) else None


def _product(call: _Call, payload: dict) -> TopicOutcome:
    """Every variant becomes a catalogue row owned by the shop; variants it no longer lists, and a
    product that is not active, are out of stock."""
    product_id = shopify_id(payload.get("id"))
    if not product_id:
        raise UnusableWebhook(f"{call.topic}: the product has no id")
    handle = _text(payload.get("handle"))
    active = payload.get("status", "active") == "active"
    variants = [v for v in payload.get("variants") or () if isinstance(v, dict) and shopify_id(v.get("id"))]
    title = _text(payload.get("title")) or ""
    with transaction(call.engine) as session:
        items = []
        for variant in variants:
            inventory_item = shopify_id(variant.get("inventory_item_id"))
            levels = _track_variant(session, inventory_item, product_id, variant) if inventory_item else None
            name = title if variant.get("title") in (None, "", "Default Title") else f"{title} – {variant['title']}"
            fields = {
                "sku": product_id,
                "variant": shopify_id(variant["id"]),
                "name": name[: catalog.LIMITS["name"]] or None,
                "category": _text(payload.get("product_type")),
                "price": money(variant.get("price")),
                "image_url": _image_of(payload, variant),
                "url": f"https://{call.shop_domain}/products/{handle}" if handle and call.shop_domain else None,
                "in_stock": active and _variant_in_stock(variant, levels),
            }
            try:
                item = catalog.CatalogItem.model_validate({k: v for k, v in fields.items() if v is not None})
            except ValidationError as exc:
                raise UnusableWebhook(f"{call.topic}: variant {fields['variant']}: {exc.errors()[0]['msg']}") from None
            items.append((item, set(item.model_fields_set)))
        with watching(session, [product_id], call.triggers):
            if items:
                catalog.upsert_admin(session, items)
            _out_of_stock(session, product_id, keep=[item.variant for item, _ in items])
    return TopicOutcome(call.topic, True, note=f"product {product_id}: {len(items)} variants")


def _track_variant(session: Session, inventory_item: str, product_id: str, variant: dict) -> dict | None:
    """Remember which variant an inventory item is (inventory webhooks name only the item); returns
    the per-location levels already known for it."""
    row = session.get(ShopifyVariant, inventory_item)
    if row is None:
        row = ShopifyVariant(inventory_item_id=inventory_item, levels={})
    row.product_id, row.variant_id = product_id, shopify_id(variant["id"])
    row.tracked = variant.get("inventory_management") not in (None, "")
    row.sell_when_out = variant.get("inventory_policy") == "continue"
    row.updated_at = utcnow()
    session.add(row)
    return row.levels or None


def _out_of_stock(session: Session, product_id: str, keep: Sequence[str | None] = ()) -> None:
    query = update(Product).where(col(Product.sku) == product_id)
    if keep:
        query = query.where(col(Product.variant).not_in([k for k in keep if k]))
    session.execute(query.values(in_stock=False, updated_at=utcnow()))


def _product_deleted(call: _Call, payload: dict) -> TopicOutcome:
    product_id = shopify_id(payload.get("id"))
    if not product_id:
        raise UnusableWebhook(f"{call.topic}: the product has no id")
    with transaction(call.engine) as session:
        _out_of_stock(session, product_id)
    return TopicOutcome(call.topic, True, note=f"product {product_id} deleted: out of stock")


def _inventory_level(call: _Call, payload: dict) -> TopicOutcome:
    """One location's count of an inventory item; the variant is in stock while any location has units."""
    inventory_item, location = shopify_id(payload.get("inventory_item_id")), shopify_id(payload.get("location_id"))
    available = payload.get("available")
    if not inventory_item or not location:
        raise UnusableWebhook(f"{call.topic}: inventory_item_id and location_id are required")
    with transaction(call.engine) as session:
        row = session.get(ShopifyVariant, inventory_item, with_for_update=True)
        if row is None:  # the product webhook has not come yet: keep the level for it
            row = ShopifyVariant(inventory_item_id=inventory_item, levels={})
        row.levels = {**(row.levels or {}), location: available if isinstance(available, int) else 0}
        row.updated_at = utcnow()
        session.add(row)
        if row.product_id is None or not row.tracked or row.sell_when_out:
            return TopicOutcome(call.topic, True, note=f"inventory item {inventory_item}: level kept")
        in_stock = sum(row.levels.values()) > 0
        with watching(session, [row.product_id], call.triggers):
            session.execute(
                update(Product)
                .where(col(Product.sku) == row.product_id, col(Product.variant) == row.variant_id)
                .values(in_stock=in_stock, updated_at=utcnow())
            )
    return TopicOutcome(call.topic, True, note=f"variant {row.variant_id}: {'in' if in_stock else 'out of'} stock")


# --- privacy (mandatory compliance topics) --------------------------------------------------------


def _phone(value: object, region: str) -> str | None:
    try:
        return normalise_phone(value, region) if value else None
    except InvalidIdentifier:
        return None


def _person_named(session: Session, customer: dict, phone_region: str) -> str | None:
    """The person a compliance webhook's `customer` names, by Shopify id, email or phone."""
    named = [
        ("user_id", shopify_id(customer.get("id"))),
        ("email", _email(customer.get("email"))),
        ("phone", _phone(customer.get("phone"), phone_region)),
    ]
    keys = [(kind, value) for kind, value in named if value]
    lock_up_front(session, keys)
    return next((found for found in (owner(session, kind, value) for kind, value in keys) if found), None)


def _redact_customer(call: _Call, payload: dict) -> TopicOutcome:
    """Delete the person and everything we hold on them (suppressions stay, as hashes)."""
    customer = _object(payload, "customer")

    def remove() -> str | None:
        with transaction(call.engine) as session:
            person_id = _person_named(session, customer, call.settings.default_phone_region)
            if person_id:
                delete_person(session, person_id)
            return person_id

    person_id = retry_moved_locks(remove)
    log.info(
        "shopify customers/redact for customer %s: %s",
        shopify_id(customer.get("id")),
        f"person {person_id} deleted" if person_id else "nobody held",
    )
    return TopicOutcome(
        call.topic,
        True,
        person_id=person_id,
        signals=1 if person_id else 0,
        note=f"person {person_id} deleted" if person_id else "no such person held",
    )


def _data_request(call: _Call, payload: dict) -> TopicOutcome:
    """The merchant owes the customer their data: say where the export is."""
    customer = _object(payload, "customer")
    with transaction(call.engine) as session:
        person_id = _person_named(session, customer, call.settings.default_phone_region)
    note = (
        f"export ready: GET /admin/people/{person_id}/export" if person_id else "no such person held: nothing to export"
    )
    log.info(
        "shopify customers/data_request %s for customer %s: %s",
        (payload.get("data_request") or {}).get("id"),
        shopify_id(customer.get("id")),
        note,
    )
    return TopicOutcome(call.topic, True, person_id=person_id, note=note)


def _shop_redact(call: _Call, payload: dict) -> TopicOutcome:
    note = f"shop {payload.get('shop_domain') or call.shop_domain} asked to be redacted; acknowledged"
    log.info("shopify shop/redact: %s", note)
    return TopicOutcome(call.topic, True, note=note)


HANDLERS: dict[str, Callable[[_Call, dict], TopicOutcome]] = {
    "checkouts/create": _checkout,
    "checkouts/update": _checkout,
    "orders/create": _order,
    "orders/paid": _order,
    "orders/cancelled": _order_cancelled,
    "customers/create": _customer,
    "customers/update": _customer,
    "products/create": _product,
    "products/update": _product,
    "products/delete": _product_deleted,
    "inventory_levels/update": _inventory_level,
    "customers/data_request": _data_request,
    "customers/redact": _redact_customer,
    "shop/redact": _shop_redact,
}


def apply_topic(
    engine: Engine,
    settings: Settings,
    policy: Policy,
    topic: str,
    payload: dict,
    shop_domain: str,
    *,
    backfill: bool = False,
) -> TopicOutcome:
    """Apply one webhook's payload to the store (see the module docstring). A `backfill` (the Admin
    API import of the shop's past) stores the same things but wakes no hub: importing a customer
    list must not start a welcome series for everyone on it."""
    handler = HANDLERS.get(topic)
    if handler is None:
        return TopicOutcome(topic, False, note="topic not mapped: acknowledged, nothing stored")
    if not isinstance(payload, dict):
        raise UnusableWebhook(f"{topic}: the body is not a JSON object")
    return handler(_Call(engine, settings, policy, topic, shop_domain, wake_hubs=not backfill), payload)
