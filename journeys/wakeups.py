"""Which hub wake-ups can change a person's route — decided before any Temporal work is spent.

A known shopper's browsing is most of the traffic, and each `activity` signal costs the hub a
workflow task and a store read. The hub only replaces a running journey by a more urgent one
(`replaces`), so an event whose best possible outcome is no more urgent than the journey already
running cannot change anything: the dispatcher settles its outbox row without a signal. The event
itself is stored either way, and the hub reads it the next time it routes (a journey's end, an
identify, a merge). Every other kind of wake-up — identify, merge, purchase, erase — always goes."""

from __future__ import annotations

from journeys import taxonomy

# A running journey is only replaced by a more urgent one (welcome → browse → catalogue → cart): a
# product back in stock or cheaper is more pressing than a browse reminder, less than an open cart.
PRIORITY = {
    "none": 0,
    "control": 0,
    "welcome": 1,
    "browse_recovery": 2,
    "back_in_stock": 2.5,
    "price_drop": 2.5,
    "cart_recovery": 3,
}
# The most urgent route an activity event can lead to: a cart event may open (or grow) a cart; a
# product view only adds browse intent. An event not listed here is assumed to reach the top.
BROWSE_ONLY_EVENTS = frozenset({taxonomy.PRODUCT_VIEWED, taxonomy.COLLECTION_VIEWED})


def replaces(current: str | None, proposed: str) -> bool:
    """Whether a new routing decision should cancel the running journey."""
    return current is None or PRIORITY[proposed] > PRIORITY.get(current, 0)


def most_urgent_route(event: str | None) -> str:
    """The most urgent route this activity event could possibly lead to."""
    return "browse_recovery" if event in BROWSE_ONLY_EVENTS else "cart_recovery"


def could_change_route(kind: str, event: str | None, running: str | None) -> bool:
    """Whether an outbox row of `kind` (for `event`) may change the route of a person whose running
    journey is `running` (None: no journey running). Only `activity` rows are ever ruled out."""
    if kind != "activity":
        return True
    return replaces(running, most_urgent_route(event))
