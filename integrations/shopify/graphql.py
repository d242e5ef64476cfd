"""A small client for Shopify's Admin GraphQL API: one POST per query, cursor pages, and Shopify's
cost-based throttling (a leaky bucket of query points) honoured instead of fought.

Shopify answers every query with `extensions.cost.throttleStatus` (`currentlyAvailable` points,
`restoreRate` points per second). A query that costs more than is available gets HTTP 200 with an
error whose `extensions.code` is `THROTTLED`: we wait exactly as long as the bucket needs to refill
to the query's cost, then ask again. Before each query we also wait when the last answer said the
bucket cannot pay for it, so a long import runs at Shopify's pace rather than hitting the wall.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

API_VERSION = "2025-01"
MAX_ATTEMPTS = 6  # per query, for throttling and transient failures (429, 5xx, network)
TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class ShopifyError(RuntimeError):
    """The Admin API refused or failed a query for good; the message names the cause."""


class AccessDenied(ShopifyError):
    """No Admin API for this shop and token (401, 403, 404): nothing will work until it is fixed."""


@dataclass
class Page:
    nodes: list[dict]
    end_cursor: str | None
    has_next_page: bool


@dataclass
class Bucket:
    """What the last answer said about the query-point bucket."""

    available: float | None = None
    restore_rate: float | None = None
    last_cost: float | None = None

    def wait_for(self, cost: float) -> float:
        """Seconds until the bucket holds `cost` points (0 when it does, or when we do not know)."""
        if self.available is None or not self.restore_rate or self.available >= cost:
            return 0.0
        return (cost - self.available) / self.restore_rate

    def refill_wait(self, cost: float) -> float:
        """`wait_for(cost)`, counting the bucket as refilled to `cost` once that wait is over."""
        wait = self.wait_for(cost)
        if wait:
            self.available = cost
        return wait

    def update(self, extensions: dict | None) -> None:
        cost = (extensions or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        if "currentlyAvailable" in status:
            self.available = float(status["currentlyAvailable"])
        if status.get("restoreRate"):
            self.restore_rate = float(status["restoreRate"])
        if cost.get("requestedQueryCost") is not None:
            self.last_cost = float(cost["requestedQueryCost"])


class AdminGraphQL:
    """`POST {base_url}/admin/api/{version}/graphql.json` with the shop's Admin API access token."""

    def __init__(
        self,
        shop: str,
        token: str,
        *,
        api_version: str = API_VERSION,
        base_url: str | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.shop = shop
        self.url = f"{(base_url or f'https://{shop}').rstrip('/')}/admin/api/{api_version}/graphql.json"
        self.http = httpx.Client(
            timeout=timeout,
            headers={"X-Shopify-Access-Token": token, "Content-Type": "application/json", "Accept": "application/json"},
        )
        self.bucket = Bucket()
        self.sleep = sleep
        self.waited = 0.0  # seconds spent waiting for the bucket or after transient failures

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AdminGraphQL:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            self.sleep(seconds)

    def query(self, query: str, variables: dict | None = None) -> dict:
        """The query's `data`; waits out throttling and retries transient failures."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self.bucket.last_cost is not None:
                self._pause(self.bucket.refill_wait(self.bucket.last_cost))
            try:
                response = self.http.post(self.url, json={"query": query, "variables": variables or {}})
            except httpx.TransportError as error:
                if attempt == MAX_ATTEMPTS:
                    raise ShopifyError(f"{self.shop}: could not reach the Admin API ({error})") from error
                self._pause(min(30.0, 2.0**attempt))
                continue
            if response.status_code in TRANSIENT_STATUS and attempt < MAX_ATTEMPTS:
                self._pause(_retry_after(response) or min(30.0, 2.0**attempt))
                continue
            body = _json(response, self.shop)
            self.bucket.update(body.get("extensions"))
            errors = body.get("errors") or []
            if any(_code(e) == "THROTTLED" for e in errors) and attempt < MAX_ATTEMPTS:
                cost = self.bucket.last_cost or 1.0
                self._pause(self.bucket.refill_wait(cost) or 1.0 / (self.bucket.restore_rate or 1.0))
                continue
            if errors:
                raise ShopifyError(f"{self.shop}: the Admin API answered with errors: {_messages(errors)}")
            if not isinstance(body.get("data"), dict):
                raise ShopifyError(f"{self.shop}: the Admin API answered without data")
            return body["data"]
        raise ShopifyError(f"{self.shop}: gave up after {MAX_ATTEMPTS} attempts (throttled or failing)")

    def pages(
        self, query: str, connection: str, variables: dict | None = None, after: str | None = None
    ) -> Iterator[Page]:
        """The pages of the top-level connection `connection` (`edges { node }` or `nodes`), from the
        cursor `after`; the query takes `$after: String` and selects `pageInfo { hasNextPage endCursor }`."""
        while True:
            data = self.query(query, {**(variables or {}), "after": after})
            found = data.get(connection)
            if not isinstance(found, dict):
                raise ShopifyError(f"{self.shop}: the answer has no `{connection}` connection")
            info = found.get("pageInfo") or {}
            nodes = found.get("nodes")
            if nodes is None:
                nodes = [edge.get("node") for edge in found.get("edges") or () if isinstance(edge, dict)]
            page = Page([n for n in nodes if isinstance(n, dict)], info.get("endCursor"), bool(info.get("hasNextPage")))
            yield page
            if not page.has_next_page or not page.end_cursor:
                return
            after = page.end_cursor


def _json(response: httpx.Response, shop: str) -> dict:
    if response.status_code in (401, 403):
        raise AccessDenied(
            f"{shop}: the Admin API refused the access token (HTTP {response.status_code}); "
            "use the custom app's Admin API access token with read_customers, read_orders and "
            "read_products"
        )
    if response.status_code == 404:
        raise AccessDenied(
            f"{shop}: no Admin API here (HTTP 404); check --shop (the *.myshopify.com domain) and --api-version"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400 or not isinstance(body, dict):
        raise ShopifyError(f"{shop}: the Admin API answered HTTP {response.status_code}: {response.text[:200]}")
    return body


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _code(error: object) -> str | None:
    return ((error.get("extensions") or {}).get("code")) if isinstance(error, dict) else None


def _messages(errors: list) -> str:
    return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:500]
