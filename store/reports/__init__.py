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
  revenue from `revenue`, else `total`, else `value` (the first that is a number). An order the
  shop cancelled (an `Order Cancelled` with its `order_id`) is left out of revenue, attribution and
  recovery; first-purchase conversion still counts the purchase.
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

from store.reports.journeys import DEFAULT_CONVERSION_DAYS
from store.reports.period import Period, make_period, parse_moment
from store.reports.rollups import summary
from store.reports.tracking import tracking

__all__ = ["DEFAULT_CONVERSION_DAYS", "Period", "make_period", "parse_moment", "summary", "tracking"]
