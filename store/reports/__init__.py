"""Reports: did the journeys make money (`journeys`), and is the tracking healthy (`tracking_health`)?

Every figure is computed by set-based SQL (SQLAlchemy Core, the same statements on SQLite and
PostgreSQL, shared pieces in `sql`): the database joins and aggregates; Python only reshapes the
handful of aggregate rows that come back. No query returns events. The definitions are in
`store/reports/journeys.py` and `store/reports/tracking_health.py`.
"""

from store.reports.journeys import DEFAULT_CONVERSION_DAYS, summary
from store.reports.period import Period, make_period, parse_moment
from store.reports.tracking_health import tracking

__all__ = ["DEFAULT_CONVERSION_DAYS", "Period", "make_period", "parse_moment", "summary", "tracking"]
