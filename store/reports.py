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
  the rates and counted separately, and so are people still inside their N days
  (`still_in_window`, with `converted_so_far` of them: their outcome is not known yet, and counting
  only the early buyers among them would make a recent cohort read high). The rate is over the
  people *measured*: their N days are over. A person's route is the most urgent journey they were routed
  to before converting (or within the N days): cart_recovery > browse_recovery > welcome >
  control > none; people the hub routed only after they had bought count as "none", people it
  never routed as "unrouted". Control is the holdout
  (`holdout_percent`): lift = journey rate − control rate, both over the people measured.
- **Revenue per recipient**: attributed revenue of the period's orders / distinct people sent a
  message of that journey (step) in the period.
- **Recovery** per journey: the units messaged in the period — a cart (person, cart_id) for
  cart_recovery, a person for the other journeys — recovered when the same person ordered at or
  after the unit's first message and within the attribution window after its last one (an order
  carrying the cart's cart_id is reported as matched by cart id). Overall: the people messaged,
  by the same rule over all their messages of the period.
- **Messages by reason**: messages by status; skips from the journey log, one per step that was
  not sent (person, journey run, step), however many lines the engine wrote for it.
- **Funnel**: every stage in the period — identified in it, sent a message in it, first order in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import (Connection, Engine, Float, Integer, and_, case, cast, exists, extract, func, literal, literal_column, not_,
                        or_, select, true, union_all)
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
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): whole seconds from strftime, the fraction
        # read from the text — exact to the microsecond like PostgreSQL (julianday() keeps only
        # milliseconds, and its float arithmetic makes 60 s come out as 59.99999).
        # (strftime alone would round .9996 s up into the next second, hence the first 19 characters.)
        return cast(func.strftime("%s", func.substr(column, 1, 19)), Float) + cast(func.substr(column, 20), Float)

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
            return select(*(func.percentile_cont(p).within_group(values.c[column]) for p in fractions),
                          *extra(values.c))
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
        .where(e.c.name == events[0] if len(events) == 1 else e.c.name.in_(events), e.c.duplicate_of.is_(None),
               e.c.person_id.is_not(None))
        .cte(f"{name}_events")
    )
    return select(found.c.person_id, func.min(found.c.timestamp).label("first_at")).group_by(found.c.person_id).cte(name)


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
        outcomes = cohort_outcomes(conn, d, period, conversion_days, now)
        recovered = recovery(conn, d, period, window)
        return {
            "period": period.as_dict(),
            "generated_at": now.isoformat(),
            "settings": {
                "conversion_days": conversion_days,
                "attribution_window_hours": round(window.total_seconds() / 3600, 4),
                "holdout_percent": policy.holdout_percent,
            },
            "conversion": conversion(conn, d, period, conversion_days, now, outcomes),
            "revenue": revenue(conn, d, period, window),
            "recovery": recovered,
            "cart_recovery": cart_recovery(recovered),
            "messages": messages_by_reason(conn, d, period),
            "funnel": funnel(conn, d, period, conversion_days, outcomes),
        }


class _connection:
    """Use a given Connection as is, or open (and close) one from an Engine."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind, self.conn = bind, None

    def __enter__(self) -> Connection:
        if isinstance(self.bind, Connection):
            return self.bind
        self.conn = self.bind.connect()
        if self.conn.dialect.name == "postgresql":
            # These statements run in tens to hundreds of milliseconds; PostgreSQL's JIT, triggered by
            # row estimates on joined aggregates, spends seconds compiling them. Off for this
            # (read-only) transaction only.
            self.conn.exec_driver_sql("SET LOCAL jit = off")
        return self.conn

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            self.conn.close()


def cohort_outcomes(conn: Connection, d: Dialect, period: Period, conversion_days: int, now: datetime) -> list:
    """One row per route for the people identified in the period: how many, already customers,
    converted, still inside their window (no order yet), sent a message in the period, and whose
    first order came after such a message, within the window and in the period (the funnel).

    Driven from `people` (its primary key gives the per-person grouping for free): each person
    joined to their first order, their journey runs and their sent messages, reduced to one row,
    then counted per route. The route is the most urgent journey started before the first order
    (within the N days); someone the hub only routed after they had bought is "none" (nothing was
    sent before the purchase), someone never routed is "unrouted"."""
    p, r, m = PEOPLE, RUNS, MESSAGES
    first = first_orders_cte()
    priority = case(*((r.c.route == route, rank) for route, rank in ROUTE_PRIORITY.items()), else_=0)
    window = conversion_days * DAY
    runs_in_window = and_(r.c.person_id == p.c.id, d.epoch(r.c.started_at) <= d.epoch(p.c.identified_at) + window)
    before_buying = or_(first.c.first_at.is_(None), first.c.first_at < p.c.identified_at,
                        r.c.started_at <= first.c.first_at)
    per = (
        select(p.c.id.label("person_id"), func.min(p.c.identified_at).label("identified_at"),
               func.min(first.c.first_at).label("first_at"),
               func.max(case((before_buying, priority), else_=0)).label("priority"),
               func.count(r.c.workflow_id).label("runs"),
               func.min(m.c.sent_at).label("first_sent"))
        .select_from(p.outerjoin(first, first.c.person_id == p.c.id)
                     .outerjoin(r, runs_in_window)
                     .outerjoin(m, and_(m.c.person_id == p.c.id, m.c.status == "sent", *period.where(m.c.sent_at))))
        .where(*period.where(p.c.identified_at))
        .group_by(p.c.id)
        .subquery("per_person")
    )
    horizon = d.epoch(per.c.identified_at) + window
    prior = per.c.first_at < per.c.identified_at
    converted = and_(per.c.first_at >= per.c.identified_at, d.epoch(per.c.first_at) <= horizon)
    # The N days not over: out of the rates, converted or not. Counting only their early converters
    # would read high on a recent cohort (on fresh data nearly 100%), counting none of them low.
    open_window = and_(horizon > now.timestamp(), or_(per.c.first_at.is_(None), not_(prior)))
    # Routed only after buying (the hub saw the order first): nothing was sent, so "none".
    route = case(*((per.c.priority == rank, name) for name, rank in ROUTE_PRIORITY.items()),
                 (per.c.runs > 0, "none"), else_="unrouted")
    return conn.execute(
        select(
            route.label("route"),
            func.count().label("identified"),
            func.sum(case((prior, 1), else_=0)).label("prior"),
            func.sum(case((and_(converted, not_(open_window)), 1), else_=0)).label("converted"),
            func.sum(case((open_window, 1), else_=0)).label("open"),
            func.sum(case((and_(converted, open_window), 1), else_=0)).label("open_converted"),
            func.sum(case((per.c.first_sent.is_not(None), 1), else_=0)).label("messaged"),
            func.sum(case((and_(converted, per.c.first_at >= per.c.first_sent, *period.where(per.c.first_at)), 1),
                          else_=0)).label("purchased"),
        ).group_by(route)
    ).all()


def conversion(conn: Connection, d: Dialect, period: Period, conversion_days: int, now: datetime,
               rows: list | None = None) -> dict:
    if rows is None:
        rows = cohort_outcomes(conn, d, period, conversion_days, now)
    found = {row.route: row for row in rows}
    by_route = []
    for name in (*ROUTES, *sorted(set(found) - set(ROUTES))):
        row = found.get(name)
        people = _int(row.identified) - _int(row.prior) if row else 0
        still_open = _int(row.open) if row else 0
        converted_n = _int(row.converted) if row else 0
        by_route.append({"route": name, "people": people, "still_in_window": still_open,
                         "converted_so_far": _int(row.open_converted) if row else 0, "measured": people - still_open,
                         "converted": converted_n, "rate": _rate(converted_n, people - still_open),
                         "prior_purchasers": _int(row.prior) if row else 0})
    totals = {key: sum(r[key] for r in by_route)
              for key in ("people", "still_in_window", "converted_so_far", "measured", "converted")}
    by_name = {r["route"]: r for r in by_route}
    treated_people = sum(by_name[j]["measured"] for j in JOURNEYS)
    treated_converted = sum(by_name[j]["converted"] for j in JOURNEYS)
    control = by_name["control"]
    holdout = None
    if control["measured"]:
        exact_treated = treated_converted / treated_people if treated_people else None
        exact_control = control["converted"] / control["measured"]
        holdout = {
            "control_people": control["measured"],
            "control_converted": control["converted"],
            "control_rate": control["rate"],
            "journey_people": treated_people,
            "journey_converted": treated_converted,
            "journey_rate": _rate(treated_converted, treated_people),
            "lift_points": round(exact_treated - exact_control, 4) if exact_treated is not None else None,
            "lift_relative": (round(exact_treated / exact_control - 1, 4)
                              if exact_treated is not None and exact_control else None),
        }
    return {
        "days": conversion_days,
        "identified": sum(_int(r.identified) for r in rows),
        **totals,
        "rate": _rate(totals["converted"], totals["measured"]),
        "prior_purchasers": sum(_int(r.prior) for r in rows),
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


def recovery(conn: Connection, d: Dialect, period: Period, window: timedelta) -> dict:
    """Recovery per journey and overall (see the module docstring). A cart's order must be the same
    person's and inside the window: a cart_id alone proves nothing (another person can order with
    it, or the same cart can be bought weeks later, long after the message mattered)."""
    m = MESSAGES
    sent = [m.c.status == "sent", *period.where(m.c.sent_at)]
    cart_key = case((m.c.journey == "cart_recovery", m.c.cart_id), else_=None)
    units = (
        select(m.c.journey, m.c.person_id, cart_key.label("cart_id"), func.min(m.c.sent_at).label("first_sent"),
               func.max(m.c.sent_at).label("last_sent"))
        .where(*sent).group_by(m.c.journey, m.c.person_id, cart_key).cte("messaged_units")
    )
    people = (
        select(m.c.person_id, func.min(m.c.sent_at).label("first_sent"), func.max(m.c.sent_at).label("last_sent"))
        .where(*sent).group_by(m.c.person_id).cte("messaged_people")
    )

    def ordered_after(messaged, *also) -> ColumnElement:
        order = aliased(EVENTS)
        return exists().where(
            order.c.person_id == messaged.c.person_id,
            order.c.name == taxonomy.ORDER_COMPLETED,
            order.c.duplicate_of.is_(None),
            order.c.timestamp >= messaged.c.first_sent,
            d.epoch(order.c.timestamp) <= d.epoch(messaged.c.last_sent) + window.total_seconds(),
            *(condition(order) for condition in also),
        )

    by_cart = ordered_after(units, lambda order: order.c.cart_id == units.c.cart_id)
    rows = conn.execute(
        select(units.c.journey, func.count().label("messaged"),
               func.sum(case((ordered_after(units), 1), else_=0)).label("recovered"),
               func.sum(case((by_cart, 1), else_=0)).label("by_cart"))
        .group_by(units.c.journey)
    ).all()
    messaged_people, recovered_people = conn.execute(
        select(func.count(), func.sum(case((ordered_after(people), 1), else_=0))).select_from(people)
    ).one()
    found = {row.journey: row for row in rows}
    by_journey = []
    for name in sorted(set(JOURNEYS) | set(found), key=_journey_order):
        row = found.get(name)
        messaged, recovered = (_int(row.messaged), _int(row.recovered)) if row else (0, 0)
        by_journey.append({"journey": name, "unit": "carts" if name == "cart_recovery" else "people",
                           "messaged": messaged, "recovered": recovered, "rate": _rate(recovered, messaged),
                           "matched_by_cart_id": _int(row.by_cart) if row else 0})
    messaged_people, recovered_people = _int(messaged_people), _int(recovered_people)
    return {"people_messaged": messaged_people, "people_recovered": recovered_people,
            "rate": _rate(recovered_people, messaged_people), "by_journey": by_journey}


def cart_recovery(recovered: dict) -> dict:
    """The cart recovery rate in the shape the page and the CLI headline use."""
    cart = next(r for r in recovered["by_journey"] if r["journey"] == "cart_recovery")
    return {"carts_messaged": cart["messaged"], "carts_recovered": cart["recovered"], "rate": cart["rate"],
            "matched_by_cart_id": cart["matched_by_cart_id"],
            "matched_by_person": cart["recovered"] - cart["matched_by_cart_id"]}


def messages_by_reason(conn: Connection, d: Dialect, period: Period) -> dict:
    m = MESSAGES
    when = case((m.c.status == "sent", m.c.sent_at), else_=m.c.created_at)
    failed_reason = func.coalesce(reason_category(m.c.reason), func.substr(func.coalesce(m.c.reason, "unknown"), 1, 80))
    reason = case((m.c.status == "sent", "sent"), else_=failed_reason)
    message_rows = conn.execute(
        select(m.c.status, m.c.journey, reason.label("reason"), func.count().label("n"))
        # A message the send re-check held back (status "skipped") has its journey-log line, counted below.
        .where(m.c.status != "skipped", *period.where(when))
        .group_by(m.c.status, m.c.journey, reason)
    ).all()
    log = LOG
    # Every wait counts (a step can wait for the cap, then for quiet hours)…
    waits = select(literal("deferred").label("outcome"), log.c.journey, log.c.reason).where(
        log.c.kind == "waiting", *period.where(log.c.at))
    # …but a step not sent is one skip, whatever the engine logged for it (a blocked channel writes
    # "skipped" and then "exit" for the same step): the step's first line gives the reason and
    # places it in the period.
    first_line = func.row_number().over(partition_by=(log.c.person_id, log.c.workflow_id, log.c.step),
                                        order_by=(log.c.at, log.c.id))
    skip_lines = (
        select(log.c.journey, log.c.reason, log.c.at, first_line.label("nth"))
        .where(log.c.kind.in_(("exit", "skipped")), *Period(until=period.until).where(log.c.at))
        .subquery("skip_lines")
    )
    skips = select(literal("skipped").label("outcome"), skip_lines.c.journey, skip_lines.c.reason).where(
        skip_lines.c.nth == 1, *Period(since=period.since).where(skip_lines.c.at))
    lines = union_all(waits, skips).subquery("outcomes")
    log_reason = func.coalesce(reason_category(lines.c.reason), "other")
    log_rows = conn.execute(
        select(lines.c.outcome, lines.c.journey, log_reason.label("reason"), func.count().label("n"))
        .group_by(lines.c.outcome, lines.c.journey, log_reason)
    ).all()
    by_reason = [{"outcome": r.status, "journey": r.journey, "reason": r.reason, "count": r.n} for r in message_rows]
    by_reason += [{"outcome": r.outcome, "journey": r.journey, "reason": r.reason, "count": r.n} for r in log_rows]
    order = {"sent": 0, "failed": 1, "pending": 2, "skipped": 3, "deferred": 4}
    by_reason.sort(key=lambda r: (order.get(r["outcome"], 9), -r["count"], r["journey"] or "", r["reason"] or ""))
    totals = {k: 0 for k in order}
    for r in by_reason:
        totals[r["outcome"]] = totals.get(r["outcome"], 0) + r["count"]
    return {**totals, "by_reason": by_reason}


def funnel(conn: Connection, d: Dialect, period: Period, conversion_days: int, rows: list | None = None,
           now: datetime | None = None) -> list[dict]:
    if rows is None:
        rows = cohort_outcomes(conn, d, period, conversion_days, now or datetime.now(timezone.utc))
    # Devices seen in the period that never became anyone: with the people identified, the visitors.
    anonymous = _int(conn.execute(never_identified_devices(period)).scalar_one())
    identified = sum(_int(r.identified) for r in rows)
    return [
        {"stage": "anonymous", "label": "visitors (people + never-identified devices)", "count": identified + anonymous},
        {"stage": "identified", "label": "identified people", "count": identified},
        {"stage": "messaged", "label": "sent a journey message in the period", "count": sum(_int(r.messaged) for r in rows)},
        {"stage": "purchased", "label": f"first order after a message (≤ {conversion_days} d, in the period)",
         "count": sum(_int(r.purchased) for r in rows)},
    ]


# --------------------------------------------------------------------------------------------------
# Tracking-health report


def tracking(engine: Engine | Connection, policy: Policy, period: Period = Period(), now: datetime | None = None,
             many_ids: int = MANY_ANONYMOUS_IDS) -> dict:
    """Identify lateness, fragmented ids, missing recommended properties, duplicates caught,
    anonymous activity that never merged, and events ingest flagged (clock ahead, foreign links)."""
    now = as_utc(now or datetime.now(timezone.utc))
    with _connection(engine) as conn:
        d = Dialect(conn.dialect.name)
        devices = device_counts(conn, period)
        return {
            "period": period.as_dict(),
            "generated_at": now.isoformat(),
            "identify_lateness": identify_lateness(conn, d, period),
            "fragmented_ids": fragmented_ids(conn, period, many_ids, devices),
            "missing_properties": missing_properties(conn, d, period),
            "duplicates": duplicates(conn, period),
            "unmerged": unmerged(conn, period, now - policy.merge_window, devices),
            "flagged": flagged(conn, period),
        }


@dataclass
class Devices:
    seen: int
    single_page_view: int
    never_identified: int


def device_counts(conn: Connection, period: Period) -> Devices:
    """Anonymous ids seen in the period, those seen on one page view only, those never identified."""
    e = EVENTS
    in_period = [e.c.anonymous_id.is_not(None), *period.where(e.c.timestamp)]
    per_device = select(e.c.anonymous_id, func.count().label("n")).where(*in_period).group_by(e.c.anonymous_id)
    seen = conn.execute(select(func.count()).select_from(per_device.subquery("devices"))).scalar_one()
    # Devices with exactly one event (covering index scan), then look only those events up.
    singles = select(e.c.anonymous_id).where(*in_period).group_by(e.c.anonymous_id).having(func.count() == 1)
    single_page = conn.execute(
        select(func.count()).where(e.c.anonymous_id.in_(singles), e.c.type == "page", *period.where(e.c.timestamp))
    ).scalar_one()
    never = conn.execute(never_identified_devices(period)).scalar_one()
    return Devices(_int(seen), _int(single_page), _int(never))


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
    def stats(columns) -> list:
        seconds = columns.seconds
        bucket_of = case(*((seconds < upper, label) for label, upper in LATENESS_BUCKETS if upper is not None),
                         else_=LATENESS_BUCKETS[-1][0])
        return [func.count(), func.avg(seconds), func.max(seconds),
                *(func.sum(case((bucket_of == label, 1), else_=0)) for label, _ in LATENESS_BUCKETS)]

    row = conn.execute(d.percentiles(lateness, "seconds", (0.5, 0.9), stats)).one_or_none()
    median, p90, count, mean, longest, *bucket_counts = row if row is not None else (None,) * (5 + len(LATENESS_BUCKETS))
    buckets = {label: n for (label, _), n in zip(LATENESS_BUCKETS, bucket_counts)}

    # "Identified only at checkout or purchase": by the time they identified (give or take the
    # grace), they had already started a checkout or ordered.
    first_checkout = first_event_cte("first_checkout", (taxonomy.CHECKOUT_STARTED, taxonomy.ORDER_COMPLETED))
    at_checkout = d.epoch(first_checkout.c.first_at) <= d.epoch(cohort.c.identified_at) + CHECKOUT_GRACE.total_seconds()
    people, late = conn.execute(
        select(func.count(), func.sum(case((at_checkout, 1), else_=0)))
        .select_from(cohort.outerjoin(first_checkout, first_checkout.c.person_id == cohort.c.person_id))
    ).one()
    people, late, with_activity = _int(people), _int(late), _int(count)
    return {
        "identified": people,
        "with_anonymous_activity": with_activity,
        "identified_at_first_touch": people - with_activity,
        "median_seconds": _seconds(median),
        "p90_seconds": _seconds(p90),
        "mean_seconds": _seconds(mean),
        "max_seconds": _seconds(longest),
        "histogram": [{"bucket": label, "people": _int(buckets.get(label))} for label, _ in LATENESS_BUCKETS],
        "identified_at_checkout_or_purchase": late,
        "share_at_checkout_or_purchase": _rate(late, people),
    }


def _seconds(value) -> float | None:
    return round(float(value), 3) if value is not None else None


def fragmented_ids(conn: Connection, period: Period, many: int, devices: Devices) -> dict:
    p, i = PEOPLE, IDENTIFIERS
    per_person = (
        select(p.c.id.label("person_id"), func.count(i.c.id).label("n"))
        .select_from(p.outerjoin(i, and_(i.c.person_id == p.c.id, i.c.kind == "anonymous_id")))
        .where(*period.where(p.c.identified_at))
        .group_by(p.c.id)
        .subquery("ids_per_person")
    )
    distribution = dict(conn.execute(select(per_person.c.n, func.count()).group_by(per_person.c.n)).all())
    # The most fragmented: only people with many ids are looked at (a HAVING on the identifiers).
    many_ids = (
        select(i.c.person_id, func.count().label("n"))
        .where(i.c.kind == "anonymous_id").group_by(i.c.person_id).having(func.count() >= many)
        .subquery("many_ids")
    )
    top = conn.execute(
        select(many_ids.c.person_id, many_ids.c.n)
        .select_from(many_ids.join(p, p.c.id == many_ids.c.person_id))
        .where(*period.where(p.c.identified_at))
        .order_by(many_ids.c.n.desc(), many_ids.c.person_id).limit(10)
    ).all()
    people = sum(distribution.values())
    fragmented = sum(count for n, count in distribution.items() if n >= many)
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
        "anonymous_ids": devices.seen,
        "single_page_view_ids": devices.single_page_view,
        "share_single_page_view": _rate(devices.single_page_view, devices.seen),
    }


def missing_properties(conn: Connection, d: Dialect, period: Period) -> dict:
    e = EVENTS
    names = tuple(taxonomy.RECOMMENDED_PROPERTIES)
    # Events per name: the (name, timestamp) index alone answers it.
    totals = dict(conn.execute(
        select(e.c.name, func.count()).where(e.c.name.in_(names), *period.where(e.c.timestamp)).group_by(e.c.name)
    ).all())
    # Only events that lack something are unpacked; each counts once through its first gap.
    gaps = materialized(
        select(e.c.name, e.c.missing_properties)
        .where(e.c.type == "track", d.json_length(e.c.missing_properties) > 0, *period.where(e.c.timestamp))
        .cte("with_gaps")
    )
    element, first = d.json_elements_numbered(gaps.c.missing_properties)
    rows = conn.execute(
        select(gaps.c.name, element.c.value.label("property"), func.count().label("n"),
               func.sum(case((first, 1), else_=0)).label("events"))
        .select_from(gaps.join(element, true()))
        .group_by(gaps.c.name, element.c.value)
    ).all()
    rows = [r for r in rows if r.name in totals]
    out = [{"event": r.name, "property": r.property, "missing": r.n, "events": _int(totals.get(r.name)),
            "share": _rate(r.n, _int(totals.get(r.name)))} for r in rows]
    out.sort(key=lambda r: (-r["missing"], r["event"], r["property"]))
    checked, with_gaps = sum(totals.values()), sum(_int(r.events) for r in rows)
    return {"events_checked": checked, "events_with_gaps": with_gaps, "share_with_gaps": _rate(with_gaps, checked),
            "by_event_property": out}


def duplicates(conn: Connection, period: Period) -> dict:
    e = EVENTS
    copies = materialized(
        select(e.c.name, e.c.source).where(e.c.duplicate_of.is_not(None), *period.where(e.c.timestamp)).cte("copies")
    )
    rows = conn.execute(select(copies.c.name, copies.c.source, func.count().label("n"))
                        .group_by(copies.c.name, copies.c.source)).all()
    by_event = [{"event": r.name, "late_copy_source": r.source, "pairs": r.n} for r in rows]
    by_event.sort(key=lambda r: (-r["pairs"], r["event"], r["late_copy_source"]))
    return {"pairs": sum(r["pairs"] for r in by_event), "by_event": by_event}


def unmerged(conn: Connection, period: Period, merge_cutoff: datetime, devices: Devices) -> dict:
    """Anonymous activity (events with an anonymous id and no user id, identify calls aside) that
    never joined a person; what is older than the merge window can no longer merge."""
    e = EVENTS
    unowned = e.c.person_id.is_(None)
    events, never, stale = conn.execute(
        select(func.count(), func.sum(case((unowned, 1), else_=0)),
               func.sum(case((and_(unowned, e.c.timestamp < merge_cutoff), 1), else_=0)))
        .where(e.c.anonymous_id.is_not(None), e.c.user_id.is_(None), e.c.type != "identify",
               *period.where(e.c.timestamp))
    ).one()
    events, never = _int(events), _int(never)
    return {
        "anonymous_events": events,
        "unmerged_events": never,
        "share_unmerged_events": _rate(never, events),
        "unmergeable_events": _int(stale),
        "anonymous_ids": devices.seen,
        "unmerged_ids": devices.never_identified,
        "share_unmerged_ids": _rate(devices.never_identified, devices.seen),
    }


FLAGS = ("timestamp_clamped", "foreign_links")


def flagged(conn: Connection, period: Period) -> dict:
    """Events whose client clock ran ahead (timestamp clamped to arrival) or whose links pointed off
    the shop's hosts (left out of catalog and messages), per event name: a storefront to fix."""
    e = EVENTS
    has = {flag: e.c.flags[flag].as_string().is_not(None) for flag in FLAGS}
    rows = conn.execute(
        select(e.c.name, *(func.sum(case((has[flag], 1), else_=0)).label(flag) for flag in FLAGS))
        .where(or_(*has.values()), *period.where(e.c.timestamp)).group_by(e.c.name)
    ).all()
    by_event = sorted(({"event": r.name, **{flag: _int(getattr(r, flag)) for flag in FLAGS}} for r in rows),
                      key=lambda r: (-(r["timestamp_clamped"] + r["foreign_links"]), r["event"]))
    return {**{flag: sum(r[flag] for r in by_event) for flag in FLAGS}, "by_event": by_event}
