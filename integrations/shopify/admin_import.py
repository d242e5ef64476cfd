"""Backfill a shop from the Admin GraphQL API: products, customers and the last N days of orders.

Each node is turned into the REST webhook payload of its topic (products/update, customers/update,
orders/create or orders/cancelled) and applied through `mapping.apply_topic`, so a past order means
exactly what a live orders/create means — "first purchase" and has-not-purchased are right on day
one. Applying is idempotent (message ids come from Shopify's ids and `updated_at`), so a second
import changes nothing. After each page the cursor is saved per shop and resource
(`shopify_import_checkpoints`): an interrupted import resumes after the last page it applied; a
finished one reads everything again next time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from integrations.shopify.graphql import AccessDenied, AdminGraphQL, ShopifyError
from integrations.shopify.mapping import UnusableWebhook, apply_topic, shopify_id
from journeys.policy import Policy
from store.db import reading, transaction
from store.models import ShopifyImportCheckpoint, utcnow
from store.settings import Settings

# Page sizes keep each query's requested cost under Shopify's 1,000-point cap (a connection costs its
# `first` times the objects in each node): 10 products × 30 variants, 100 customers, 10 orders × 15 lines.
PRODUCTS = """
query Products($after: String) {
  products(first: 10, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id title handle productType status
      featuredImage { url }
      variants(first: 30) {
        nodes { id sku title price inventoryQuantity inventoryPolicy inventoryItem { id tracked } image { url } }
      }
    }
  }
}"""

CUSTOMERS = """
query Customers($after: String) {
  customers(first: 100, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id email phone firstName lastName state tags verifiedEmail numberOfOrders note createdAt updatedAt
      emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }
      smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }
    }
  }
}"""

ORDERS = """
query Orders($after: String, $search: String) {
  orders(first: 10, after: $after, query: $search, sortKey: CREATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id name email phone createdAt processedAt cancelledAt cancelReason displayFinancialStatus currencyCode
      totalPriceSet { shopMoney { amount currencyCode } }
      subtotalPriceSet { shopMoney { amount currencyCode } }
      customer { id email phone }
      customAttributes { key value }
      lineItems(first: 15) {
        nodes {
          title variantTitle sku quantity product { id } variant { id }
          originalUnitPriceSet { shopMoney { amount currencyCode } }
        }
      }
    }
  }
}"""

COUNTS = """
query Counts($search: String) {
  productsCount { count }
  customersCount { count }
  ordersCount(query: $search) { count }
}"""


# --- GraphQL nodes as REST webhook payloads -------------------------------------------------------


def _numeric(gid: object) -> int | str | None:
    """REST ids are numbers: `gid://shopify/Order/123` → 123."""
    found = shopify_id(gid)
    return int(found) if found and found.isdigit() else found


def _lower(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _amount(bag: object) -> str | None:
    """A MoneyBag's shop-currency amount, kept as Shopify's decimal string."""
    money = bag.get("shopMoney") if isinstance(bag, dict) else None
    return money.get("amount") if isinstance(money, dict) else None


def _nodes(connection: object) -> list[dict]:
    if not isinstance(connection, dict):
        return []
    nodes = connection.get("nodes")
    if nodes is None:
        nodes = [edge.get("node") for edge in connection.get("edges") or () if isinstance(edge, dict)]
    return [node for node in nodes if isinstance(node, dict)]


def _consent(consent: object) -> dict | None:
    if not isinstance(consent, dict) or not consent.get("marketingState"):
        return None
    return {
        "state": _lower(consent["marketingState"]),
        "opt_in_level": _lower(consent.get("marketingOptInLevel")),
        "consent_updated_at": consent.get("consentUpdatedAt"),
    }


def customer_payload(node: dict) -> dict:
    """A Customer node as a customers/update webhook body."""
    tags = node.get("tags")
    count = node.get("numberOfOrders")
    return {
        "id": _numeric(node.get("id")),
        "email": node.get("email"),
        "phone": node.get("phone"),
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "state": _lower(node.get("state")),
        "tags": ", ".join(tags) if isinstance(tags, list) else tags,
        "verified_email": node.get("verifiedEmail"),
        "orders_count": int(count) if isinstance(count, (int, str)) and str(count).isdigit() else None,
        "note": node.get("note"),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "email_marketing_consent": _consent(node.get("emailMarketingConsent")),
        "sms_marketing_consent": _consent(node.get("smsMarketingConsent")),
    }


def order_payload(node: dict) -> dict:
    """An Order node as an orders/create (or orders/cancelled) webhook body."""
    customer = node.get("customer") if isinstance(node.get("customer"), dict) else None
    return {
        "id": _numeric(node.get("id")),
        "name": node.get("name"),
        "email": node.get("email"),
        "phone": node.get("phone"),
        "created_at": node.get("createdAt"),
        "processed_at": node.get("processedAt"),
        "cancelled_at": node.get("cancelledAt"),
        "cancel_reason": _lower(node.get("cancelReason")),
        "financial_status": _lower(node.get("displayFinancialStatus")),
        "currency": node.get("currencyCode"),
        "total_price": _amount(node.get("totalPriceSet")),
        "subtotal_price": _amount(node.get("subtotalPriceSet")),
        "customer": {"id": _numeric(customer.get("id")), "email": customer.get("email"), "phone": customer.get("phone")}
        if customer
        else None,
        "note_attributes": [
            {"name": a.get("key"), "value": a.get("value")}
            for a in node.get("customAttributes") or ()
            if isinstance(a, dict)
        ],
        "line_items": [
            {
                "product_id": _numeric((line.get("product") or {}).get("id")),
                "variant_id": _numeric((line.get("variant") or {}).get("id")),
                "sku": line.get("sku"),
                "title": line.get("title"),
                "variant_title": line.get("variantTitle"),
                "price": _amount(line.get("originalUnitPriceSet")),
                "quantity": line.get("quantity"),
            }
            for line in _nodes(node.get("lineItems"))
        ],
    }


def product_payload(node: dict) -> dict:
    """A Product node as a products/update webhook body (variant images become `images` + `image_id`)."""
    variants, images = [], {}
    for variant in _nodes(node.get("variants")):
        found = variant.get("inventoryItem")
        item: dict = found if isinstance(found, dict) else {}
        image = (variant.get("image") or {}).get("url")
        if image:
            images[image] = {"id": image, "src": image}
        variants.append(
            {
                "id": _numeric(variant.get("id")),
                "sku": variant.get("sku"),
                "title": variant.get("title"),
                "price": variant.get("price"),
                "inventory_quantity": variant.get("inventoryQuantity"),
                "inventory_policy": _lower(variant.get("inventoryPolicy")),
                "inventory_management": "shopify" if item.get("tracked") else None,
                "inventory_item_id": _numeric(item.get("id")),
                "image_id": image,
            }
        )
    featured = (node.get("featuredImage") or {}).get("url")
    return {
        "id": _numeric(node.get("id")),
        "title": node.get("title"),
        "handle": node.get("handle"),
        "product_type": node.get("productType"),
        "status": _lower(node.get("status")),
        "image": {"src": featured} if featured else None,
        "images": list(images.values()),
        "variants": variants,
    }


# --- the import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    name: str  # the top-level connection, also the checkpoint's resource
    query: str
    payload: Callable[[dict], dict]
    topic: Callable[[dict], str]


RESOURCES = (
    Resource("products", PRODUCTS, product_payload, lambda node: "products/update"),
    Resource("customers", CUSTOMERS, customer_payload, lambda node: "customers/update"),
    Resource(
        "orders", ORDERS, order_payload, lambda node: "orders/cancelled" if node.get("cancelledAt") else "orders/create"
    ),
)


@dataclass
class Imported:
    resource: str
    read: int = 0  # nodes read and applied by this run
    stored: int = 0  # events stored (0 for what an earlier import already stored)
    unusable: list[str] = field(default_factory=list)  # nodes left out, each with the reason
    resumed: bool = False  # continued an interrupted import from its checkpoint


class Progress:
    """Told of each resource's total and of every applied page (the CLI draws a progress bar)."""

    def start(self, resource: str, total: int | None, done: int) -> None:
        pass

    def advance(self, resource: str, nodes: int) -> None:
        pass


def orders_search(days: int, now: datetime) -> str:
    """Shopify's search syntax for the orders of the last `days` days (whole days, so a resume the
    same day continues the same window)."""
    return f"created_at:>={(now - timedelta(days=days)).date().isoformat()}"


def counts(client: AdminGraphQL, search: str) -> dict[str, int | None]:
    """How many products, customers and orders there are, for the progress bar — and the first
    query, so a refused token stops the import before anything is written."""
    try:
        data = client.query(COUNTS, {"search": search})
    except AccessDenied:
        raise
    except ShopifyError:  # an API version without the counts: bars without totals
        return {}
    return {r.name: (data.get(f"{r.name}Count") or {}).get("count") for r in RESOURCES}


def _checkpoint(engine: Engine, shop: str, resource: str) -> ShopifyImportCheckpoint | None:
    with Session(reading(engine)) as session:
        return session.get(ShopifyImportCheckpoint, (shop, resource))


def _save(engine: Engine, shop: str, resource: str, **values) -> None:
    with transaction(engine) as session:
        row = session.get(ShopifyImportCheckpoint, (shop, resource), with_for_update=True)
        if row is None:
            row = ShopifyImportCheckpoint(shop=shop, resource=resource, started_at=utcnow())
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.add(row)


def import_resource(
    engine: Engine,
    settings: Settings,
    policy: Policy,
    client: AdminGraphQL,
    shop: str,
    resource: Resource,
    search: str = "",
    *,
    restart: bool = False,
    total: int | None = None,
    progress: Progress | None = None,
) -> Imported:
    """Read every page of one resource and apply it, from the checkpoint of an unfinished import of
    the same window unless `restart`; the checkpoint moves after each applied page."""
    progress = progress or Progress()
    result = Imported(resource.name)
    saved = _checkpoint(engine, shop, resource.name)
    after, done = None, 0
    if saved and saved.finished_at is None and saved.search == search and saved.cursor and not restart:
        after, done, result.resumed = saved.cursor, saved.imported, True
    else:
        _save(
            engine, shop, resource.name, search=search, cursor=None, imported=0, started_at=utcnow(), finished_at=None
        )
    progress.start(resource.name, total, done)
    variables = {"search": search} if search else {}
    for page in client.pages(resource.query, resource.name, variables, after=after):
        for node in page.nodes:
            try:
                outcome = apply_topic(
                    engine, settings, policy, resource.topic(node), resource.payload(node), shop, backfill=True
                )
            except UnusableWebhook as error:
                result.unusable.append(f"{node.get('id')}: {error}")
                continue
            result.stored += outcome.stored
        result.read += len(page.nodes)
        done += len(page.nodes)
        _save(engine, shop, resource.name, cursor=page.end_cursor, imported=done)
        progress.advance(resource.name, len(page.nodes))
    _save(engine, shop, resource.name, cursor=None, finished_at=utcnow())
    return result


def import_shop(
    engine: Engine,
    settings: Settings,
    policy: Policy,
    client: AdminGraphQL,
    shop: str,
    days: int,
    *,
    restart: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> list[Imported]:
    """Products, then customers (identity and consent), then the orders of the last `days` days."""
    search = orders_search(days, now or utcnow())
    totals = counts(client, search)
    return [
        import_resource(
            engine,
            settings,
            policy,
            client,
            shop,
            resource,
            search if resource.name == "orders" else "",
            restart=restart,
            total=totals.get(resource.name),
            progress=progress,
        )
        for resource in RESOURCES
    ]
