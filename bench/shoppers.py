"""A seeded data set of identified shoppers with realistic histories, written through the real
ingest core (`store.ingest.ingest`) at past timestamps — what the backtest benchmark and the
simulation tests run on.

Each shopper browses anonymously (product and collection views, sometimes a size guide or a quiz),
maybe fills a cart, then identifies at a random moment of the last `days` days; some buy later
(minutes to days after identifying), some come back later as a known person and add to a cart,
a few bought before they identified. Timezones vary, so quiet hours matter.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, UTC

from sqlalchemy import Engine

from journeys.policy import Policy
from store.ingest import Incoming, ingest

CATEGORIES = {
    "serums": [("SER-30", "Night Serum", 64.0), ("SER-15", "Vitamin C Serum", 42.0), ("SER-50", "Retinol Serum", 58.0)],
    "moisturisers": [
        ("MOI-01", "Day Cream", 36.0),
        ("MOI-02", "Rich Night Cream", 48.0),
        ("MOI-03", "Gel Cream", 29.0),
    ],
    "cleansers": [
        ("CLE-01", "Foaming Cleanser", 19.0),
        ("CLE-02", "Cleansing Balm", 32.0),
        ("CLE-03", "Micellar Water", 15.0),
    ],
    "suncare": [("SUN-30", "SPF 30 Fluid", 27.0), ("SUN-50", "SPF 50 Cream", 31.0)],
    "tools": [("TOO-01", "Jade Roller", 24.0), ("TOO-02", "Gua Sha", 21.0), ("TOO-03", "Cleansing Brush", 89.0)],
}
ZONES = ["UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "Australia/Sydney", None]


def _message(
    kind: str, name: str, anon: str, at: datetime, properties: dict | None = None, context: dict | None = None
) -> Incoming:
    return Incoming(
        type=kind,
        original_name=name,
        anonymous_id=anon,
        properties=properties or {},
        context=context or {},
        timestamp=at,
        received_at=at,
        message_id=str(uuid.uuid4()),
    )


def shopper(rng: random.Random, index: int, identify_at: datetime, now: datetime) -> list[Incoming]:
    """One shopper's messages, oldest first."""
    anon = f"bench-device-{index}-{rng.randrange(10**9)}"
    zone = rng.choice(ZONES)
    context = {"timezone": zone} if zone else {}
    category = rng.choice(list(CATEGORIES))
    products = CATEGORIES[category]
    kind = rng.choices(["cart", "browse", "light"], weights=[35, 25, 40])[0]
    at = identify_at - timedelta(minutes=rng.randint(5, 240))
    out: list[Incoming] = [_message("page", "Page Viewed", anon, at, {"url": f"/collections/{category}"}, context)]

    def later(minutes: tuple[int, int]) -> datetime:
        nonlocal at
        at = min(identify_at - timedelta(seconds=1), at + timedelta(minutes=rng.randint(*minutes)))
        return at

    out.append(_message("track", "Collection Viewed", anon, later((0, 3)), {"category": category}, context))
    views = {"cart": rng.randint(1, 4), "browse": rng.randint(6, 10), "light": rng.randint(0, 2)}[kind]
    for _ in range(views):
        sku, name, price = rng.choice(products)
        out.append(
            _message(
                "track",
                "Product Viewed",
                anon,
                later((1, 6)),
                {"sku": sku, "name": name, "price": price, "category": category, "url": f"/products/{sku.lower()}"},
                context,
            )
        )
    if kind == "browse" and rng.random() < 0.4:
        out.append(_message("track", "Size Guide Viewed", anon, later((1, 3)), {"category": category}, context))
    cart_id = f"cart-{index}"
    if kind == "cart":
        for _ in range(rng.randint(1, 3)):
            sku, name, price = rng.choice(products)
            out.append(
                _message(
                    "track",
                    "Product Added",
                    anon,
                    later((1, 4)),
                    {
                        "cart_id": cart_id,
                        "sku": sku,
                        "name": name,
                        "price": price,
                        "quantity": rng.choice([1, 1, 1, 2]),
                        "category": category,
                    },
                    context,
                )
            )
    if rng.random() < 0.05:  # bought before ever giving an email
        out.append(
            _message(
                "track",
                "Order Completed",
                anon,
                later((1, 5)),
                {"order_id": f"order-early-{index}", "revenue": 45.0},
                context,
            )
        )
    email = f"shopper{index}@example.com"
    out.append(
        _message(
            "identify",
            "Identify",
            anon,
            identify_at,
            {"email": email, "first_name": rng.choice(["Ada", "Grace", "Linus", "Mae", "Omar", "Yuki"])},
            context,
        )
    )
    buys = {"cart": 0.3, "browse": 0.2, "light": 0.1}[kind]
    after = identify_at
    if rng.random() < 0.15:  # comes back later as a known person and fills a cart
        after = identify_at + timedelta(hours=rng.randint(2, 96))
        sku, name, price = rng.choice(products)
        out.append(
            _message(
                "track",
                "Product Added",
                anon,
                after,
                {
                    "cart_id": f"cart-{index}-b",
                    "sku": sku,
                    "name": name,
                    "price": price * 2,
                    "quantity": 1,
                    "category": category,
                },
                context,
            )
        )
    if rng.random() < buys:
        ordered = after + timedelta(minutes=rng.randint(10, 4 * 24 * 60))
        out.append(
            _message(
                "track",
                "Order Completed",
                anon,
                ordered,
                {
                    "order_id": f"order-{index}",
                    "cart_id": cart_id if kind == "cart" else None,
                    "revenue": round(rng.uniform(20, 180), 2),
                },
                context,
            )
        )
    return [m for m in out if m.timestamp <= now]


def populate(
    engine: Engine, policy: Policy, people: int, days: float = 28.0, seed: int = 7, now: datetime | None = None
) -> int:
    """Ingest `people` shoppers identified in the last `days` days; nothing is dated after `now`.
    (A journey still running at `now` is simulated on past it: the policy's answer, not history.)"""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    batch: list[Incoming] = []
    for index in range(people):
        identify_at = now - timedelta(seconds=rng.uniform(3600, days * 86400))
        batch += shopper(rng, index, identify_at, now)
        if len(batch) >= 2000:
            ingest(engine, batch, policy, api="bench", endpoint="bench")
            batch = []
    if batch:
        ingest(engine, batch, policy, api="bench", endpoint="bench")
    return people
