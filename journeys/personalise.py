"""What a message shows: a few recently viewed products and the category the shopper cares about."""

from __future__ import annotations

from collections import Counter

from journeys import taxonomy
from journeys.history import HistoryEvent

MAX_ITEMS = 3


def recently_viewed(events: list[HistoryEvent], limit: int = MAX_ITEMS) -> list[dict]:
    """Distinct products, most recently viewed first, at most `limit` (not a scroll of everything)."""
    seen: set[tuple] = set()
    items: list[dict] = []
    for event in reversed(events):
        if event.name not in (taxonomy.PRODUCT_VIEWED, taxonomy.ADDED_TO_CART):
            continue
        props = event.properties
        key = (props.get("sku") or props.get("product_id") or props.get("name"),)
        if key == (None,) or key in seen:
            continue
        seen.add(key)
        items.append({k: props.get(k) for k in ("sku", "variant", "name", "price", "category", "image_url", "url")})
        if len(items) == limit:
            break
    return items


def category_anchor(events: list[HistoryEvent]) -> str | None:
    """The category the shopper looked at most (ties go to the most recent)."""
    counts: Counter[str] = Counter()
    last_seen: dict[str, int] = {}
    for index, event in enumerate(events):
        category = event.properties.get("category")
        if isinstance(category, str) and category and event.name in (
            taxonomy.PRODUCT_VIEWED, taxonomy.COLLECTION_VIEWED, taxonomy.QUIZ_ANSWERED, taxonomy.ADDED_TO_CART
        ):
            counts[category] += 1
            last_seen[category] = index
    if not counts:
        return None
    return max(counts, key=lambda c: (counts[c], last_seen[c]))
