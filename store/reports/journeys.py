"""The journey report: did the journeys make money (conversion with holdout lift, revenue per
recipient, recovery, messages by reason, the funnel). Definitions: the package docstring."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, exists, func, literal, not_, or_, select, union_all
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from journeys import taxonomy
from journeys.attribution import revenue_per_recipient
from journeys.history import as_utc
from journeys.policy import JOURNEY_NAMES, Policy
from store.reports.period import Period
from store.reports.sql import (
    DAY,
    EVENTS,
    LOG,
    MESSAGES,
    PEOPLE,
    RUNS,
    Dialect,
    as_int,
    as_money,
    attributed_cte,
    connection,
    first_orders_cte,
    journey_order,
    message_reason,
    never_identified_devices,
    ratio,
    reason_category,
)

DEFAULT_CONVERSION_DAYS = 14
ROUTES = ("cart_recovery", "browse_recovery", "welcome", "none", "control")
# Most urgent first; a person's route in the conversion report is the highest one they reached.
ROUTE_PRIORITY = {"cart_recovery": 5, "browse_recovery": 4, "welcome": 3, "control": 2, "none": 1}


def summary(
    engine: Engine | Connection,
    policy: Policy,
    period: Period = Period(),
    conversion_days: int = DEFAULT_CONVERSION_DAYS,
    now: datetime | None = None,
) -> dict:
    """The journey report computed exactly from the stored rows: conversion (with holdout lift),
    revenue per recipient, cart recovery, messages by reason, the funnel and daily attributed
    revenue. The reference the roll-ups (store/reports/rollups.py) must equal."""
    if conversion_days < 1:
        raise ValueError("conversion_days must be at least 1")
    now = as_utc(now or datetime.now(UTC))
    with connection(engine) as conn:
        d = Dialect(conn.dialect.name)
        window = policy.attribution_window
        outcomes = cohort_outcomes(conn, d, period, conversion_days, now)
        return assemble(
            policy,
            period,
            conversion_days,
            now,
            outcomes,
            revenue=revenue(conn, d, period, window),
            recovered=recovery(conn, d, period, window),
            messages=messages_by_reason(conn, d, period),
            funnel=funnel(conn, d, period, conversion_days, outcomes),
        )


def assemble(
    policy: Policy,
    period: Period,
    conversion_days: int,
    now: datetime,
    outcomes: list,
    revenue: dict,
    recovered: dict,
    messages: dict,
    funnel: list[dict],
) -> dict:
    """The report's shape, whichever way its parts were computed (exactly or from the roll-ups)."""
    return {
        "period": period.as_dict(),
        "generated_at": now.isoformat(),
        "settings": {
            "conversion_days": conversion_days,
            "attribution_window_hours": round(policy.attribution_window.total_seconds() / 3600, 4),
            "holdout_percent": policy.holdout_percent,
        },
        "conversion": conversion_figures(outcomes, conversion_days),
        "revenue": revenue,
        "recovery": recovered,
        "cart_recovery": cart_recovery(recovered),
        "messages": messages,
        "funnel": funnel,
    }


def cohort_outcomes(conn: Connection, d: Dialect, period: Period, conversion_days: int, now: datetime) -> list[Any]:
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
    before_buying = or_(
        first.c.first_at.is_(None), first.c.first_at < p.c.identified_at, r.c.started_at <= first.c.first_at
    )
    per = (
        select(
            p.c.id.label("person_id"),
            func.min(p.c.identified_at).label("identified_at"),
            func.min(first.c.first_at).label("first_at"),
            func.max(case((before_buying, priority), else_=0)).label("priority"),
            func.count(r.c.workflow_id).label("runs"),
            func.min(m.c.sent_at).label("first_sent"),
        )
        .select_from(
            p.outerjoin(first, first.c.person_id == p.c.id)
            .outerjoin(r, runs_in_window)
            .outerjoin(m, and_(m.c.person_id == p.c.id, m.c.status == "sent", *period.where(m.c.sent_at)))
        )
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
    route = case(
        *((per.c.priority == rank, name) for name, rank in ROUTE_PRIORITY.items()),
        (per.c.runs > 0, "none"),
        else_="unrouted",
    )
    return list(
        conn.execute(
            select(
                route.label("route"),
                func.count().label("identified"),
                func.sum(case((prior, 1), else_=0)).label("prior"),
                func.sum(case((and_(converted, not_(open_window)), 1), else_=0)).label("converted"),
                func.sum(case((open_window, 1), else_=0)).label("open"),
                func.sum(case((and_(converted, open_window), 1), else_=0)).label("open_converted"),
                func.sum(case((per.c.first_sent.is_not(None), 1), else_=0)).label("messaged"),
                func.sum(
                    case(
                        (and_(converted, per.c.first_at >= per.c.first_sent, *period.where(per.c.first_at)), 1), else_=0
                    )
                ).label("purchased"),
            ).group_by(route)
        ).all()
    )


def conversion(
    conn: Connection, d: Dialect, period: Period, conversion_days: int, now: datetime, rows: list | None = None
) -> dict:
    if rows is None:
        rows = cohort_outcomes(conn, d, period, conversion_days, now)
    return conversion_figures(rows, conversion_days)


def conversion_figures(rows: list, conversion_days: int) -> dict:
    """Per route: people, measured, converted, rates; the holdout lift (journeys − control)."""
    found = {row.route: row for row in rows}
    by_route = []
    for name in (*ROUTES, *sorted(set(found) - set(ROUTES))):
        row = found.get(name)
        people = as_int(row.identified) - as_int(row.prior) if row else 0
        still_open = as_int(row.open) if row else 0
        converted_n = as_int(row.converted) if row else 0
        by_route.append(
            {
                "route": name,
                "people": people,
                "still_in_window": still_open,
                "converted_so_far": as_int(row.open_converted) if row else 0,
                "measured": people - still_open,
                "converted": converted_n,
                "rate": ratio(converted_n, people - still_open),
                "prior_purchasers": as_int(row.prior) if row else 0,
            }
        )
    totals = {
        key: sum(r[key] for r in by_route)
        for key in ("people", "still_in_window", "converted_so_far", "measured", "converted")
    }
    by_name = {r["route"]: r for r in by_route}
    treated_people = sum(by_name[j]["measured"] for j in JOURNEY_NAMES)
    treated_converted = sum(by_name[j]["converted"] for j in JOURNEY_NAMES)
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
            "journey_rate": ratio(treated_converted, treated_people),
            "lift_points": round(exact_treated - exact_control, 4) if exact_treated is not None else None,
            "lift_relative": (
                round(exact_treated / exact_control - 1, 4) if exact_treated is not None and exact_control else None
            ),
        }
    return {
        "days": conversion_days,
        "identified": sum(as_int(r.identified) for r in rows),
        **totals,
        "rate": ratio(totals["converted"], totals["measured"]),
        "prior_purchasers": sum(as_int(r.prior) for r in rows),
        "by_route": by_route,
        "holdout": holdout,
    }


def revenue(conn: Connection, d: Dialect, period: Period, window: timedelta) -> dict:
    attributed = attributed_cte(d, period, window)
    day = d.day(attributed.c.ordered_at)
    rows = conn.execute(
        select(
            day.label("day"),
            attributed.c.journey,
            attributed.c.step,
            func.count().label("orders"),
            func.sum(attributed.c.revenue).label("revenue"),
            func.sum(case((attributed.c.revenue.is_(None), 1), else_=0)).label("without_value"),
        ).group_by(day, attributed.c.journey, attributed.c.step)
    ).all()
    sent = MESSAGES.c.status == "sent"
    recipients_rows = conn.execute(
        select(MESSAGES.c.journey, MESSAGES.c.step, func.count(func.distinct(MESSAGES.c.person_id)).label("people"))
        .where(sent, *period.where(MESSAGES.c.sent_at))
        .group_by(MESSAGES.c.journey, MESSAGES.c.step)
    ).all()
    journey_recipients: dict[str, int] = dict(
        conn.execute(
            select(MESSAGES.c.journey, func.count(func.distinct(MESSAGES.c.person_id)))
            .where(sent, *period.where(MESSAGES.c.sent_at))
            .group_by(MESSAGES.c.journey)
        ).all()
    )
    recipients = conn.execute(
        select(func.count(func.distinct(MESSAGES.c.person_id))).where(sent, *period.where(MESSAGES.c.sent_at))
    ).scalar_one()
    return revenue_figures(rows, recipients_rows, journey_recipients, recipients)


def revenue_figures(
    rows: Sequence[Any], recipients_rows: Sequence[Any], journey_recipients: dict[str, int], recipients: Any
) -> dict:
    """Attributed orders per (day, journey, step) and the recipients, shaped for the report."""
    per_journey: dict[str, list] = {}
    per_step: dict[tuple[str, int], list] = {}
    daily: dict[tuple[str, str], list] = {}
    totals = [0, 0.0, 0]
    for row in rows:
        revenue_value = float(row.revenue or 0.0)
        totals[0] += row.orders
        totals[1] += revenue_value
        totals[2] += as_int(row.without_value)
        if row.journey is None:
            continue
        for held in (
            per_journey.setdefault(row.journey, [0, 0.0]),
            per_step.setdefault((row.journey, row.step), [0, 0.0]),
            daily.setdefault((row.day, row.journey), [0, 0.0]),
        ):
            held[0] += row.orders
            held[1] += revenue_value
    step_recipients = {(r.journey, r.step): r.people for r in recipients_rows}

    journeys = sorted(set(JOURNEY_NAMES) | set(journey_recipients) | set(per_journey), key=journey_order)
    by_journey = []
    for name in journeys:
        orders, earned = per_journey.get(name, [0, 0.0])
        people = as_int(journey_recipients.get(name))
        by_journey.append(
            {
                "journey": name,
                "recipients": people,
                "orders": orders,
                "revenue": as_money(earned),
                "revenue_per_recipient": revenue_per_recipient(earned, people),
            }
        )
    by_step = []
    for key in sorted(set(step_recipients) | set(per_step), key=lambda k: (journey_order(k[0]), k[1])):
        orders, earned = per_step.get(key, [0, 0.0])
        people = as_int(step_recipients.get(key))
        by_step.append(
            {
                "journey": key[0],
                "step": key[1],
                "recipients": people,
                "orders": orders,
                "revenue": as_money(earned),
                "revenue_per_recipient": revenue_per_recipient(earned, people),
            }
        )
    attributed_orders = sum(v[0] for v in per_journey.values())
    attributed_revenue = sum(v[1] for v in per_journey.values())
    return {
        "orders": totals[0],
        "revenue": as_money(totals[1]),
        "orders_without_value": totals[2],
        "attributed_orders": attributed_orders,
        "attributed_revenue": as_money(attributed_revenue),
        "recipients": as_int(recipients),
        "revenue_per_recipient": revenue_per_recipient(attributed_revenue, as_int(recipients)),
        "by_journey": by_journey,
        "by_step": by_step,
        "daily": [
            {"day": day_, "journey": journey, "orders": v[0], "revenue": as_money(v[1])}
            for (day_, journey), v in sorted(daily.items())
        ],
    }


def recovery(conn: Connection, d: Dialect, period: Period, window: timedelta) -> dict:
    """Recovery per journey and overall (see the module docstring). A cart's order must be the same
    person's and inside the window: a cart_id alone proves nothing (another person can order with
    it, or the same cart can be bought weeks later, long after the message mattered)."""
    m = MESSAGES
    sent = [m.c.status == "sent", *period.where(m.c.sent_at)]
    cart_key = case((m.c.journey == "cart_recovery", m.c.cart_id), else_=None)
    units = (
        select(
            m.c.journey,
            m.c.person_id,
            cart_key.label("cart_id"),
            func.min(m.c.sent_at).label("first_sent"),
            func.max(m.c.sent_at).label("last_sent"),
        )
        .where(*sent)
        .group_by(m.c.journey, m.c.person_id, cart_key)
        .cte("messaged_units")
    )
    people = (
        select(m.c.person_id, func.min(m.c.sent_at).label("first_sent"), func.max(m.c.sent_at).label("last_sent"))
        .where(*sent)
        .group_by(m.c.person_id)
        .cte("messaged_people")
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
        select(
            units.c.journey,
            func.count().label("messaged"),
            func.sum(case((ordered_after(units), 1), else_=0)).label("recovered"),
            func.sum(case((by_cart, 1), else_=0)).label("by_cart"),
        ).group_by(units.c.journey)
    ).all()
    messaged_people, recovered_people = conn.execute(
        select(func.count(), func.sum(case((ordered_after(people), 1), else_=0))).select_from(people)
    ).one()
    return recovery_figures(rows, messaged_people, recovered_people)


def recovery_figures(rows: Sequence[Any], messaged_people: Any, recovered_people: Any) -> dict:
    found = {row.journey: row for row in rows}
    by_journey = []
    for name in sorted(set(JOURNEY_NAMES) | set(found), key=journey_order):
        row = found.get(name)
        messaged, recovered = (as_int(row.messaged), as_int(row.recovered)) if row else (0, 0)
        by_journey.append(
            {
                "journey": name,
                "unit": "carts" if name == "cart_recovery" else "people",
                "messaged": messaged,
                "recovered": recovered,
                "rate": ratio(recovered, messaged),
                "matched_by_cart_id": as_int(row.by_cart) if row else 0,
            }
        )
    messaged_people, recovered_people = as_int(messaged_people), as_int(recovered_people)
    return {
        "people_messaged": messaged_people,
        "people_recovered": recovered_people,
        "rate": ratio(recovered_people, messaged_people),
        "by_journey": by_journey,
    }


def cart_recovery(recovered: dict) -> dict:
    """The cart recovery rate in the shape the page and the CLI headline use."""
    cart = next(r for r in recovered["by_journey"] if r["journey"] == "cart_recovery")
    return {
        "carts_messaged": cart["messaged"],
        "carts_recovered": cart["recovered"],
        "rate": cart["rate"],
        "matched_by_cart_id": cart["matched_by_cart_id"],
        "matched_by_person": cart["recovered"] - cart["matched_by_cart_id"],
    }


def messages_by_reason(conn: Connection, d: Dialect, period: Period) -> dict:
    m = MESSAGES
    when = case((m.c.status == "sent", m.c.sent_at), else_=m.c.created_at)
    reason = message_reason(m)
    message_rows = conn.execute(
        select(m.c.status, m.c.journey, reason.label("reason"), func.count().label("n"))
        # A message the send re-check held back (status "skipped") has its journey-log line, counted below.
        .where(m.c.status != "skipped", *period.where(when))
        .group_by(m.c.status, m.c.journey, reason)
    ).all()
    log = LOG
    # Every wait counts (a step can wait for the cap, then for quiet hours)…
    waits = select(literal("deferred").label("outcome"), log.c.journey, log.c.reason).where(
        log.c.kind == "waiting", *period.where(log.c.at)
    )
    # …but a step not sent is one skip, whatever the engine logged for it (a blocked channel writes
    # "skipped" and then "exit" for the same step): the step's first line gives the reason and
    # places it in the period.
    first_line = func.row_number().over(
        partition_by=(log.c.person_id, log.c.workflow_id, log.c.step), order_by=(log.c.at, log.c.id)
    )
    skip_lines = (
        select(log.c.journey, log.c.reason, log.c.at, first_line.label("nth"))
        .where(log.c.kind.in_(("exit", "skipped")), *Period(until=period.until).where(log.c.at))
        .subquery("skip_lines")
    )
    skips = select(literal("skipped").label("outcome"), skip_lines.c.journey, skip_lines.c.reason).where(
        skip_lines.c.nth == 1, *Period(since=period.since).where(skip_lines.c.at)
    )
    lines = union_all(waits, skips).subquery("outcomes")
    log_reason = func.coalesce(reason_category(lines.c.reason), "other")
    log_rows = conn.execute(
        select(lines.c.outcome, lines.c.journey, log_reason.label("reason"), func.count().label("n")).group_by(
            lines.c.outcome, lines.c.journey, log_reason
        )
    ).all()
    return reason_figures(message_rows, log_rows)


def reason_figures(message_rows: Sequence[Any], log_rows: Sequence[Any]) -> dict:
    by_reason = [{"outcome": r.status, "journey": r.journey, "reason": r.reason, "count": r.n} for r in message_rows]
    by_reason += [{"outcome": r.outcome, "journey": r.journey, "reason": r.reason, "count": r.n} for r in log_rows]
    order = {"sent": 0, "failed": 1, "pending": 2, "skipped": 3, "deferred": 4}
    by_reason.sort(key=lambda r: (order.get(r["outcome"], 9), -r["count"], r["journey"] or "", r["reason"] or ""))
    totals = {k: 0 for k in order}
    for r in by_reason:
        totals[r["outcome"]] = totals.get(r["outcome"], 0) + r["count"]
    return {**totals, "by_reason": by_reason}


def funnel(
    conn: Connection,
    d: Dialect,
    period: Period,
    conversion_days: int,
    rows: list | None = None,
    now: datetime | None = None,
) -> list[dict]:
    if rows is None:
        rows = cohort_outcomes(conn, d, period, conversion_days, now or datetime.now(UTC))
    # Devices seen in the period that never became anyone: with the people identified, the visitors.
    anonymous = as_int(conn.execute(never_identified_devices(period)).scalar_one())
    return funnel_stages(rows, anonymous, conversion_days)


def funnel_stages(rows: list, anonymous: int, conversion_days: int) -> list[dict]:
    identified = sum(as_int(r.identified) for r in rows)
    return [
        {
            "stage": "anonymous",
            "label": "visitors (people + never-identified devices)",
            "count": identified + anonymous,
        },
        {"stage": "identified", "label": "identified people", "count": identified},
        {
            "stage": "messaged",
            "label": "sent a journey message in the period",
            "count": sum(as_int(r.messaged) for r in rows),
        },
        {
            "stage": "purchased",
            "label": f"first order after a message (≤ {conversion_days} d, in the period)",
            "count": sum(as_int(r.purchased) for r in rows),
        },
    ]
