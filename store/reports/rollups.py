"""The journey report read from the roll-ups (a few thousand rows), not from the events.

The roll-ups answer any period of whole UTC days (plain dates, or no bounds) with the default
conversion window, exactly: store/reports/rollup_facts.py keys every share by its day and the
neighbouring days that make distinct counts sums. The one figure that moves with the clock — who is
still inside their N days — is summed per identify day, except for the single day whose window ends
today: its people are read one by one. Any other period (a datetime bound, `30d`) or conversion
window is answered by the exact queries (store/reports/journeys.py), as is `exact=True`.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace

from sqlalchemy import Connection, Engine, and_, case, func, or_, select, true
from sqlalchemy.sql import ColumnElement

from journeys.history import as_utc
from journeys.policy import Policy
from store.reports import journeys
from store.reports.journeys import DEFAULT_CONVERSION_DAYS
from store.reports.period import Period
from store.reports.rollup_facts import day
from store.reports.rollup_refresh import CONTRIBUTIONS, ROLLUPS, refresh
from store.reports.sql import as_int, connection

R = ROLLUPS.c


def summary(
    engine: Engine | Connection,
    policy: Policy,
    period: Period = Period(),
    conversion_days: int = DEFAULT_CONVERSION_DAYS,
    now: datetime | None = None,
    exact: bool = False,
) -> dict:
    """The journey report (definitions: the package docstring): from the roll-ups, brought up to date
    first, when they can answer exactly; else from the stored rows."""
    if conversion_days < 1:
        raise ValueError("conversion_days must be at least 1")
    if exact or not isinstance(engine, Engine) or not answers(period, conversion_days):
        return journeys.summary(engine, policy, period, conversion_days, now)
    now = as_utc(now or datetime.now(UTC))
    refresh(engine, policy.attribution_window, conversion_days)
    with connection(engine) as conn:
        days = Days(period)
        outcomes = _cohort(conn, days, conversion_days, now)
        return journeys.assemble(
            policy,
            period,
            conversion_days,
            now,
            outcomes,
            revenue=_revenue(conn, days),
            recovered=_recovery(conn, days),
            messages=_messages(conn, days),
            funnel=journeys.funnel_stages(outcomes, _devices(conn, days), conversion_days),
        )


def answers(period: Period, conversion_days: int) -> bool:
    """Whole UTC days (or open ends) and the window the roll-ups are kept for."""
    return conversion_days == DEFAULT_CONVERSION_DAYS and all(
        bound is None or as_utc(bound).time() == time(0) for bound in (period.since, period.until)
    )


class Days:
    """The period as days [first, end), and the conditions that pick each share once."""

    def __init__(self, period: Period) -> None:
        self.first = day(period.since) if period.since else None
        self.end = day(period.until) if period.until else None

    def holds(self, column) -> list[ColumnElement]:
        """The day is in the period ("" — no moment — only when the period has no bounds)."""
        conditions = [column >= self.first] if self.first else []
        conditions += [column < self.end] if self.end else []
        return conditions + ([column != ""] if conditions else [])

    def holds_day(self, value: str) -> bool:
        return (self.first is None or value >= self.first) and (self.end is None or value < self.end)

    def starts(self, prev_day) -> ColumnElement:
        """The share's previous day is before the period: its first day inside it."""
        return or_(prev_day == "", prev_day < self.first) if self.first else prev_day == ""

    def ends(self, end_day, after_day) -> list[ColumnElement]:
        """The run ends inside the period and its next day is after it."""
        if not self.end:
            return [after_day == ""]
        return [end_day < self.end, or_(after_day == "", after_day >= self.end)]


def _sum(column) -> ColumnElement:
    return func.coalesce(func.sum(column), 0)


def _revenue(conn: Connection, days: Days) -> dict:
    orders = conn.execute(
        select(
            R.day,
            R.journey,
            R.step,
            _sum(R.count).label("orders"),
            func.sum(R.revenue).label("revenue"),
            _sum(R.hits).label("without_value"),
        )
        .where(R.figure == "order", *days.holds(R.day))
        .group_by(R.day, R.journey, R.step)
    ).all()
    rows = [
        SimpleNamespace(
            day=r.day,
            journey=r.journey or None,
            step=r.step if r.journey else None,
            orders=r.orders,
            revenue=r.revenue,
            without_value=r.without_value,
        )
        for r in orders
    ]
    first = [*days.holds(R.day), days.starts(R.prev_day)]
    recipients = conn.execute(
        select(R.journey, R.step, _sum(R.count).label("people"))
        .where(R.figure == "recipient_step", *first)
        .group_by(R.journey, R.step)
    ).all()
    per_journey = dict(
        conn.execute(
            select(R.journey, _sum(R.count)).where(R.figure == "recipient_journey", *first).group_by(R.journey)
        ).all()
    )
    everyone = conn.execute(select(_sum(R.count)).where(R.figure == "recipient", *first)).scalar_one()
    return journeys.revenue_figures(rows, recipients, per_journey, everyone)


def _recovery(conn: Connection, days: Days) -> dict:
    inside = [*days.holds(R.day), days.starts(R.prev_day), *days.ends(R.end_day, R.after_day)]
    rows = conn.execute(
        select(
            R.journey,
            _sum(R.count).label("messaged"),
            _sum(R.hits).label("recovered"),
            _sum(R.cart_hits).label("by_cart"),
        )
        .where(R.figure == "unit", *inside)
        .group_by(R.journey)
    ).all()
    people, recovered = conn.execute(
        select(_sum(R.count), _sum(R.hits)).where(R.figure == "unit_person", *inside)
    ).one()
    return journeys.recovery_figures(rows, people, recovered)


def _messages(conn: Connection, days: Days) -> dict:
    sent = conn.execute(
        select(R.outcome.label("status"), R.journey, R.reason, _sum(R.count).label("n"))
        .where(R.figure == "message", *days.holds(R.day))
        .group_by(R.outcome, R.journey, R.reason)
    ).all()
    logged = conn.execute(
        select(R.figure.label("outcome"), R.journey, R.reason, _sum(R.count).label("n"))
        .where(R.figure.in_(("skipped", "deferred")), *days.holds(R.day))
        .group_by(R.figure, R.journey, R.reason)
    ).all()
    return journeys.reason_figures(sent, logged)


def _devices(conn: Connection, days: Days) -> int:
    return as_int(
        conn.execute(
            select(_sum(R.count)).where(R.figure == "device", *days.holds(R.day), days.starts(R.prev_day))
        ).scalar_one()
    )


def _cohort(conn: Connection, days: Days, conversion_days: int, now: datetime) -> list[SimpleNamespace]:
    """Per route, the figures of `journeys.cohort_outcomes`. A person is still inside their N days
    when identified after `now` − N days: every identify day before that day's is over, every one
    after it open; that one day's people are read one by one."""
    cut = now - timedelta(days=conversion_days)
    cut_day = day(cut)
    found: dict[str, SimpleNamespace] = {}

    def route(name: str) -> SimpleNamespace:
        return found.setdefault(
            name,
            SimpleNamespace(
                route=name, identified=0, prior=0, converted=0, open=0, open_converted=0, messaged=0, purchased=0
            ),
        )

    def add(name: str, count: int, prior: int, converted: int, still_open: bool) -> None:
        r = route(name)
        r.identified += count
        r.prior += prior
        if still_open:
            r.open += count - prior  # someone who bought before identifying is never "open"
            r.open_converted += converted
        else:
            r.converted += converted

    state = case((R.day > cut_day, "open"), else_="over")
    for r in conn.execute(
        select(R.journey, state.label("state"), _sum(R.count), _sum(R.prior), _sum(R.hits))
        .where(R.figure == "cohort", R.day != cut_day, *days.holds(R.day))
        .group_by(R.journey, state)
    ):
        add(r[0], as_int(r[2]), as_int(r[3]), as_int(r[4]), r.state == "open")
    c = CONTRIBUTIONS.c
    if days.holds_day(cut_day):
        for person in conn.execute(
            select(c.journey, c.at, c.prior, c.hits).where(c.figure == "cohort", c.day == cut_day)
        ):
            add(person.journey, 1, person.prior, person.hits, as_utc(person.at) > cut)
    inside = [*days.holds(R.day), *days.holds(R.end_day), days.starts(R.prev_day)]
    bought_inside = and_(true(), *days.holds(R.after_day))
    for name, messaged, purchased in conn.execute(
        select(R.journey, _sum(R.count), _sum(case((bought_inside, R.hits), else_=0)))
        .where(R.figure == "cohort_sent", *inside)
        .group_by(R.journey)
    ):
        route(name).messaged += as_int(messaged)
        route(name).purchased += as_int(purchased)
    return list(found.values())
