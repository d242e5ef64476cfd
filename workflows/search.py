"""Search attributes that make journeys findable in the Temporal UI. No email or phone ever goes here."""

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

PERSON_ID = SearchAttributeKey.for_keyword("BreadcrumbPersonId")
ROUTE = SearchAttributeKey.for_keyword("BreadcrumbRoute")
STATUS = SearchAttributeKey.for_keyword("BreadcrumbStatus")
CART_VALUE = SearchAttributeKey.for_float("BreadcrumbCartValue")

ALL = (PERSON_ID, ROUTE, STATUS, CART_VALUE)


def attributes(
    person_id: str, route: str | None = None, status: str | None = None, cart_value: float | None = None
) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair[Any]] = [SearchAttributePair(PERSON_ID, person_id)]
    if route:
        pairs.append(SearchAttributePair(ROUTE, route))
    if status:
        pairs.append(SearchAttributePair(STATUS, status))
    if cart_value is not None:
        pairs.append(SearchAttributePair(CART_VALUE, float(cart_value)))
    return TypedSearchAttributes(pairs)
