"""The product catalog: fed from the storefront's own events and owned by the shop's admin feed.

- Ingest: every `Product Viewed` / `Added to Cart` in a request becomes at most one row per
  (sku, variant), written with **one** INSERT … ON CONFLICT DO UPDATE per request (none when the
  request saw no products). Newer events refresh name, price, image and link of event-fed rows; an
  older event arriving late only fills gaps. Events never change stock, and never overwrite what
  the admin feed set (they only fill its empty fields). Ingest has already taken out links and
  images on hosts that are not the shop's (journeys/links.py, store/ingest.Guards), so a foreign
  link never lands here; an event counts as seen no later than it arrived, so "newest" cannot be
  pinned by a clock set ahead.
- Admin: `PUT /admin/catalog` upserts a batch; fields an item leaves out keep their value, so an
  inventory sync can send just `{"sku", "variant", "in_stock"}`. A product it brings back in stock
  or makes cheaper starts catalogue journeys (store/catalogue_triggers.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import case, func, or_, tuple_
from sqlmodel import Session, col, select

from journeys import taxonomy
from journeys.taxonomy import product_key
from journeys.policy import Policy
from store.catalogue_triggers import watching
from store.dialect import dialect_name, insert_for, json_rows, json_rows_insert
from store.models import Product, iso, table_of, utcnow

FEED_EVENTS = (taxonomy.PRODUCT_VIEWED, taxonomy.ADDED_TO_CART)
DESCRIPTIVE = ("name", "category", "price", "currency", "image_url", "url")
LIMITS = {"sku": 255, "variant": 255, "name": 512, "category": 255, "image_url": 2048, "url": 2048}
CHUNK = 1000  # rows per statement (SQLite caps bound parameters); a request rarely has this many products
MAX_ADMIN_ITEMS = 10_000


def _text(value: object, limit: int) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _price(value: object) -> float | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        price = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return round(price, 4) if math.isfinite(price) and price >= 0 else None


def _currency(value: object) -> str | None:
    text = _text(value, 8)
    return text.upper() if text and len(text) == 3 and text.isalpha() else None


def rows_from_events(messages: Iterable) -> list[dict]:
    """One row per (sku, variant) the messages describe; the newest event's values win, older
    ones fill what it left out. `messages` are ingest `Incoming`s (anything with type, name,
    properties, timestamp and received_at)."""
    rows: dict[tuple[str, str], dict] = {}
    for m in sorted((m for m in messages if m.type == "track" and m.name in FEED_EVENTS), key=lambda m: m.timestamp):
        props = m.properties or {}
        sku = product_key(props)
        if sku is None:
            continue
        row = {
            "sku": sku,
            "variant": _text(props.get("variant"), LIMITS["variant"]) or "",
            "name": _text(props.get("name"), LIMITS["name"]),
            "category": _text(props.get("category"), LIMITS["category"]),
            "price": _price(props.get("price")),
            "currency": _currency(props.get("currency")),
            "image_url": _text(props.get("image_url"), LIMITS["image_url"]),
            "url": _text(props.get("url"), LIMITS["url"]),
            # Never later than it arrived: a sender's clock set ahead must not pin the row.
            "last_seen_at": min(m.timestamp, m.received_at),
        }
        key = (row["sku"], row["variant"])
        older = rows.get(key)
        if older is not None:
            row.update({k: older[k] for k in DESCRIPTIVE if row[k] is None})
        rows[key] = row
    # In key order: two requests upserting the same products lock their rows in the same order
    # (PostgreSQL deadlocked on batches naming them in opposite orders).
    return [rows[key] for key in sorted(rows)]


def upsert_from_events(session: Session, messages: Iterable) -> int:
    rows = rows_from_events(messages)
    if not rows:
        return 0
    now = utcnow()
    # One statement of a fixed text, the rows as one JSON parameter (store.dialect.json_rows_insert):
    # a multi-row VALUES list was compiled anew for every request, an executemany bound every value.
    fed = [{**row, "in_stock": True, "recent_orders": 0, "source": "event", "updated_at": now} for row in rows]
    session.execute(
        _event_upsert(dialect_name(session)), {"rows": json_rows(session.get_bind().dialect, table_of(Product), fed)}
    )
    return len(rows)


EVENT_FED = (*("sku", "variant"), *DESCRIPTIVE, "last_seen_at", "in_stock", "recent_orders", "source", "updated_at")


@cache
def _event_upsert(dialect: str):
    table = table_of(Product)
    stmt = json_rows_insert(dialect, table, EVENT_FED)
    new = stmt.excluded
    is_newer = or_(table.c.last_seen_at.is_(None), new.last_seen_at >= table.c.last_seen_at)

    def merged(column: str):
        ours, theirs = table.c[column], new[column]
        return case(
            (table.c.source == "admin", func.coalesce(ours, theirs)),
            (is_newer, func.coalesce(theirs, ours)),
            else_=func.coalesce(ours, theirs),
        )

    return stmt.on_conflict_do_update(
        index_elements=["sku", "variant"],
        set_={
            **{column: merged(column) for column in DESCRIPTIVE},
            "last_seen_at": case((is_newer, new.last_seen_at), else_=table.c.last_seen_at),
            "updated_at": new.updated_at,
        },
    )


# --- the admin feed ------------------------------------------------------------------------------


class CatalogItem(BaseModel):
    """One product variant in `PUT /admin/catalog`. Only `sku` is required."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sku: str = Field(min_length=1, max_length=LIMITS["sku"])
    variant: str | None = Field(default=None, max_length=LIMITS["variant"])
    name: str | None = Field(default=None, max_length=LIMITS["name"])
    category: str | None = Field(default=None, max_length=LIMITS["category"])
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    image_url: str | None = Field(default=None, max_length=LIMITS["image_url"])
    url: str | None = Field(default=None, max_length=LIMITS["url"])
    in_stock: bool | None = None
    bestseller_rank: int | None = Field(default=None, ge=1, le=2**31 - 1)  # an INTEGER column

    @field_validator("in_stock", mode="before")
    @classmethod
    def _real_bool(cls, value: object) -> object:
        if value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    @field_validator("image_url")
    @classmethod
    def _absolute_image(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL (mail clients cannot load relative images)")
        return value

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class CatalogInvalid(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def validate_items(body: object) -> list[tuple[CatalogItem, set[str]]]:
    """`{"products": [...]}` or a bare list → items with the fields each one set; every problem is
    reported at once, naming the item (index and sku) and the field."""
    products = body.get("products") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) - {"products"}:
        raise CatalogInvalid(
            [f'unexpected top-level key {sorted(set(body) - {"products"})[0]!r}; send {{"products": [...]}}']
        )
    if not isinstance(products, list):
        raise CatalogInvalid(['expected {"products": [ {"sku": …, …}, … ]} or a JSON array of products'])
    if not products:
        raise CatalogInvalid(["products is empty"])
    if len(products) > MAX_ADMIN_ITEMS:
        raise CatalogInvalid([f"{len(products)} products in one request; the limit is {MAX_ADMIN_ITEMS}"])
    problems: list[str] = []
    items: list[tuple[CatalogItem, set[str]]] = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(products):
        label = f"products[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("sku"), str):
            label += f" (sku {raw['sku'][:60]!r})"
        if not isinstance(raw, dict):
            problems.append(f"{label}: must be an object")
            continue
        try:
            item = CatalogItem.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(part) for part in error["loc"]) or "(item)"
                problems.append(f"{label}.{field}: {error['msg']}")
            continue
        key = (item.sku, item.variant or "")
        if key in seen:
            problems.append(f"{label}: same sku and variant as products[{seen[key]}]")
            continue
        seen[key] = index
        items.append((item, set(item.model_fields_set)))
    if problems:
        raise CatalogInvalid(problems)
    return items


def upsert_admin(session: Session, items: list[tuple[CatalogItem, set[str]]], policy: Policy | None = None) -> dict:
    """Create or update every item; fields an item did not send keep their stored value. With a
    `policy`, a product back in stock or cheaper starts its catalogue journeys (store/catalogue_triggers.py)."""
    with watching(session, (item.sku for item, _ in items), policy):
        return _upsert_admin(session, items)


def _upsert_admin(session: Session, items: list[tuple[CatalogItem, set[str]]]) -> dict:
    table = table_of(Product)
    keys = [(item.sku, item.variant or "") for item, _ in items]
    existing: set[tuple[str, str]] = set()
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        existing |= set(
            session.exec(
                select(col(Product.sku), col(Product.variant)).where(
                    tuple_(col(Product.sku), col(Product.variant)).in_(part)
                )
            ).all()
        )
    now = utcnow()
    groups: dict[frozenset[str], list[dict]] = {}
    for item, given in items:
        fields = frozenset(given - {"sku", "variant"})
        row = item.model_dump()
        row["variant"] = item.variant or ""
        groups.setdefault(fields, []).append(
            {**row, "in_stock": True if item.in_stock is None else item.in_stock, "source": "admin", "updated_at": now}
        )
    for fields, rows in groups.items():
        for start in range(0, len(rows), CHUNK):
            stmt = insert_for(dialect_name(session))(table).values(rows[start : start + CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=["sku", "variant"],
                set_={**{f: stmt.excluded[f] for f in fields}, "source": "admin", "updated_at": now},
            )
            session.execute(stmt)
    created = sum(1 for key in keys if key not in existing)
    return {"upserted": len(keys), "created": created, "updated": len(keys) - created}


def product_view(row: Product) -> dict:
    return {
        "sku": row.sku,
        "variant": row.variant or None,
        "name": row.name,
        "category": row.category,
        "price": row.price,
        "currency": row.currency,
        "image_url": row.image_url,
        "url": row.url,
        "in_stock": row.in_stock,
        "bestseller_rank": row.bestseller_rank,
        "source": row.source,
        "last_seen_at": iso(row.last_seen_at),
        "updated_at": iso(row.updated_at),
    }


def list_products(
    session: Session,
    *,
    sku: str | None = None,
    category: str | None = None,
    in_stock: bool | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[dict]:
    query = select(Product)
    if sku:
        query = query.where(col(Product.sku) == sku)
    if category:
        query = query.where(col(Product.category) == category)
    if in_stock is not None:
        query = query.where(col(Product.in_stock).is_(in_stock))
    query = query.order_by(col(Product.sku), col(Product.variant)).limit(limit).offset(offset)
    return [product_view(row) for row in session.exec(query).all()]
