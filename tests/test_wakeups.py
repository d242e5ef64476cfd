"""The pure rules of which outbox rows wake a hub (issue 16): `journeys.wakeups.could_change_route`
(an event that cannot out-rank the running journey sends nothing; identify, merge, purchase and the
stops always go) and the dispatcher's `plan` (one person's rows as the fewest signals, in order)."""

from __future__ import annotations

import pytest

from dispatch.dispatcher import plan
from journeys import taxonomy
from journeys.wakeups import PRIORITY, could_change_route
from store.models import OutboxRow
from workflows.hub import replaces

ALWAYS = ("identified", "merged", "purchased", "absorbed", "erased")
ROUTES = [None, *PRIORITY]


@pytest.mark.parametrize("running", ROUTES)
@pytest.mark.parametrize("kind", ALWAYS)
def test_identify_merge_purchase_and_stops_always_wake_the_hub(kind, running):
    for event in (None, taxonomy.PRODUCT_VIEWED, taxonomy.ADDED_TO_CART):
        assert could_change_route(kind, event, running)


@pytest.mark.parametrize(
    ("event", "running", "wakes"),
    [
        (taxonomy.PRODUCT_VIEWED, None, True),  # no journey: anything may start one
        (taxonomy.PRODUCT_VIEWED, "welcome", True),  # browse recovery out-ranks a welcome
        (taxonomy.PRODUCT_VIEWED, "none", True),
        (taxonomy.PRODUCT_VIEWED, "browse_recovery", False),  # at best another browse recovery: not more urgent
        (taxonomy.PRODUCT_VIEWED, "cart_recovery", False),
        (taxonomy.ADDED_TO_CART, "browse_recovery", True),  # a cart changed: cart recovery out-ranks browsing
        (taxonomy.REMOVED_FROM_CART, "welcome", True),
        (taxonomy.CHECKOUT_STARTED, "browse_recovery", True),
        (taxonomy.ADDED_TO_CART, "cart_recovery", False),  # nothing out-ranks a running cart recovery
        ("Some New Event", "browse_recovery", True),  # an event we do not know is assumed to matter
        (None, "welcome", True),
    ],
)
def test_activity_wakes_the_hub_only_when_it_could_out_rank_the_running_journey(event, running, wakes):
    assert could_change_route("activity", event, running) is wakes


def test_the_rule_agrees_with_the_hubs_own_replacement_rule():
    """Whenever the hub could replace `running` by some route an activity event can lead to, the
    event wakes the hub (the dispatcher never skips a wake-up the hub would act on)."""
    reachable = {
        taxonomy.PRODUCT_VIEWED: ("none", "control", "welcome", "browse_recovery"),
        taxonomy.ADDED_TO_CART: tuple(PRIORITY),
    }
    for event, routes in reachable.items():
        for running in ROUTES:
            assert could_change_route("activity", event, running) is any(replaces(running, r) for r in routes)


def row(row_id: int, kind: str, event: str | None = None) -> OutboxRow:
    return OutboxRow(id=row_id, kind=kind, person_id="p", payload={"event": event} if event else {})


def sent(steps) -> list[tuple[int | None, list[int]]]:
    return [(step.signal.id if step.signal else None, [r.id for r in step.rows]) for step in steps]


def test_a_persons_browsing_is_one_signal_on_the_last_row_and_settles_every_row():
    rows = [row(i, "activity", taxonomy.PRODUCT_VIEWED) for i in range(1, 6)]
    assert sent(plan(rows, None)) == [(5, [5, 1, 2, 3, 4])]


def test_an_identify_carries_the_browsing_and_is_never_coalesced_away():
    rows = [
        row(1, "activity", taxonomy.PRODUCT_VIEWED),
        row(2, "identified"),
        row(3, "activity", taxonomy.ADDED_TO_CART),
        row(4, "activity", taxonomy.PRODUCT_VIEWED),
    ]
    assert sent(plan(rows, None)) == [(2, [2, 1, 3, 4])]
    # two identifies apart are two signals; repeats next to each other are one
    rows = [row(1, "identified"), row(2, "identified"), row(3, "purchased"), row(4, "identified")]
    assert sent(plan(rows, None)) == [(1, [1, 2]), (3, [3]), (4, [4])]


def test_purchases_and_stops_keep_their_order_around_the_browsing():
    rows = [
        row(1, "activity", taxonomy.PRODUCT_VIEWED),
        row(2, "purchased"),
        row(3, "activity", taxonomy.PRODUCT_VIEWED),
        row(4, "merged"),
        row(5, "erased"),
    ]
    assert sent(plan(rows, None)) == [(2, [2]), (4, [4, 1, 3]), (5, [5])]
    rows = [row(1, "purchased"), row(2, "activity", taxonomy.ADDED_TO_CART), row(3, "purchased")]
    assert sent(plan(rows, None)) == [(1, [1]), (2, [2]), (3, [3])]


def test_browsing_under_a_more_urgent_journey_settles_without_a_signal_but_a_cart_change_still_goes():
    views = [row(1, "activity", taxonomy.PRODUCT_VIEWED), row(2, "activity", taxonomy.PRODUCT_VIEWED)]
    assert sent(plan(views, "browse_recovery")) == [(None, [1]), (None, [2])]
    rows = [*views, row(3, "activity", taxonomy.ADDED_TO_CART), row(4, "activity", taxonomy.PRODUCT_VIEWED)]
    assert sent(plan(rows, "browse_recovery")) == [(None, [1]), (None, [2]), (3, [3]), (None, [4])]
    assert sent(plan(rows, "cart_recovery")) == [(None, [1]), (None, [2]), (None, [3]), (None, [4])]
    assert sent(plan([row(0, "purchased"), *views], "cart_recovery")) == [(0, [0]), (None, [1]), (None, [2])]
