"""What a message shows: a few recently viewed, in-stock products, the category the shopper cares
about most, and — when we know nothing about them — the shop's bestsellers; and when a step has
nothing worth sending.

Pure: the activity loads the history and the relevant catalog rows and hands them in, so all of
this is unit-tested without a database. The rules a marketer can rely on:

- at most `MAX_ITEMS` (3) items, most recently viewed first, one per product (not one per view,
  not one per variant) — never a scroll of everything;
- a variant the catalog marks out of stock is never recommended: another in-stock variant of the
  same product stands in for it, and a product with no variant in stock is left out;
- a product the catalog does not know is left out too: we cannot vouch for its stock;
- the category anchor is the category looked at most (product views, collection views, quiz
  answers, add-to-carts), ties going to the most recent;
- bestsellers are the admin's `bestseller_rank` first, then what sells: products by the number of
  recent orders that contained them;
- a browse recovery with nothing in stock to show, or a cart recovery whose every line has sold
  out, is skipped rather than sent empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from journeys import taxonomy
from journeys.history import HistoryEvent, number
from journeys.routing import OpenCart
from journeys.taxonomy import product_key

MAX_ITEMS = 3
BROWSE_EVENTS = (taxonomy.PRODUCT_VIEWED, taxonomy.ADDED_TO_CART)
CATEGORY_EVENTS = (taxonomy.PRODUCT_VIEWED, taxonomy.COLLECTION_VIEWED, taxonomy.QUIZ_ANSWERED, taxonomy.ADDED_TO_CART)


class CatalogEntry(BaseModel):
    """One product variant as the catalog knows it (`variant` None: the product has no variants)."""

    sku: str
    variant: str | None = None
    name: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    image_url: str | None = None
    url: str | None = None
    in_stock: bool = True
    bestseller_rank: int | None = None
    orders: int = 0  # recent orders that contained the product: the bestseller order without an admin rank


class Item(BaseModel):
    """A product line as a template shows it. Every field is always present (templates run with
    StrictUndefined), `quantity` only for cart lines."""

    sku: str | None = None
    variant: str | None = None
    name: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    quantity: int | None = None
    image_url: str | None = None
    url: str | None = None
    in_stock: bool = True


class Catalog:
    """The catalog rows a personalisation needs, indexed by product (sku)."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self.by_sku: dict[str, list[CatalogEntry]] = {}
        for entry in entries:
            self.by_sku.setdefault(entry.sku, []).append(entry)

    def __contains__(self, sku: str) -> bool:
        return sku in self.by_sku

    def entries(self) -> list[CatalogEntry]:
        return [entry for variants in self.by_sku.values() for entry in variants]

    def available(self, sku: str, variant: str | None = None) -> CatalogEntry | None:
        """The variant to show for a product the shopper looked at: the one they viewed when it is
        in stock, else the product's first in-stock variant, else None (sold out or unknown)."""
        variants = self.by_sku.get(sku)
        if not variants:
            return None
        wanted = _blank_to_none(variant)
        for entry in variants:
            if entry.variant == wanted and entry.in_stock:
                return entry
        in_stock = sorted((e for e in variants if e.in_stock), key=lambda e: (e.variant is not None, e.variant or ""))
        return in_stock[0] if in_stock else None

    def category_of(self, sku: str) -> str | None:
        return next((e.category for e in self.by_sku.get(sku, []) if e.category), None)


def _blank_to_none(value: object) -> str | None:
    if value is None or value == "" or isinstance(value, (dict, list)):
        return None
    return str(value)[:255]


def _event_item(entry: CatalogEntry, props: dict[str, Any]) -> Item:
    """The catalog's truth (stock, current price, image), filled from the event where the catalog is silent."""
    return Item(
        sku=entry.sku,
        variant=entry.variant,
        name=entry.name or _blank_to_none(props.get("name")),
        category=entry.category or _blank_to_none(props.get("category")),
        price=entry.price if entry.price is not None else number(props.get("price")),
        currency=entry.currency or _blank_to_none(props.get("currency")),
        image_url=entry.image_url or _blank_to_none(props.get("image_url")),
        url=entry.url or _blank_to_none(props.get("url")),
        in_stock=True,
    )


def recently_viewed(
    events: list[HistoryEvent], catalog: Catalog, limit: int = MAX_ITEMS, exclude: Iterable[str] = ()
) -> list[Item]:
    """Distinct products the shopper viewed or added to a cart, most recent first, in stock only,
    at most `limit`. `exclude` skips products by sku (e.g. those already in the cart)."""
    seen: set[str] = set(exclude)
    items: list[Item] = []
    for event in sorted(events, key=lambda e: e.timestamp, reverse=True):
        if len(items) >= limit:
            break
        if event.name not in BROWSE_EVENTS:
            continue
        props = event.properties or {}
        sku = product_key(props)
        if sku is None or sku in seen:
            continue
        seen.add(sku)  # the newest view decides; an older view of a sold-out product does not bring it back
        entry = catalog.available(sku, props.get("variant"))
        if entry is not None:
            items.append(_event_item(entry, props))
    return items


def category_anchor(events: list[HistoryEvent], catalog: Catalog | None = None) -> str | None:
    """The category the shopper looked at most (ties go to the most recent). An event without a
    `category` property counts for its product's category in the catalog."""
    counts: Counter[str] = Counter()
    last_seen: dict[str, int] = {}
    for index, event in enumerate(sorted(events, key=lambda e: e.timestamp)):
        if event.name not in CATEGORY_EVENTS:
            continue
        props = event.properties or {}
        category = props.get("category")
        if not (isinstance(category, str) and category.strip()):
            sku = product_key(props)
            category = catalog.category_of(sku) if catalog is not None and sku else None
        if category:
            category = category.strip()
            counts[category] += 1
            last_seen[category] = index
    if not counts:
        return None
    return max(counts, key=lambda c: (counts[c], last_seen[c]))


def _ranked(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """Admin ranks first (1 = best), then by recent orders, then by name."""
    return sorted(
        entries,
        key=lambda e: (
            e.bestseller_rank is None,
            e.bestseller_rank or 0,
            -e.orders,
            e.name or "",
            e.sku,
            e.variant or "",
        ),
    )


def _picks(entries: Iterable[CatalogEntry], limit: int, exclude: Iterable[str]) -> list[Item]:
    seen = set(exclude)
    items: list[Item] = []
    for entry in _ranked(e for e in entries if e.in_stock):
        if entry.sku in seen:
            continue
        seen.add(entry.sku)
        items.append(_event_item(entry, {}))
        if len(items) >= limit:
            break
    return items


def category_picks(catalog: Catalog, category: str, limit: int = MAX_ITEMS, exclude: Iterable[str] = ()) -> list[Item]:
    """In-stock products of `category`, bestsellers first, one per product."""
    return _picks((e for e in catalog.entries() if e.category == category), limit, exclude)


def bestsellers(catalog: Catalog, limit: int = MAX_ITEMS, exclude: Iterable[str] = ()) -> list[Item]:
    """The shop's bestsellers that are in stock: products with a `bestseller_rank`, then products
    that sold (so a catalog fed only from events still has bestsellers)."""
    return _picks((e for e in catalog.entries() if e.bestseller_rank is not None or e.orders > 0), limit, exclude)


def cart_lines(cart: OpenCart, catalog: Catalog) -> list[Item]:
    """The cart's line items as the shopper left them, with name, image and link filled from the
    catalog and `in_stock` telling the template which line has sold out since."""
    lines = []
    for line in cart.items:
        entries = catalog.by_sku.get(line.sku or "", [])
        exact = next((e for e in entries if e.variant == _blank_to_none(line.variant)), None)
        known = exact or (entries[0] if entries else None)
        lines.append(
            Item(
                sku=line.sku,
                variant=line.variant,
                name=line.name or (known.name if known else None),
                category=line.category or (known.category if known else None),
                price=line.price,
                currency=known.currency if known else None,
                quantity=line.quantity,
                image_url=line.image_url or (known.image_url if known else None),
                url=known.url if known else None,
                in_stock=exact.in_stock if exact is not None else True,
            )
        )
    return lines


class Personalisation(BaseModel):
    """Everything product-shaped a step's template gets."""

    items: list[Item] = []  # cart lines (cart recovery) or recently viewed, in stock (the others)
    category: str | None = None  # the anchor: the category looked at most
    picks: list[Item] = []  # in-stock bestsellers of the anchor category, else the shop's bestsellers
    cart_value: float | None = None


def personalise(
    route: str,
    events: list[HistoryEvent],
    catalog: Catalog,
    cart: OpenCart | None = None,
    limit: int = MAX_ITEMS,
    product_id: str | None = None,
) -> Personalisation:
    """`product_id` (a catalogue journey): the items are that one product, as the catalogue has it now."""
    category = category_anchor(events, catalog)
    if route == "cart_recovery" and cart is not None:
        items = cart_lines(cart, catalog)
        value = cart.value
    elif product_id is not None:
        about = [e for e in events if product_key(e.properties or {}) == product_id]
        items, value = recently_viewed(about, catalog, 1), None
    else:
        items, value = recently_viewed(events, catalog, limit), None
    shown = {item.sku for item in items if item.sku}
    picks = category_picks(catalog, category, limit, exclude=shown) if category else []
    if not picks:
        picks = bestsellers(catalog, limit, exclude=shown)
    return Personalisation(items=items, category=category, picks=picks, cart_value=value)


def nothing_to_show(route: str, shown: Personalisation, events: list[HistoryEvent]) -> str | None:
    """Why this step must not be sent, or None: a browse recovery is about what they viewed, so
    without one viewed product in stock it would be an empty "your favourites" email; a cart
    recovery whose every line has sold out can only disappoint. The `out of stock: …` reasons are
    what the reports count as out of stock."""
    if route == "cart_recovery" and shown.items and not any(item.in_stock for item in shown.items):
        return "out of stock: every item in their cart has sold out"
    if route in ("back_in_stock", "price_drop") and not shown.items:
        return "out of stock: the product is not in stock"
    if route == "browse_recovery" and not shown.items:
        if any(e.name in BROWSE_EVENTS and product_key(e.properties or {}) for e in events):
            return "out of stock: nothing they viewed is in stock"
        return "nothing to show: they viewed no product"
    return None


def skus_in(events: list[HistoryEvent], cart: OpenCart | None = None) -> set[str]:
    """Every product the history mentions: what the activity loads from the catalog."""
    skus = {sku for e in events if e.name in CATEGORY_EVENTS and (sku := product_key(e.properties or {}))}
    if cart is not None:
        skus |= {line.sku for line in cart.items if line.sku}
    return skus
