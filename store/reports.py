"""Reports: did the journeys make money, and is the tracking healthy?

Every figure is computed by set-based SQL (SQLAlchemy Core, the same statements on SQLite and
PostgreSQL): the database joins and aggregates; Python only reshapes the handful of aggregate rows
that come back (one per route, per journey step and day, per reason…). No query returns events.

Definitions (the README's "Reports" section says the same in prose):

- **Period** `[since, until)`: people by `identified_at`, orders and events by `timestamp`,
  messages by `sent_at` (failed/pending ones by `created_at`), journey log lines by `at`.
  Both ends are optional (open).
- **Orders**: `Order Completed` events that are not the other copy of one already stored
  (`duplicate_of IS NULL`), one per `order_id` (the event's message id when it has none);
  revenue from `revenue`, else `total`, else `value` (the first that is a number).
- **Attribution** (`journeys/attribution.py`): last touch — the last `sent` message to the person
  within `attribution_window` before the order; ties go to the later step.
- **First-purchase conversion**: the cohort is the people identified in the period; a person
  converted when their first order ever came at or after their identify and within N days of it.
  People whose first order came *before* they identified (already customers) are left out of
  the rates and counted separately. A person's route is the most urgent journey they were routed
  to before converting (or within the N days): cart_recovery > browse_recovery > welcome >
  control > none; people the hub never routed are "unrouted". Control is the holdout
  (`holdout_percent`): lift = journey rate − control rate.
- **Revenue per recipient**: attributed revenue of the period's orders / distinct people sent a
  message of that journey (step) in the period.
- **Cart recovery rate**: carts (person, cart_id) sent a cart_recovery message in the period,
  recovered when an order came after the first such message and either carries the cart's
  cart_id or is the same person's inside the attribution window after the last one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import (Connection, Engine, Float, Integer, and_, case, cast, exists, extract, func, literal, literal_column,
                        or_, select, true)
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from journeys import taxonomy
from journeys.attribution import REVENUE_KEYS, revenue_per_recipient
from journeys.history import as_utc
from journeys.policy import Policy, parse_duration
from store.models import Event, Identifier, JourneyLog, JourneyRun, Message, Person

EVENTS = Event.__table__
PEOPLE = Person.__table__
IDENTIFIERS = Identifier.__table__
MESSAGES = Message.__table__
RUNS = JourneyRun.__table__
LOG = JourneyLog.__table__

DAY = 86400.0
DEFAULT_CONVERSION_DAYS = 14
ROUTES = ("cart_recovery", "browse_recovery", "welcome", "none", "control")
JOURNEYS = ("cart_recovery", "browse_recovery", "welcome")
# Most urgent first; a person's route in the conversion report is the highest one they reached.
ROUTE_PRIORITY = {"cart_recovery": 5, "browse_recovery": 4, "welcome": 3, "control": 2, "none": 1}
# An identify this soon after the shopper's first checkout/order still counts as "at checkout".
CHECKOUT_GRACE = timedelta(minutes=5)
MANY_ANONYMOUS_IDS = 3
# Identify-lateness histogram: upper bounds in seconds (the last bucket is open).
LATENESS_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("< 1 min", 60.0), ("1–10 min", 600.0), ("10–60 min", 3600.0), ("1–6 h", 6 * 3600.0),
    ("6–24 h", DAY), ("1–3 d", 3 * DAY), ("3–7 d", 7 * DAY), ("7–30 d", 30 * DAY), ("≥ 30 d", None),
)


# --------------------------------------------------------------------------------------------------
# Period


@dataclass(frozen=True)
class Period:
    since: datetime | None = None
    until: datetime | None = None

    def where(self, column) -> list[ColumnElement]:
        conditions = []
        if self.since is not None:
            conditions.append(column >= self.since)
        if self.until is not None:
            conditions.append(column < self.until)
        return conditions

    def as_dict(self) -> dict:
        return {"since": _iso(self.since), "until": _iso(self.until)}


_RELATIVE = re.compile(r"^\s*\d+(\.\d+)?\s*[dhms]", re.IGNORECASE)


def parse_moment(value: str | datetime | date | None, *, end: bool = False, now: datetime | None = None) -> datetime | None:
    """A period bound: ISO date (`2025-03-01`; as `until` it includes that whole day), ISO datetime
    (naive = UTC), or a duration before now (`30d`, `12h`). Raises ValueError naming the value."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        day = datetime.combine(value, time(0), tzinfo=timezone.utc)
        return day + timedelta(days=1) if end else day
    text = str(value).strip()
    if _RELATIVE.match(text):
        return as_utc(now or datetime.now(timezone.utc)) - parse_duration(text)
    try:
        if len(text) == 10:
            return parse_moment(date.fromisoformat(text), end=end)
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"{value!r} is not a date (2025-03-01), a datetime (2025-03-01T12:00:00Z) "
                         f"or a duration before now (30d)") from None


def make_period(since: str | datetime | date | None = None, until: str | datetime | date | None = None,
                now: datetime | None = None) -> Period:
    period = Period(parse_moment(since, now=now), parse_moment(until, end=True, now=now))
    if period.since and period.until and period.since >= period.until:
        raise ValueError("since must be before until")
    return period


# --------------------------------------------------------------------------------------------------
# The few expressions SQLite and PostgreSQL spell differently


class Dialect:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pg = name == "postgresql"

    def epoch(self, column) -> ColumnElement:
        """Seconds since 1970 as a float: time arithmetic that works on both stores."""
        if self.pg:
            return cast(extract("epoch", column), Float)
        # julianday() counts whole milliseconds internally; rounding to them removes the float noise
        # (so an identify exactly 60 s after the first event is 60.0 s, not 59.99999).
        return func.round((func.julianday(column) - 2440587.5) * DAY, 3)

    def json_number(self, column, key: str) -> ColumnElement:
        """`column->key` when it is a JSON number, else NULL (strings and booleans are not money)."""
        assert re.fullmatch(r"[a-z_]+", key)  # keys are ours, never user input
        if self.pg:
            return case((func.jsonb_typeof(column.op("->")(literal_column(f"'{key}'"))) == "number",
                         cast(column.op("->>")(literal_column(f"'{key}'")), Float)), else_=None)
        path = literal_column(f"'$.{key}'")
        return case((func.json_type(column, path).in_(("integer", "real")), cast(func.json_extract(column, path), Float)),
                    else_=None)

    def day(self, column) -> ColumnElement:
        """The UTC calendar day, as 'YYYY-MM-DD'."""
        if self.pg:
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC

    def json_elements(self, column):
        """The elements of a JSON array of strings, as a table with a `value` column."""
        if self.pg:
            return func.jsonb_array_elements_text(column).table_valued("value")
        return func.json_each(column).table_valued("value")

    def json_length(self, column) -> ColumnElement:
        return func.jsonb_array_length(column) if self.pg else func.json_array_length(column)

    def percentiles(self, values, column: str, fractions: tuple[float, ...]) -> tuple:
        """percentile_cont of `values.c[column]` for each fraction: PostgreSQL's own aggregate,
        and on SQLite the same linear interpolation from a ranked window (still one statement)."""
        if self.pg:
            return select(*(func.percentile_cont(p).within_group(values.c[column]) for p in fractions))
        ranked = select(
            values.c[column].label("x"),
            (func.row_number().over(order_by=values.c[column]) - 1).label("i"),
            func.count().over().label("n"),
        ).subquery("ranked")
        picks = []
        for p in fractions:
            pos = literal(p, Float) * (ranked.c.n - 1)
            lo = cast(pos, Integer)
            frac = pos - lo
            picks.append(
                func.sum(case((ranked.c.i == lo, ranked.c.x * (1 - frac)), else_=0.0))
                + func.sum(case((and_(ranked.c.i == lo + 1, frac > 0), ranked.c.x * frac), else_=0.0))
            )
        return select(*picks).select_from(ranked).where(ranked.c.n > 0)


# --------------------------------------------------------------------------------------------------
# Building blocks


def _revenue(d: Dialect, properties) -> ColumnElement:
    return func.coalesce(*(d.json_number(properties, key) for key in REVENUE_KEYS))


def orders_cte(d: Dialect, period: Period):
    """Orders in the period: one row per order, the other copy (client/server) and repeats left out."""
    order_key = func.coalesce(EVENTS.c.order_id, EVENTS.c.message_id)
    ranked = select(
        EVENTS.c.person_id,
        EVENTS.c.timestamp.label("ordered_at"),
        order_key.label("order_key"),
        EVENTS.c.cart_id,
        _revenue(d, EVENTS.c.properties).label("revenue"),
        func.row_number().over(partition_by=order_key, order_by=(EVENTS.c.timestamp, EVENTS.c.id)).label("rn"),
    ).where(EVENTS.c.name == taxonomy.ORDER_COMPLETED, EVENTS.c.duplicate_of.is_(None), *period.where(EVENTS.c.timestamp))
    ranked = ranked.subquery("ranked_orders")
    return select(ranked.c.person_id, ranked.c.ordered_at, ranked.c.order_key, ranked.c.cart_id,
                  ranked.c.revenue).where(ranked.c.rn == 1).cte("orders")


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
    ranked = select(
        orders.c.order_key, orders.c.person_id, orders.c.ordered_at, orders.c.revenue,
        m.c.journey, m.c.step, m.c.id.label("message_id"),
        func.row_number().over(partition_by=orders.c.order_key,
                               order_by=(m.c.sent_at.desc(), m.c.step.desc(), m.c.id.desc())).label("rn"),
    ).select_from(orders.outerjoin(m, touch)).subquery("touches")
    return select(ranked.c.order_key, ranked.c.person_id, ranked.c.ordered_at, ranked.c.revenue, ranked.c.journey,
                  ranked.c.step, ranked.c.message_id).where(ranked.c.rn == 1).cte("attributed")


def cohort_cte(period: Period):
    return select(PEOPLE.c.id.label("person_id"), PEOPLE.c.identified_at).where(
        *period.where(PEOPLE.c.identified_at)).cte("cohort")


def first_orders_cte(cohort):
    """Each cohort person's first order ever (not only inside the period)."""
    return (
        select(EVENTS.c.person_id, func.min(EVENTS.c.timestamp).label("first_at"))
        .where(EVENTS.c.name == taxonomy.ORDER_COMPLETED, EVENTS.c.duplicate_of.is_(None),
               EVENTS.c.person_id.in_(select(cohort.c.person_id)))
        .group_by(EVENTS.c.person_id)
        .cte("first_orders")
    )


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
        (or_(low.like("person deleted%"), low.like("person erased%"), low.like("person no longer exists%")),
         "person deleted"),
        (low.like("no address%"), "no address"),
        else_=None,
    )


def _journey_order(name: str) -> tuple:
    return (JOURNEYS.index(name) if name in JOURNEYS else len(JOURNEYS), name)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def _rate(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(value) -> float:
    return round(float(value or 0.0), 2)


def _int(value) -> int:
    return int(value or 0)


# --------------------------------------------------------------------------------------------------
# Journey report


def summary(engine: Engine | Connection, policy: Policy, period: Period = Period(),
            conversion_days: int = DEFAULT_CONVERSION_DAYS, now: datetime | None = None) -> dict:
    """The journey report: conversion (with holdout lift), revenue per recipient, cart recovery,
    messages by reason, the funnel and daily attributed revenue."""
    if conversion_days < 1:
        raise ValueError("conversion_days must be at least 1")
    now = as_utc(now or datetime.now(timezone.utc))
    with _connection(engine) as conn:
        d = Dialect(conn.dialect.name)
        window = policy.attribution_window
        return {
            "period": period.as_dict(),
            "generated_at": now.isoformat(),
            "settings": {
                "conversion_days": conversion_days,
                "attribution_window_hours": round(window.total_seconds() / 3600, 4),
                "holdout_percent": policy.holdout_percent,
            },
            "conversion": conversion(conn, d, period, conversion_days, now),
            "revenue": revenue(conn, d, period, window),
            "cart_recovery": cart_recovery(conn, d, period, window),
            "messages": messages_by_reason(conn, d, period),
            "funnel": funnel(conn, d, period, conversion_days),
        }


class _connection:
    """Use a given Connection as is, or open (and close) one from an Engine."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind, self.conn = bind, None

    def __enter__(self) -> Connection:
        if isinstance(self.bind, Connection):
            return self.bind
        self.conn = self.bind.connect()
        return self.conn

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            self.conn.close()


def _route_of_person(d: Dialect, cohort, first_orders, conversion_days: int):
    """Each cohort person's most urgent route before their first order (within the N days); for
    people who had bought before identifying, whatever they were routed to (usually "none")."""
    r = RUNS
    priority = case(*((r.c.route == route, rank) for route, rank in ROUTE_PRIORITY.items()), else_=0)
    return (
        select(r.c.person_id, func.max(priority).label("priority"))
        .select_from(r.join(cohort, cohort.c.person_id == r.c.person_id)
                     .outerjoin(first_orders, first_orders.c.person_id == r.c.person_id))
        .where(or_(first_orders.c.first_at.is_(None), first_orders.c.first_at < cohort.c.identified_at,
                   r.c.started_at <= first_orders.c.first_at),
               d.epoch(r.c.started_at) <= d.epoch(cohort.c.identified_at) + conversion_days * DAY)
        .group_by(r.c.person_id)
        .cte("routes")
    )


def conversion(conn: Connection, d: Dialect, period: Period, conversion_days: int, now: datetime) -> dict:
    cohort = cohort_cte(period)
    first = first_orders_cte(cohort)
    routes = _route_of_person(d, cohort, first, conversion_days)
    horizon = d.epoch(cohort.c.identified_at) + conversion_days * DAY
    prior = and_(first.c.first_at.is_not(None), first.c.first_at < cohort.c.identified_at)
    converted = and_(first.c.first_at >= cohort.c.identified_at, d.epoch(first.c.first_at) <= horizon)
    open_window = and_(first.c.first_at.is_(None), horizon > now.timestamp())
    route = case(*((routes.c.priority == rank, route) for route, rank in ROUTE_PRIORITY.items()), else_="unrouted")
    rows = conn.execute(
        select(
            route.label("route"),
            func.count().label("identified"),
            func.sum(case((prior, 1), else_=0)).label("prior"),
            func.sum(case((converted, 1), else_=0)).label("converted"),
            func.sum(case((open_window, 1), else_=0)).label("open"),
        )
        .select_from(cohort.outerjoin(first, first.c.person_id == cohort.c.person_id)
                     .outerjoin(routes, routes.c.person_id == cohort.c.person_id))
        .group_by(route)
    ).all()
    found = {row.route: row for row in rows}
    by_route = []
    for name in (*ROUTES, *sorted(set(found) - set(ROUTES))):
        row = found.get(name)
        people = _int(row.identified) - _int(row.prior) if row else 0
        converted_n = _int(row.converted) if row else 0
        by_route.append({"route": name, "people": people, "converted": converted_n, "rate": _rate(converted_n, people),
                         "prior_purchasers": _int(row.prior) if row else 0})
    people = sum(r["people"] for r in by_route)
    converted_total = sum(r["converted"] for r in by_route)
    by_name = {r["route"]: r for r in by_route}
    treated_people = sum(by_name[j]["people"] for j in JOURNEYS)
    treated_converted = sum(by_name[j]["converted"] for j in JOURNEYS)
    control = by_name["control"]
    holdout = None
    if control["people"]:
        treated_rate, control_rate = _rate(treated_converted, treated_people), control["rate"]
        exact_treated = treated_converted / treated_people if treated_people else None
        exact_control = control["converted"] / control["people"]
        holdout = {
            "control_people": control["people"],
            "control_converted": control["converted"],
            "control_rate": control_rate,
            "journey_people": treated_people,
            "journey_converted": treated_converted,
            "journey_rate": treated_rate,
            "lift_points": round(exact_treated - exact_control, 4) if exact_treated is not None else None,
            "lift_relative": (round(exact_treated / exact_control - 1, 4)
                              if exact_treated is not None and exact_control else None),
        }
    return {
        "days": conversion_days,
        "identified": sum(_int(r.identified) for r in rows),
        "people": people,
        "converted": converted_total,
        "rate": _rate(converted_total, people),
        "prior_purchasers": sum(_int(r.prior) for r in rows),
        "still_in_window": sum(_int(r.open) for r in rows),
        "by_route": by_route,
        "holdout": holdout,
    }


def revenue(conn: Connection, d: Dialect, period: Period, window: timedelta) -> dict:
    attributed = attributed_cte(d, period, window)
    day = d.day(attributed.c.ordered_at)
    rows = conn.execute(
        select(day.label("day"), attributed.c.journey, attributed.c.step,
               func.count().label("orders"), func.sum(attributed.c.revenue).label("revenue"),
               func.sum(case((attributed.c.revenue.is_(None), 1), else_=0)).label("without_value"))
        .group_by(day, attributed.c.journey, attributed.c.step)
    ).all()
    sent = MESSAGES.c.status == "sent"
    recipients_rows = conn.execute(
        select(MESSAGES.c.journey, MESSAGES.c.step, func.count(func.distinct(MESSAGES.c.person_id)).label("people"))
        .where(sent, *period.where(MESSAGES.c.sent_at))
        .group_by(MESSAGES.c.journey, MESSAGES.c.step)
    ).all()
    journey_recipients = dict(conn.execute(
        select(MESSAGES.c.journey, func.count(func.distinct(MESSAGES.c.person_id)))
        .where(sent, *period.where(MESSAGES.c.sent_at))
        .group_by(MESSAGES.c.journey)
    ).all())
    recipients = conn.execute(
        select(func.count(func.distinct(MESSAGES.c.person_id))).where(sent, *period.where(MESSAGES.c.sent_at))
    ).scalar_one()

    per_journey: dict[str, list] = {}
    per_step: dict[tuple[str, int], list] = {}
    daily: dict[tuple[str, str], list] = {}
    totals = [0, 0.0, 0]
    for row in rows:
        revenue_value = float(row.revenue or 0.0)
        totals[0] += row.orders
        totals[1] += revenue_value
        totals[2] += _int(row.without_value)
        if row.journey is None:
            continue
        for bucket, key in ((per_journey, row.journey), (per_step, (row.journey, row.step)), (daily, (row.day, row.journey))):
            held = bucket.setdefault(key, [0, 0.0])
            held[0] += row.orders
            held[1] += revenue_value
    step_recipients = {(r.journey, r.step): r.people for r in recipients_rows}

    journeys = sorted(set(JOURNEYS) | set(journey_recipients) | set(per_journey), key=_journey_order)
    by_journey = []
    for name in journeys:
        orders, money = per_journey.get(name, [0, 0.0])
        people = _int(journey_recipients.get(name))
        by_journey.append({"journey": name, "recipients": people, "orders": orders, "revenue": _money(money),
                           "revenue_per_recipient": revenue_per_recipient(money, people)})
    by_step = []
    for key in sorted(set(step_recipients) | set(per_step), key=lambda k: (_journey_order(k[0]), k[1])):
        orders, money = per_step.get(key, [0, 0.0])
        people = _int(step_recipients.get(key))
        by_step.append({"journey": key[0], "step": key[1], "recipients": people, "orders": orders,
                        "revenue": _money(money), "revenue_per_recipient": revenue_per_recipient(money, people)})
    attributed_orders = sum(v[0] for v in per_journey.values())
    attributed_revenue = sum(v[1] for v in per_journey.values())
    return {
        "orders": totals[0],
        "revenue": _money(totals[1]),
        "orders_without_value": totals[2],
        "attributed_orders": attributed_orders,
        "attributed_revenue": _money(attributed_revenue),
        "recipients": _int(recipients),
        "revenue_per_recipient": revenue_per_recipient(attributed_revenue, _int(recipients)),
        "by_journey": by_journey,
        "by_step": by_step,
        "daily": [{"day": day_, "journey": journey, "orders": v[0], "revenue": _money(v[1])}
                  for (day_, journey), v in sorted(daily.items())],
    }


def cart_recovery(conn: Connection, d: Dialect, period: Period, window: timedelta) -> dict:
    m = MESSAGES
    carts = (
        select(m.c.person_id, m.c.cart_id, func.min(m.c.sent_at).label("first_sent"),
               func.max(m.c.sent_at).label("last_sent"))
        .where(m.c.journey == "cart_recovery", m.c.status == "sent", *period.where(m.c.sent_at))
        .group_by(m.c.person_id, m.c.cart_id)
        .cte("carts")
    )
    by_cart_order, by_person_order = aliased(EVENTS), aliased(EVENTS)
    by_cart = exists().where(
        by_cart_order.c.cart_id == carts.c.cart_id,
        by_cart_order.c.name == taxonomy.ORDER_COMPLETED,
        by_cart_order.c.duplicate_of.is_(None),
        by_cart_order.c.timestamp >= carts.c.first_sent,
    )
    by_person = exists().where(
        by_person_order.c.person_id == carts.c.person_id,
        by_person_order.c.name == taxonomy.ORDER_COMPLETED,
        by_person_order.c.duplicate_of.is_(None),
        by_person_order.c.timestamp >= carts.c.first_sent,
        d.epoch(by_person_order.c.timestamp) <= d.epoch(carts.c.last_sent) + window.total_seconds(),
    )
    row = conn.execute(
        select(func.count().label("carts"),
               func.sum(case((by_cart, 1), else_=0)).label("by_cart"),
               func.sum(case((or_(by_cart, by_person), 1), else_=0)).label("recovered"))
        .select_from(carts)
    ).one()
    carts_n, recovered = _int(row.carts), _int(row.recovered)
    return {"carts_messaged": carts_n, "carts_recovered": recovered, "rate": _rate(recovered, carts_n),
            "matched_by_cart_id": _int(row.by_cart), "matched_by_person": recovered - _int(row.by_cart)}


def messages_by_reason(conn: Connection, d: Dialect, period: Period) -> dict:
    m = MESSAGES
    when = case((m.c.status == "sent", m.c.sent_at), else_=m.c.created_at)
    failed_reason = func.coalesce(reason_category(m.c.reason), func.substr(func.coalesce(m.c.reason, "unknown"), 1, 80))
    reason = case((m.c.status == "sent", "sent"), else_=failed_reason)
    message_rows = conn.execute(
        select(m.c.status, m.c.journey, reason.label("reason"), func.count().label("n"))
        .where(*period.where(when))
        .group_by(m.c.status, m.c.journey, reason)
    ).all()
    log = LOG
    outcome = case((log.c.kind == "waiting", "deferred"), else_="skipped")
    log_reason = func.coalesce(reason_category(log.c.reason), "other")
    log_rows = conn.execute(
        select(outcome.label("outcome"), log.c.journey, log_reason.label("reason"), func.count().label("n"))
        .where(log.c.kind.in_(("waiting", "exit", "skipped")), *period.where(log.c.at))
        .group_by(outcome, log.c.journey, log_reason)
    ).all()
    by_reason = [{"outcome": r.status, "journey": r.journey, "reason": r.reason, "count": r.n} for r in message_rows]
    by_reason += [{"outcome": r.outcome, "journey": r.journey, "reason": r.reason, "count": r.n} for r in log_rows]
    order = {"sent": 0, "failed": 1, "pending": 2, "skipped": 3, "deferred": 4}
    by_reason.sort(key=lambda r: (order.get(r["outcome"], 9), -r["count"], r["journey"] or "", r["reason"] or ""))
    totals = {k: 0 for k in order}
    for r in by_reason:
        totals[r["outcome"]] = totals.get(r["outcome"], 0) + r["count"]
    return {**totals, "by_reason": by_reason}


def funnel(conn: Connection, d: Dialect, period: Period, conversion_days: int) -> list[dict]:
    # Devices seen in the period that never became anyone: with the people identified, the visitors.
    never_merged = (
        select(EVENTS.c.anonymous_id)
        .where(EVENTS.c.anonymous_id.is_not(None), *period.where(EVENTS.c.timestamp))
        .group_by(EVENTS.c.anonymous_id)
        .having(func.count(EVENTS.c.person_id) == 0)
        .subquery("never_merged")
    )
    anonymous = conn.execute(select(func.count()).select_from(never_merged)).scalar_one()
    cohort = cohort_cte(period)
    first = first_orders_cte(cohort)
    first_sent = (
        select(MESSAGES.c.person_id, func.min(MESSAGES.c.sent_at).label("first_sent"))
        .where(MESSAGES.c.status == "sent", MESSAGES.c.person_id.in_(select(cohort.c.person_id)))
        .group_by(MESSAGES.c.person_id)
        .cte("first_sent")
    )
    purchased = and_(
        first_sent.c.first_sent.is_not(None),
        first.c.first_at >= first_sent.c.first_sent,
        first.c.first_at >= cohort.c.identified_at,
        d.epoch(first.c.first_at) <= d.epoch(cohort.c.identified_at) + conversion_days * DAY,
    )
    row = conn.execute(
        select(func.count().label("identified"),
               func.sum(case((first_sent.c.first_sent.is_not(None), 1), else_=0)).label("messaged"),
               func.sum(case((purchased, 1), else_=0)).label("purchased"))
        .select_from(cohort.outerjoin(first, first.c.person_id == cohort.c.person_id)
                     .outerjoin(first_sent, first_sent.c.person_id == cohort.c.person_id))
    ).one()
    return [
        {"stage": "anonymous", "label": "visitors (people + never-identified devices)",
         "count": _int(row.identified) + _int(anonymous)},
        {"stage": "identified", "label": "identified people", "count": _int(row.identified)},
        {"stage": "messaged", "label": "sent a journey message", "count": _int(row.messaged)},
        {"stage": "purchased", "label": f"first order after a message (≤ {conversion_days} d)",
         "count": _int(row.purchased)},
    ]


# --------------------------------------------------------------------------------------------------
# Tracking-health report


def tracking(engine: Engine | Connection, policy: Policy, period: Period = Period(), now: datetime | None = None,
             many_ids: int = MANY_ANONYMOUS_IDS) -> dict:
    """Identify lateness, fragmented ids, missing recommended properties, duplicates caught and
    anonymous activity that never merged."""
    now = as_utc(now or datetime.now(timezone.utc))
    with _connection(engine) as conn:
        d = Dialect(conn.dialect.name)
        return {
            "period": period.as_dict(),
            "generated_at": now.isoformat(),
            "identify_lateness": identify_lateness(conn, d, period),
            "fragmented_ids": fragmented_ids(conn, d, period, many_ids),
            "missing_properties": missing_properties(conn, d, period),
            "duplicates": duplicates(conn, period),
            "unmerged": unmerged(conn, period, now - policy.merge_window),
        }


def identify_lateness(conn: Connection, d: Dialect, period: Period) -> dict:
    cohort = cohort_cte(period)
    e = EVENTS
    first_anonymous = (
        select(e.c.person_id, func.min(e.c.timestamp).label("first_at"))
        .select_from(e.join(cohort, cohort.c.person_id == e.c.person_id))
        .where(e.c.anonymous_id.is_not(None), e.c.type != "identify", e.c.timestamp < cohort.c.identified_at)
        .group_by(e.c.person_id)
        .subquery("first_anonymous")
    )
    lateness = (
        select(first_anonymous.c.person_id,
               (d.epoch(cohort.c.identified_at) - d.epoch(first_anonymous.c.first_at)).label("seconds"))
        .select_from(first_anonymous.join(cohort, cohort.c.person_id == first_anonymous.c.person_id))
        .cte("lateness")
    )
    median, p90 = conn.execute(d.percentiles(lateness, "seconds", (0.5, 0.9))).one_or_none() or (None, None)
    bucket_expr = case(*((lateness.c.seconds < upper, label) for label, upper in LATENESS_BUCKETS if upper is not None),
                       else_=LATENESS_BUCKETS[-1][0])
    buckets = dict(conn.execute(select(bucket_expr, func.count()).select_from(lateness).group_by(bucket_expr)).all())
    stats = conn.execute(select(func.count(), func.avg(lateness.c.seconds), func.max(lateness.c.seconds))
                         .select_from(lateness)).one()

    at_checkout = exists().where(
        e.c.person_id == cohort.c.person_id,
        e.c.name.in_((taxonomy.CHECKOUT_STARTED, taxonomy.ORDER_COMPLETED)),
        d.epoch(e.c.timestamp) <= d.epoch(cohort.c.identified_at) + CHECKOUT_GRACE.total_seconds(),
    )
    people, late = conn.execute(
        select(func.count(), func.sum(case((at_checkout, 1), else_=0))).select_from(cohort)
    ).one()
    people, late, with_activity = _int(people), _int(late), _int(stats[0])
    return {
        "identified": people,
        "with_anonymous_activity": with_activity,
        "identified_at_first_touch": people - with_activity,
        "median_seconds": _seconds(median),
        "p90_seconds": _seconds(p90),
        "mean_seconds": _seconds(stats[1]),
        "max_seconds": _seconds(stats[2]),
        "histogram": [{"bucket": label, "people": _int(buckets.get(label))} for label, _ in LATENESS_BUCKETS],
        "identified_at_checkout_or_purchase": late,
        "share_at_checkout_or_purchase": _rate(late, people),
    }


def _seconds(value) -> float | None:
    return round(float(value), 3) if value is not None else None


def fragmented_ids(conn: Connection, d: Dialect, period: Period, many: int) -> dict:
    cohort = cohort_cte(period)
    i = IDENTIFIERS
    per_person = (
        select(cohort.c.person_id, func.count(i.c.id).label("n"))
        .select_from(cohort.outerjoin(i, and_(i.c.person_id == cohort.c.person_id, i.c.kind == "anonymous_id")))
        .group_by(cohort.c.person_id)
        .cte("ids_per_person")
    )
    distribution = dict(conn.execute(
        select(per_person.c.n, func.count()).group_by(per_person.c.n)
    ).all())
    top = conn.execute(
        select(per_person.c.person_id, per_person.c.n).where(per_person.c.n >= many)
        .order_by(per_person.c.n.desc(), per_person.c.person_id).limit(10)
    ).all()
    people = sum(distribution.values())
    fragmented = sum(count for n, count in distribution.items() if n >= many)

    e = EVENTS
    per_device = (
        select(e.c.anonymous_id, func.count().label("events"),
               func.sum(case((e.c.type == "page", 1), else_=0)).label("pages"))
        .where(e.c.anonymous_id.is_not(None), *period.where(e.c.timestamp))
        .group_by(e.c.anonymous_id)
        .subquery("per_device")
    )
    devices, single_page = conn.execute(
        select(func.count(), func.sum(case((and_(per_device.c.events == 1, per_device.c.pages == 1), 1), else_=0)))
        .select_from(per_device)
    ).one()
    buckets = [("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3–4", 3, 4), ("5+", 5, None)]
    return {
        "people": people,
        "many_threshold": many,
        "people_with_many_ids": fragmented,
        "share_with_many_ids": _rate(fragmented, people),
        "max_ids": max((n for n, c in distribution.items() if c), default=0),
        "distribution": [{"anonymous_ids": label, "people": sum(c for n, c in distribution.items()
                                                              if n >= lo and (hi is None or n <= hi))}
                         for label, lo, hi in buckets],
        "most_fragmented": [{"person_id": r.person_id, "anonymous_ids": r.n} for r in top],
        "anonymous_ids": _int(devices),
        "single_page_view_ids": _int(single_page),
        "share_single_page_view": _rate(_int(single_page), _int(devices)),
    }


def missing_properties(conn: Connection, d: Dialect, period: Period) -> dict:
    e = EVENTS
    names = tuple(taxonomy.RECOMMENDED_PROPERTIES)
    element = d.json_elements(e.c.missing_properties)
    missing = conn.execute(
        select(e.c.name, element.c.value.label("property"), func.count().label("n"))
        .select_from(e.join(element, true()))
        .where(e.c.name.in_(names), *period.where(e.c.timestamp))
        .group_by(e.c.name, element.c.value)
    ).all()
    totals = dict(conn.execute(
        select(e.c.name, func.count()).where(e.c.name.in_(names), e.c.type == "track", *period.where(e.c.timestamp))
        .group_by(e.c.name)
    ).all())
    rows = [{"event": r.name, "property": r.property, "missing": r.n, "events": _int(totals.get(r.name)),
             "share": _rate(r.n, _int(totals.get(r.name)))} for r in missing]
    rows.sort(key=lambda r: (-r["missing"], r["event"], r["property"]))
    with_gaps = conn.execute(
        select(func.count()).where(e.c.name.in_(names), e.c.type == "track",
                                   d.json_length(e.c.missing_properties) > 0, *period.where(e.c.timestamp))
    ).scalar_one()
    return {"events_checked": sum(totals.values()), "events_with_gaps": _int(with_gaps),
            "share_with_gaps": _rate(_int(with_gaps), sum(totals.values())), "by_event_property": rows}


def duplicates(conn: Connection, period: Period) -> dict:
    e = EVENTS
    rows = conn.execute(
        select(e.c.name, e.c.source, func.count().label("n"))
        .where(e.c.duplicate_of.is_not(None), *period.where(e.c.timestamp))
        .group_by(e.c.name, e.c.source)
    ).all()
    by_event = [{"event": r.name, "late_copy_source": r.source, "pairs": r.n} for r in rows]
    by_event.sort(key=lambda r: (-r["pairs"], r["event"], r["late_copy_source"]))
    return {"pairs": sum(r["pairs"] for r in by_event), "by_event": by_event}


def unmerged(conn: Connection, period: Period, merge_cutoff: datetime) -> dict:
    """Anonymous activity (events with an anonymous id and no user id, identify calls aside) that
    never joined a person; what is older than the merge window can no longer merge."""
    e = EVENTS
    anonymous = and_(e.c.anonymous_id.is_not(None), e.c.user_id.is_(None), e.c.type != "identify",
                     *period.where(e.c.timestamp))
    per_device = (
        select(e.c.anonymous_id, func.count().label("events"),
               func.sum(case((e.c.person_id.is_(None), 1), else_=0)).label("unmerged"),
               func.sum(case((and_(e.c.person_id.is_(None), e.c.timestamp < merge_cutoff), 1), else_=0)).label("stale"))
        .where(anonymous)
        .group_by(e.c.anonymous_id)
        .subquery("devices")
    )
    row = conn.execute(
        select(func.count().label("devices"),
               func.sum(case((per_device.c.unmerged == per_device.c.events, 1), else_=0)).label("devices_unmerged"),
               func.sum(per_device.c.events).label("events"),
               func.sum(per_device.c.unmerged).label("unmerged"),
               func.sum(per_device.c.stale).label("stale"))
        .select_from(per_device)
    ).one()
    events, never = _int(row.events), _int(row.unmerged)
    return {
        "anonymous_events": events,
        "unmerged_events": never,
        "share_unmerged_events": _rate(never, events),
        "unmergeable_events": _int(row.stale),
        "anonymous_ids": _int(row.devices),
        "unmerged_ids": _int(row.devices_unmerged),
        "share_unmerged_ids": _rate(_int(row.devices_unmerged), _int(row.devices)),
    }
