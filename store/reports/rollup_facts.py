"""One person's (or never-identified device's) share of the report roll-ups, as plain data.

The journey report's figures are sums over people, but most are not sums over days: "distinct
people sent a message in the period" counts a person once however many days they were messaged.
Each share is therefore keyed by the day it happened *and its neighbouring days*, which makes every
figure a plain sum over any range of whole days [D0, D1):

- distinct per person (recipients, devices): one row per distinct day, with the previous day; the
  range counts the row whose day is in it and whose previous day is before it (or none) — the
  person's first day inside the range, exactly once.
- a unit whose outcome depends on its first and last message inside the range (recovery): one row
  per contiguous run of its message days, with the days just before and after the run; the range
  holds exactly one run — the one starting after a day before it and ending before a day after it.
- the cohort: one row per person, on the identify day; "sent a message in the period" one row per
  message day (the first inside the range, as above), with the first order's day.

Pure functions: the definitions are the package docstring's (store/reports/__init__.py), computed
here per person in Python; tests/test_report_rollups.py checks them against the exact SQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from journeys.history import as_utc

ROUTE_PRIORITY = {"cart_recovery": 5, "browse_recovery": 4, "welcome": 3, "control": 2, "none": 1}
SKIP_KINDS = ("exit", "skipped")


@dataclass(frozen=True)
class Sent:
    """A message (reason already in the report's categories: "sent" for sent ones)."""

    id: str
    journey: str
    step: int
    status: str
    reason: str
    sent_at: datetime | None
    created_at: datetime
    cart_id: str | None


@dataclass(frozen=True)
class LogLine:
    id: int
    workflow_id: str
    journey: str
    step: int | None
    kind: str
    reason: str  # category, "other" when none fits
    at: datetime


@dataclass(frozen=True)
class Purchase:
    """A stored `Order Completed` (not the other copy of one): `counts` when it is its order's first
    copy and the shop did not cancel it (revenue and attribution); every one counts for recovery
    and for the first purchase."""

    at: datetime
    cart_id: str | None
    revenue: float | None
    counts: bool


@dataclass
class PersonHistory:
    person_id: str
    identified_at: datetime | None = None  # None: no people row (messages of a deleted person)
    runs: list[tuple[str, datetime]] = field(default_factory=list)  # (route, started_at)
    messages: list[Sent] = field(default_factory=list)
    log: list[LogLine] = field(default_factory=list)
    purchases: list[Purchase] = field(default_factory=list)


Row = dict[str, Any]


def day(moment: datetime | None) -> str:
    return as_utc(moment).strftime("%Y-%m-%d") if moment is not None else ""


def _row(figure: str, **values: Any) -> Row:
    return {"figure": figure, "count": 1, **values}


def person_rows(h: PersonHistory, window: timedelta, conversion_days: int) -> list[Row]:
    """Every roll-up row this person contributes."""
    sent = [m for m in h.messages if m.status == "sent" and m.sent_at is not None]
    return [
        *_orders(h, sent, window),
        *_messages(h),
        *_log(h),
        *_recipients(sent),
        *_units(h, sent, window),
        *_cohort(h, sent, conversion_days),
    ]


def device_rows(event_days: set[str]) -> list[Row]:
    """A never-identified device: one row per day it was seen (distinct over any range)."""
    return [_row("device", day=d, prev_day=prev) for d, prev in _chain(event_days)]


def _chain(days: set[str]) -> list[tuple[str, str]]:
    ordered = sorted(days)
    return list(zip(ordered, ["", *ordered[:-1]], strict=False))


def _when(m: Sent) -> datetime:
    assert m.sent_at is not None  # person_rows keeps only the sent messages that have the moment
    return m.sent_at


def _orders(h: PersonHistory, sent: list[Sent], window: timedelta) -> list[Row]:
    rows = []
    for order in h.purchases:
        if not order.counts:
            continue
        touches = [m for m in sent if order.at - window <= _when(m) <= order.at]
        last = max(touches, key=lambda m: (_when(m), m.step, m.id), default=None)
        rows.append(
            _row(
                "order",
                day=day(order.at),
                journey=last.journey if last else "",
                step=last.step if last else 0,
                revenue=order.revenue or 0.0,
                hits=int(order.revenue is None),  # orders without a value
            )
        )
    return rows


def _messages(h: PersonHistory) -> list[Row]:
    return [
        _row(
            "message",
            day=day(m.sent_at if m.status == "sent" else m.created_at),
            journey=m.journey,
            step=m.step,
            outcome=m.status,
            reason=m.reason,
        )
        for m in h.messages
        if m.status != "skipped"  # the send re-check's hold: its journey-log line counts it
    ]


def _log(h: PersonHistory) -> list[Row]:
    rows = [
        _row("deferred", day=day(line.at), journey=line.journey, reason=line.reason)
        for line in h.log
        if line.kind == "waiting"
    ]
    first: dict[tuple[str, int | None], LogLine] = {}
    for line in sorted((line for line in h.log if line.kind in SKIP_KINDS), key=lambda line: (line.at, line.id)):
        first.setdefault((line.workflow_id, line.step), line)
    rows += [_row("skipped", day=day(line.at), journey=line.journey, reason=line.reason) for line in first.values()]
    return rows


def _recipients(sent: list[Sent]) -> list[Row]:
    groups: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for m in sent:
        d = day(_when(m))
        groups[("recipient_step", m.journey, m.step)].add(d)
        groups[("recipient_journey", m.journey, 0)].add(d)
        groups[("recipient", "", 0)].add(d)
    return [
        _row(figure, day=d, prev_day=prev, journey=journey, step=step)
        for (figure, journey, step), days in groups.items()
        for d, prev in _chain(days)
    ]


def _units(h: PersonHistory, sent: list[Sent], window: timedelta) -> list[Row]:
    units: dict[tuple[str, str, str | None], list[Sent]] = defaultdict(list)
    for m in sent:
        units[("unit", m.journey, m.cart_id if m.journey == "cart_recovery" else None)].append(m)
        units[("unit_person", "", None)].append(m)
    rows = []
    for (figure, journey, cart_id), messages in units.items():
        by_day: dict[str, list[datetime]] = defaultdict(list)
        for m in messages:
            by_day[day(_when(m))].append(_when(m))
        days = sorted(by_day)
        for i in range(len(days)):
            for j in range(i, len(days)):
                times = [t for d in days[i : j + 1] for t in by_day[d]]
                first, last = min(times), max(times) + window
                hits = [o for o in h.purchases if first <= o.at <= last]
                rows.append(
                    _row(
                        figure,
                        journey=journey,
                        day=days[i],
                        prev_day=days[i - 1] if i else "",
                        end_day=days[j],
                        after_day=days[j + 1] if j + 1 < len(days) else "",
                        hits=int(bool(hits)),
                        cart_hits=int(cart_id is not None and any(o.cart_id == cart_id for o in hits)),
                    )
                )
    return rows


def cohort_route(h: PersonHistory, first_at: datetime | None, conversion_days: int) -> str:
    """The most urgent journey started within the N days and before the first order."""
    assert h.identified_at is not None
    horizon = h.identified_at + timedelta(days=conversion_days)
    in_window = [(route, started) for route, started in h.runs if started <= horizon]
    priority = max(
        (
            ROUTE_PRIORITY.get(route, 0)
            for route, started in in_window
            if first_at is None or first_at < h.identified_at or started <= first_at
        ),
        default=0,
    )
    names = {rank: name for name, rank in ROUTE_PRIORITY.items()}
    return names.get(priority) or ("none" if in_window else "unrouted")


def _cohort(h: PersonHistory, sent: list[Sent], conversion_days: int) -> list[Row]:
    if h.identified_at is None:
        return []
    first_at = min((o.at for o in h.purchases), default=None)
    identified = day(h.identified_at)
    route = cohort_route(h, first_at, conversion_days)
    prior = first_at is not None and first_at < h.identified_at
    converted = first_at is not None and h.identified_at <= first_at <= h.identified_at + timedelta(
        days=conversion_days
    )
    rows = [_row("cohort", day=identified, journey=route, prior=int(prior), hits=int(converted), at=h.identified_at)]
    first_sent: dict[str, datetime] = {}
    for m in sent:
        d = day(_when(m))
        first_sent[d] = min(first_sent.get(d, _when(m)), _when(m))
    for d, prev in _chain(set(first_sent)):
        purchased = first_at is not None and converted and first_at >= first_sent[d]
        rows.append(
            _row(
                "cohort_sent",
                day=identified,
                journey=route,
                prev_day=prev,
                end_day=d,
                after_day=day(first_at),
                hits=int(purchased),
            )
        )
    return rows
