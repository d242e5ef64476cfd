"""Per-key request rate limits on the front doors, with the `limits` library.

Each API process counts in its own memory (a moving window per key and minute), so with N API
replicas behind a load balancer a key can send up to N times the configured rate; set the limits
per replica (docs/operations.md). A refused request is a 429 with `Retry-After` in the door's own
error shape and nothing of it is stored, so the sender's retry loses nothing.
"""

from __future__ import annotations

import hashlib
import math
import time

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from api.deps import basic_credentials, require_cio
from store.settings import Settings

REFUSED = Counter("breadcrumb_rate_limited_total", "Requests refused by a per-key rate limit", ["door"])


class RateLimited(Exception):
    """A Customer.io request over its key's limit (rendered in Customer.io's error shape)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class FrontDoorLimits:
    """`browser`: /v1/* per public write key; `server`: /v1/* per server write key and /api/v1/* per
    Customer.io site id."""

    def __init__(self, settings: Settings) -> None:
        self.items = {
            door: RateLimitItemPerMinute(per_minute)
            for door, per_minute in (("browser", settings.rate_limit_browser), ("server", settings.rate_limit_server))
            if per_minute > 0
        }
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, door: str, key: str) -> int | None:
        """Count one request of `key`; the seconds to wait when it is over the limit, else None."""
        item = self.items.get(door)
        if item is None:
            return None
        # Keys are secrets: the counters hold a digest, never the key itself.
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        if self.limiter.hit(item, door, name):
            return None
        REFUSED.labels(door).inc()
        reset = self.limiter.get_window_stats(item, door, name).reset_time
        return max(1, math.ceil(reset - time.time()))


def segment_refusal(request: Request, body: dict, trust: str) -> JSONResponse | None:
    """The Segment-shaped 429 for a write key over its limit (a server write key counts against the
    server limit), or None to go on."""
    credentials = basic_credentials(request)
    write_key = credentials[0] if credentials else str(body.get("writeKey"))
    wait = request.app.state.rate_limits.retry_after(trust, write_key)
    if wait is None:
        return None
    return JSONResponse(
        {"success": False, "error": f"rate limit exceeded for this write key; retry in {wait} s"},
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


def limit_customerio(request: Request, _authorised: None = Depends(require_cio)) -> None:
    """Router dependency of the Track API: count an authorised request against its site id (a
    stranger's wrong credentials never spend the shop's budget)."""
    credentials = basic_credentials(request)
    wait = request.app.state.rate_limits.retry_after("server", credentials[0] if credentials else "")
    if wait is not None:
        raise RateLimited(wait)
