"""A report's period `[since, until)` and how people write its bounds (a date, a datetime, `30d`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, UTC

from sqlalchemy.sql import ColumnElement

from journeys.history import as_utc
from journeys.policy import parse_duration
from store.models import iso


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
        return {"since": iso(self.since), "until": iso(self.until)}


_RELATIVE = re.compile(r"^\s*\d+(\.\d+)?\s*[dhms]", re.IGNORECASE)


def parse_moment(
    value: str | datetime | date | None, *, end: bool = False, now: datetime | None = None
) -> datetime | None:
    """A period bound: ISO date (`2025-03-01`; as `until` it includes that whole day), ISO datetime
    (naive = UTC), or a duration before now (`30d`, `12h`). Raises ValueError naming the value."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        day = datetime.combine(value, time(0), tzinfo=UTC)
        return day + timedelta(days=1) if end else day
    text = str(value).strip()
    if _RELATIVE.match(text):
        return as_utc(now or datetime.now(UTC)) - parse_duration(text)
    try:
        if len(text) == 10:
            return parse_moment(date.fromisoformat(text), end=end)
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (2025-03-01), a datetime (2025-03-01T12:00:00Z) or a duration before now (30d)"
        ) from None


def make_period(
    since: str | datetime | date | None = None, until: str | datetime | date | None = None, now: datetime | None = None
) -> Period:
    period = Period(parse_moment(since, now=now), parse_moment(until, end=True, now=now))
    if period.since and period.until and period.since >= period.until:
        raise ValueError("since must be before until")
    return period


# --------------------------------------------------------------------------------------------------
# The few expressions SQLite and PostgreSQL spell differently
