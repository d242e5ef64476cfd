"""The pure personalisation rules: recency-ordered distinct products, variant availability from the
catalog, the category anchor, at most three items, never out of stock."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.history import HistoryEvent
from journeys.personalise import (
    Catalog,
    CatalogEntry,
    bestsellers,
    cart_lines,
    category_anchor,
    category_picks,
    nothing_to_show,
    personalise,
    recently_viewed,
)
from journeys.routing import open_cart

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def ev(event: str, minute: int, **props) -> HistoryEvent:
    return HistoryEvent(name=event, timestamp=T0 + timedelta(minutes=minute), properties=props)


def view(minute: int, sku: str, variant: str | None = None, **props) -> HistoryEvent:
    return ev("Product Viewed", minute, sku=sku, variant=variant, **props)


def entry(sku: str, variant: str | None = None, in_stock: bool = True, **kw) -> CatalogEntry:
    return CatalogEntry(sku=sku, variant=variant, name=kw.pop("name", f"Product {sku}"), in_stock=in_stock, **kw)


def test_most_recent_first_one_per_product_at_most_three():
    events = [view(1, "A"), view(2, "B"), view(3, "A"), view(4, "C"), view(5, "D"), view(6, "B")]
    catalog = Catalog(entry(s) for s in "ABCD")
    assert [i.sku for i in recently_viewed(events, catalog)] == ["B", "D", "C"]
    assert [i.sku for i in recently_viewed(events, catalog, limit=10)] == ["B", "D", "C", "A"]


def test_order_is_by_timestamp_not_by_list_position():
    events = [view(9, "LATE"), view(1, "EARLY")]
    assert [i.sku for i in recently_viewed(events, Catalog([entry("LATE"), entry("EARLY")]))] == ["LATE", "EARLY"]


def test_added_to_cart_counts_as_interest_other_events_do_not():
    events = [
        view(1, "A"),
        ev("Added to Cart", 2, sku="B"),
        ev("Order Completed", 3, sku="C"),
        ev("Removed from Cart", 4, sku="D"),
    ]
    catalog = Catalog(entry(s) for s in "ABCD")
    assert [i.sku for i in recently_viewed(events, catalog)] == ["B", "A"]


def test_product_id_is_the_key_when_there_is_no_sku():
    events = [ev("Product Viewed", 1, product_id="P-1", name="Serum")]
    assert [i.sku for i in recently_viewed(events, Catalog([entry("P-1")]))] == ["P-1"]


def test_out_of_stock_variant_is_replaced_by_an_in_stock_one():
    catalog = Catalog(
        [entry("TEE", "S", in_stock=False), entry("TEE", "M", in_stock=True), entry("TEE", "L", in_stock=False)]
    )
    items = recently_viewed([view(1, "TEE", "S")], catalog)
    assert [(i.sku, i.variant) for i in items] == [("TEE", "M")]


def test_viewed_variant_is_kept_when_in_stock():
    catalog = Catalog([entry("TEE", "S"), entry("TEE", "M")])
    assert recently_viewed([view(1, "TEE", "M")], catalog)[0].variant == "M"


def test_sold_out_product_is_left_out_and_does_not_use_up_a_slot():
    catalog = Catalog(
        [
            entry("A"),
            entry("GONE", "30 ml", in_stock=False),
            entry("GONE", "50 ml", in_stock=False),
            entry("B"),
            entry("C"),
        ]
    )
    events = [view(1, "A"), view(2, "B"), view(3, "C"), view(4, "GONE", "30 ml")]
    assert [i.sku for i in recently_viewed(events, catalog)] == ["C", "B", "A"]


def test_unknown_products_are_not_recommended():
    assert recently_viewed([view(1, "NOT-IN-CATALOG")], Catalog()) == []


def test_catalog_data_wins_and_the_event_fills_gaps():
    catalog = Catalog([CatalogEntry(sku="A", name="Catalog name", price=30.0, image_url=None)])
    item = recently_viewed([view(1, "A", name="Event name", price=99, image_url="https://cdn/a.jpg")], catalog)[0]
    assert (item.name, item.price, item.image_url) == ("Catalog name", 30.0, "https://cdn/a.jpg")


def test_category_anchor_is_the_most_viewed_category():
    events = [
        view(1, "A", category="serums"),
        view(2, "B", category="sensitive skin"),
        ev("Collection Viewed", 3, category="sensitive skin"),
        view(4, "C", category="serums"),
        view(5, "D", category="sensitive skin"),
    ]
    assert category_anchor(events) == "sensitive skin"


def test_category_anchor_tie_goes_to_the_most_recent():
    events = [view(1, "A", category="serums"), view(2, "B", category="masks")]
    assert category_anchor(events) == "masks"


def test_category_anchor_falls_back_to_the_catalog_and_ignores_other_events():
    catalog = Catalog([entry("A", category="cleansers")])
    events = [view(1, "A"), view(2, "A"), ev("Order Completed", 3, category="gift cards")]
    assert category_anchor(events, catalog) == "cleansers"
    assert category_anchor([ev("Identify", 1)]) is None


def test_category_picks_are_in_stock_ranked_and_exclude_what_is_shown():
    catalog = Catalog(
        [
            entry("A", category="serums", bestseller_rank=3),
            entry("B", category="serums", bestseller_rank=1),
            entry("C", category="serums", in_stock=False, bestseller_rank=2),
            entry("D", category="serums"),
            entry("E", category="masks", bestseller_rank=1),
        ]
    )
    assert [i.sku for i in category_picks(catalog, "serums")] == ["B", "A", "D"]
    assert [i.sku for i in category_picks(catalog, "serums", exclude={"B"})] == ["A", "D"]


def test_bestsellers_only_ranked_in_stock_products():
    catalog = Catalog(
        [
            entry("A", bestseller_rank=2),
            entry("B"),
            entry("C", bestseller_rank=1, in_stock=False),
            entry("D", bestseller_rank=3),
        ]
    )
    assert [i.sku for i in bestsellers(catalog)] == ["A", "D"]


def test_without_admin_ranks_the_bestsellers_are_what_sells():
    catalog = Catalog(
        [entry("ONCE", orders=1), entry("TWICE", orders=2), entry("NEVER"), entry("SOLD-OUT", orders=9, in_stock=False)]
    )
    assert [i.sku for i in bestsellers(catalog)] == ["TWICE", "ONCE"]


def test_admin_ranks_win_over_sales_and_sales_order_the_rest():
    catalog = Catalog(
        [
            entry("HOT", orders=9),
            entry("RANKED", bestseller_rank=1),
            entry("WARM", orders=3),
            entry("S1", category="serums", orders=1),
            entry("S2", category="serums", orders=4),
            entry("S3", category="serums", bestseller_rank=7),
        ]
    )
    assert [i.sku for i in bestsellers(catalog, limit=10)] == ["RANKED", "S3", "HOT", "S2", "WARM", "S1"]
    assert [i.sku for i in category_picks(catalog, "serums")] == ["S3", "S2", "S1"]


def test_browse_with_nothing_in_stock_to_show_is_skipped_as_out_of_stock():
    catalog = Catalog([entry("GONE", in_stock=False), entry("HERE")])
    sold_out = [view(1, "GONE"), view(2, "NOT-IN-CATALOG")]
    shown = personalise("browse_recovery", sold_out, catalog)
    assert shown.items == []
    assert nothing_to_show("browse_recovery", shown, sold_out) == "out of stock: nothing they viewed is in stock"
    in_stock = [*sold_out, view(3, "HERE")]
    assert nothing_to_show("browse_recovery", personalise("browse_recovery", in_stock, catalog), in_stock) is None


def test_browse_without_any_product_viewed_is_skipped_not_counted_as_out_of_stock():
    quiz = [ev("Quiz Answered", 1, category="serums"), ev("Collection Viewed", 2, category="serums")]
    shown = personalise("browse_recovery", quiz, Catalog([entry("S", category="serums", bestseller_rank=1)]))
    assert shown.picks and nothing_to_show("browse_recovery", shown, quiz) == "nothing to show: they viewed no product"


def test_cart_is_skipped_only_when_every_line_has_sold_out():
    events = [
        ev("Added to Cart", 1, cart_id="c", sku="A", price=20),
        ev("Added to Cart", 2, cart_id="c", sku="B", price=10),
    ]
    cart = open_cart(events)
    one_left = Catalog([entry("A", in_stock=False), entry("B")])
    assert nothing_to_show("cart_recovery", personalise("cart_recovery", events, one_left, cart), events) is None
    none_left = Catalog([entry("A", in_stock=False), entry("B", in_stock=False)])
    assert nothing_to_show("cart_recovery", personalise("cart_recovery", events, none_left, cart), events) == (
        "out of stock: every item in their cart has sold out"
    )


def test_welcome_always_has_something_to_say():
    assert nothing_to_show("welcome", personalise("welcome", [], Catalog()), []) is None


def test_welcome_without_browsing_falls_back_to_bestsellers():
    catalog = Catalog([entry("A", bestseller_rank=1), entry("B", bestseller_rank=2)])
    shown = personalise("welcome", [ev("Identify", 1)], catalog)
    assert shown.category is None and shown.items == []
    assert [i.sku for i in shown.picks] == ["A", "B"]


def test_welcome_with_browsing_picks_from_the_anchor_category():
    catalog = Catalog(
        [
            entry("A", bestseller_rank=1, category="masks"),
            entry("S1", category="serums"),
            entry("S2", category="serums", bestseller_rank=5),
        ]
    )
    shown = personalise("welcome", [view(1, "S1", category="serums")], catalog)
    assert shown.category == "serums"
    assert [i.sku for i in shown.picks] == ["S2"]  # S1 is already shown as recently viewed


def test_cart_lines_keep_the_cart_and_say_which_line_sold_out():
    events = [
        ev("Added to Cart", 1, cart_id="c", sku="A", variant="30 ml", price=20, quantity=2),
        ev("Added to Cart", 2, cart_id="c", sku="B", price=10),
    ]
    catalog = Catalog([entry("A", "30 ml", in_stock=False, image_url="https://cdn/a.jpg"), entry("B", url="/p/b")])
    lines = cart_lines(open_cart(events), catalog)
    assert [(l.sku, l.quantity, l.in_stock) for l in lines] == [("A", 2, False), ("B", 1, True)]
    assert lines[0].image_url == "https://cdn/a.jpg" and lines[1].url == "/p/b"
    shown = personalise("cart_recovery", events, catalog, open_cart(events))
    assert shown.cart_value == 50.0 and len(shown.items) == 2


SKUS = st.sampled_from([f"S{i}" for i in range(8)])
VARIANTS = st.sampled_from([None, "S", "M", "L"])


@settings(max_examples=200, deadline=None)
@given(
    views=st.lists(st.tuples(SKUS, VARIANTS), max_size=25),
    stock=st.dictionaries(st.tuples(SKUS, VARIANTS), st.booleans(), max_size=32),
)
def test_never_out_of_stock_never_more_than_three_never_repeated(views, stock):
    catalog = Catalog(entry(sku, variant, in_stock=ok) for (sku, variant), ok in stock.items())
    events = [view(i, sku, variant) for i, (sku, variant) in enumerate(views)]
    items = recently_viewed(events, catalog)
    assert len(items) <= 3
    assert len({i.sku for i in items}) == len(items)
    for item in items:
        assert stock[(item.sku, item.variant)] is True
    # Recency: items appear in the order of each product's latest view.
    latest = {sku: i for i, (sku, _) in enumerate(views)}
    assert [latest[i.sku] for i in items] == sorted((latest[i.sku] for i in items), reverse=True)
