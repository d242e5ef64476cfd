"""Which variant a send of an experiment step gets: the recorded auto-winner, else the person's hash.

The auto-winner is decided at send time, inside the send's transaction: while no decision is
recorded, the step's figures are computed (store/reports/experiments.py) and `decide` asked; the
first send that finds the rule met records the winner with its figures and time, and every later
send reads it. Two workers deciding at once insert the same key: the first row wins, both read it.

Computing the figures walks the step's messages and orders (half a second at 20 000 recipients), so
a worker computes them for one experiment at most once a minute (`Checks`); the sends in between
read the recorded decision and otherwise split by hash. The winner so takes over up to a minute
after the rule is met, never before.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from journeys.experiments import AutoWinner, Variant, assign, compare, decide
from store.dialect import insert_for
from store.models import as_utc
from store.reports.experiments import DECISIONS, arms, in_policy_order
from store.reports.period import Period
from store.reports.sql import MESSAGES


class Checks:
    """When this worker may next compute an experiment's figures: at most once per `every` seconds."""

    every = 60.0

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def due(self, journey: str, step: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next.get((journey, step), 0.0):
                return False
            self._next[(journey, step)] = now + self.every
            return True


def recorded_winner(conn: Connection, journey: str, step: int) -> str | None:
    return conn.execute(
        select(DECISIONS.c.winner).where(DECISIONS.c.journey == journey, DECISIONS.c.step == step)
    ).scalar_one_or_none()


def decide_winner(
    conn: Connection,
    journey: str,
    step: int,
    variants: list[Variant],
    rule: AutoWinner,
    window: timedelta,
    now: datetime,
    compute: bool = True,
) -> str | None:
    """The step's winner: recorded already, or (when `compute`) decided now and recorded if the rule is met."""
    if (winner := recorded_winner(conn, journey, step)) is not None or not compute:
        return winner
    # Orders before the experiment's first message cannot be credited to it: leave them out of the sums.
    first_sent = conn.execute(
        select(func.min(MESSAGES.c.sent_at)).where(
            MESSAGES.c.journey == journey, MESSAGES.c.step == step, MESSAGES.c.variant.is_not(None)
        )
    ).scalar_one_or_none()
    if first_sent is None:
        return None
    found = arms(conn, Period(since=as_utc(first_sent)), window, journey).get((journey, step), [])
    figures = compare(in_policy_order(found, [v.label for v in variants]))
    winner = decide(figures, rule)
    if winner is None:
        return None
    conn.execute(
        insert_for(conn.dialect.name)(DECISIONS)
        .values(journey=journey, step=step, winner=winner, figures=[f.as_dict() for f in figures], decided_at=now)
        .on_conflict_do_nothing()
    )
    return recorded_winner(conn, journey, step)


def variant_for(
    conn: Connection,
    person_id: str,
    journey: str,
    step: int,
    variants: list[Variant],
    rule: AutoWinner | None,
    window: timedelta,
    now: datetime,
    compute: bool = True,
) -> Variant:
    """The winner when the step has an auto-winner rule that is decided (and the winner is still
    one of its variants), else the person's own variant by hash."""
    winner = decide_winner(conn, journey, step, variants, rule, window, now, compute) if rule is not None else None
    by_name = {v.label: v for v in variants}
    return by_name.get(winner or "") or assign(variants, person_id, journey, step)
