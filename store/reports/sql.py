"""The SQL both reports are built from: the tables, the few expressions SQLite and PostgreSQL spell
differently (`Dialect`), the order/attribution/cohort CTEs and the figure formatting."""

from __future__ import annotations

import re
from typing import Any
from datetime import timedelta

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from journeys import taxonomy
from journeys.attribution import REVENUE_KEYS
from journeys.policy import JOURNEY_NAMES
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person, table_of
from store.reports.period import Period

EVENTS = table_of(Event)
PEOPLE = table_of(Person)
IDENTIFIERS = table_of(Identifier)
MESSAGES = table_of(Message)
RUNS = table_of(JourneyRun)
LOG = table_of(JourneyLog)

DAY = 86400.0


class Dialect:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pg = name == "postgresql"

    def epoch(self, column) -> ColumnElement:
        """Seconds since 1970 as a float: time arithmetic that works on both stores."""
        if self.pg:
            return cast(extract("epoch", column), Float)
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): whole seconds from strftime, the fraction
        # read from the text — exact to the microsecond like PostgreSQL (julianday() keeps only
        # milliseconds, and its float arithmetic makes 60 s come out as 59.99999).
        # (strftime alone would round .9996 s up into the next second, hence the first 19 characters.)
        return cast(func.strftime("%s", func.substr(column, 1, 19)), Float) + cast(func.substr(column, 20), Float)

    def json_number(self, column, key: str) -> ColumnElement:
        """`column->key` when it is a JSON number, else NULL (strings and booleans are not money)."""
        assert re.fullmatch(r"[a-z_]+", key)  # keys are ours, never user input
        if self.pg:
            return case(
                (
                    func.jsonb_typeof(column.op("->")(literal_column(f"'{key}'"))) == "number",
                    cast(column.op("->>")(literal_column(f"'{key}'")), Float),
                ),
                else_=None,
            )
        path: ColumnElement[Any] = literal_column(f"'$.{key}'")
        return case(
            (func.json_type(column, path).in_(("integer", "real")), cast(func.json_extract(column, path), Float)),
            else_=None,
        )

    def day(self, column) -> ColumnElement:
        """The UTC calendar day, as 'YYYY-MM-DD'."""
        if self.pg:
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC

    def json_elements_numbered(self, column):
        """The elements of a JSON array of strings (a table with a `value` column), and a condition
        true on each array's first element and on the NULL row an outer join gives for an empty
        array — so an outer join can still count each event once."""
        if self.pg:
            elements = func.jsonb_array_elements_text(column).table_valued("value", with_ordinality="ordinality")
            return elements, or_(elements.c.ordinality.is_(None), elements.c.ordinality == 1)
        elements = func.json_each(column).table_valued("value", "key")
        return elements, or_(elements.c.key.is_(None), elements.c.key == 0)

    def json_length(self, column) -> ColumnElement:
        return func.jsonb_array_length(column) if self.pg else func.json_array_length(column)

    def percentiles(self, values, column: str, fractions: tuple[float, ...], extra=lambda columns: []):
        """One statement: percentile_cont of `values.c[column]` for each fraction, then the
        aggregates `extra(columns)` builds over the same rows. PostgreSQL has the aggregate; on
        SQLite the same linear interpolation is read from a ranked window."""
        if self.pg:
            return select(
                *(func.percentile_cont(p).within_group(values.c[column]) for p in fractions), *extra(values.c)
            )
        ranked = select(
            values,
            (func.row_number().over(order_by=values.c[column]) - 1).label("rank_"),
            func.count().over().label("n_"),
        ).subquery("ranked")
        x = ranked.c[column]
        picks = []
        for p in fractions:
            pos = literal(p, Float) * (ranked.c.n_ - 1)
            lo = cast(pos, Integer)
            frac = pos - lo
            picks.append(
                func.sum(case((ranked.c.rank_ == lo, x * (1 - frac)), else_=0.0))
                + func.sum(case((and_(ranked.c.rank_ == lo + 1, frac > 0), x * frac), else_=0.0))
            )
        return select(*picks, *extra(ranked.c)).select_from(ranked)


# --------------------------------------------------------------------------------------------------
# Building blocks


class connection:
    """Use a given Connection as is, or open (and close) one from an Engine."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind: Engine | Connection = bind
        self.conn: Connection | None = None

    def __enter__(self) -> Connection:
        if isinstance(self.bind, Connection):
            return self.bind
        conn = self.conn = self.bind.connect()
        if conn.dialect.name == "postgresql":
            # These statements run in tens to hundreds of milliseconds; PostgreSQL's JIT, triggered by
            # row estimates on joined aggregates, spends seconds compiling them. Off for this
            # (read-only) transaction only.
            conn.exec_driver_sql("SET LOCAL jit = off")
        return conn

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            self.conn.close()


def order_revenue(d: Dialect, properties) -> ColumnElement:
    return func.coalesce(*(d.json_number(properties, key) for key in REVENUE_KEYS))


def orders_cte(d: Dialect, period: Period):
    """Orders in the period: one row per order, the other copy (client/server), repeats and orders
    the shop cancelled (an `Order Cancelled` naming its order_id, e.g. Shopify's `orders/cancelled`)
    left out — so a cancellation takes the order's revenue out of every figure built on them."""
    cancellations = aliased(EVENTS, name="cancellations")
    cancelled = select(cancellations.c.id).where(
        cancellations.c.name == taxonomy.ORDER_CANCELLED, cancellations.c.order_id == EVENTS.c.order_id
    )
    order_key = func.coalesce(EVENTS.c.order_id, EVENTS.c.message_id)
    ranked = select(
        EVENTS.c.person_id,
        EVENTS.c.timestamp.label("ordered_at"),
        order_key.label("order_key"),
        EVENTS.c.cart_id,
        order_revenue(d, EVENTS.c.properties).label("revenue"),
        func.row_number().over(partition_by=order_key, order_by=(EVENTS.c.timestamp, EVENTS.c.id)).label("rn"),
    ).where(
        EVENTS.c.name == taxonomy.ORDER_COMPLETED,
        EVENTS.c.duplicate_of.is_(None),
        ~cancelled.exists(),
    )
    orders = ranked.subquery("ranked_orders")
    # Ranked over all time, then placed in the period: a repeat of an order from before the period
    # is not a new order in it (and the roll-ups, per day, can count each order once).
    return (
        select(orders.c.person_id, orders.c.ordered_at, orders.c.order_key, orders.c.cart_id, orders.c.revenue)
        .where(orders.c.rn == 1, *period.where(orders.c.ordered_at))
        .cte("orders")
    )


def attributed_cte(d: Dialect, period: Period, window: timedelta):
    """Every order of the period with its last touch (NULL journey when none in the window)."""
    orders = orders_cte(d, period)
    m = MESSAGES
    touch = and_(
        m.c.person_id == orders.c.person_id,
        m.c.status == "sent",
        m.c.sent_at.is_not(None),
        d.epoch(m.c.sent_at) <= d.epoch(orders.c.ordered_at),
        d.epoch(m.c.sent_at) >= d.epoch(orders.c.ordered_at) - window.total_seconds(),
    )
    ranked = (
        select(
            orders.c.order_key,
            orders.c.person_id,
            orders.c.ordered_at,
            orders.c.revenue,
            m.c.journey,
            m.c.step,
            m.c.id.label("message_id"),
            func.row_number()
            .over(partition_by=orders.c.order_key, order_by=(m.c.sent_at.desc(), m.c.step.desc(), m.c.id.desc()))
            .label("rn"),
        )
        .select_from(orders.outerjoin(m, touch))
        .subquery("touches")
    )
    return (
        select(
            ranked.c.order_key,
            ranked.c.person_id,
            ranked.c.ordered_at,
            ranked.c.revenue,
            ranked.c.journey,
            ranked.c.step,
            ranked.c.message_id,
        )
        .where(ranked.c.rn == 1)
        .cte("attributed")
    )


def cohort_cte(period: Period):
    return (
        select(PEOPLE.c.id.label("person_id"), PEOPLE.c.identified_at)
        .where(*period.where(PEOPLE.c.identified_at))
        .cte("cohort")
    )


def first_orders_cte():
    """Each person's first order ever (not only inside the period). Orders are few and found
    through the name index; the cohort join comes after (filtering by cohort first would walk
    every event of every person)."""
    return first_event_cte("first_orders", (taxonomy.ORDER_COMPLETED,))


def materialized(cte):
    """`WITH x AS MATERIALIZED (…)`: evaluate the (small, index-found) set once, first. Without it
    SQLite flattens the CTE and, to save a sort in the GROUP BY after it, walks a whole index in
    the group's order, looking every event up."""
    return cte.prefix_with("MATERIALIZED")


def first_event_cte(name: str, events: tuple[str, ...]):
    e = EVENTS
    found = materialized(
        select(e.c.person_id, e.c.timestamp)
        .where(
            e.c.name == events[0] if len(events) == 1 else e.c.name.in_(events),
            e.c.duplicate_of.is_(None),
            e.c.person_id.is_not(None),
        )
        .cte(f"{name}_events")
    )
    return (
        select(found.c.person_id, func.min(found.c.timestamp).label("first_at")).group_by(found.c.person_id).cte(name)
    )


def never_identified_devices(period: Period):
    """Anonymous ids with events in the period that no identify ever claimed. Walks the partial
    index of unowned events (covering: anonymous_id, timestamp) and probes the identifiers."""
    e, i = EVENTS, IDENTIFIERS
    devices = (
        select(e.c.anonymous_id)
        .where(e.c.person_id.is_(None), e.c.anonymous_id.is_not(None), *period.where(e.c.timestamp))
        .group_by(e.c.anonymous_id)
        .subquery("unowned_devices")
    )
    claimed = select(i.c.value).where(i.c.kind == "anonymous_id", i.c.value == devices.c.anonymous_id)
    return select(func.count()).select_from(devices).where(~claimed.exists())


def reason_category(column) -> ColumnElement:
    """Group free-text skip/exit/wait reasons (journey_log, messages) into the few that matter."""
    low = func.lower(column)
    return case(
        (low.like("frequency cap%"), "frequency cap"),
        (low.like("quiet hours%"), "quiet hours"),
        (low.like("purchased%"), "purchased"),
        (low.like("%unsubscribed%"), "unsubscribed"),
        (low.like("%no sms consent%"), "no SMS consent"),
        (low.like("%suppressed%"), "suppressed"),
        (low.like("%out of stock%"), "out of stock"),
        (low.like("cart no longer open%"), "cart closed"),
        (low.like("%already had its recovery%"), "cart already recovered"),
        (low.like("re-routed%"), "re-routed"),
        (
            or_(low.like("person deleted%"), low.like("person erased%"), low.like("person no longer exists%")),
            "person deleted",
        ),
        (low.like("no address%"), "no address"),
        else_=None,
    )


def message_reason(m) -> ColumnElement:
    """A message's line in "messages by reason": "sent", else its failure's category (or the
    reason's first 80 characters)."""
    failed = func.coalesce(reason_category(m.c.reason), func.substr(func.coalesce(m.c.reason, "unknown"), 1, 80))
    return case((m.c.status == "sent", "sent"), else_=failed)


def journey_order(name: str) -> tuple:
    return (JOURNEY_NAMES.index(name) if name in JOURNEY_NAMES else len(JOURNEY_NAMES), name)


def ratio(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 4) if whole else None


def as_money(value) -> float:
    return round(float(value or 0.0), 2)


def as_int(value) -> int:
    return int(value or 0)
