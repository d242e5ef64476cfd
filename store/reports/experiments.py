"""The experiment report: per step with variants, each variant's recipients, conversions and revenue
per recipient with its interval, and the probability that it beats the others (journeys/experiments.py).

- **Recipients**: distinct people sent (status `sent`, in the period) that step with that variant.
- **Conversions**: those of them with at least one order of the period credited to a message of that
  step and variant (last touch, the same attribution as the journey report).
- **Revenue per recipient**: the credited revenue / recipients; SQL returns per variant the sum and
  the sum of squares of each recipient's credited revenue, the numeric step is in Python.

The holdout (`holdout_percent`) stays the baseline of the journey report's lift: an experiment
compares variants among the people who got messages, never against the control group.
"""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from sqlalchemy import Connection, Engine, and_, func, select

from journeys.experiments import Arm, compare
from journeys.history import as_utc
from journeys.policy import Policy
from store.models import ExperimentDecision, table_of
from store.reports.period import Period
from store.reports.sql import MESSAGES, Dialect, as_int, attributed_cte, connection, journey_order

DECISIONS = table_of(ExperimentDecision)


def arms(conn: Connection, period: Period, window: timedelta, journey: str | None = None) -> dict[tuple, list[Arm]]:
    """(journey, step) → the sums of each variant sent in the period (one journey's, or all)."""
    m = MESSAGES
    which = [m.c.variant.is_not(None), *([m.c.journey == journey] if journey else [])]
    recipients = conn.execute(
        select(m.c.journey, m.c.step, m.c.variant, func.count(func.distinct(m.c.person_id)).label("people"))
        .where(m.c.status == "sent", *which, *period.where(m.c.sent_at))
        .group_by(m.c.journey, m.c.step, m.c.variant)
    ).all()
    attributed = attributed_cte(Dialect(conn.dialect.name), period, window)
    per_person = (
        select(
            m.c.journey,
            m.c.step,
            m.c.variant,
            attributed.c.person_id,
            func.coalesce(func.sum(attributed.c.revenue), 0.0).label("revenue"),
        )
        .select_from(attributed.join(m, and_(m.c.id == attributed.c.message_id, *which)))
        .group_by(m.c.journey, m.c.step, m.c.variant, attributed.c.person_id)
        .subquery("per_recipient")
    )
    earned = {
        (row.journey, row.step, row.variant): row
        for row in conn.execute(
            select(
                per_person.c.journey,
                per_person.c.step,
                per_person.c.variant,
                func.count().label("conversions"),
                func.sum(per_person.c.revenue).label("revenue"),
                func.sum(per_person.c.revenue * per_person.c.revenue).label("squares"),
            ).group_by(per_person.c.journey, per_person.c.step, per_person.c.variant)
        ).all()
    }
    found: dict[tuple, list[Arm]] = {}
    for row in recipients:
        sums = earned.get((row.journey, row.step, row.variant))
        found.setdefault((row.journey, row.step), []).append(
            Arm(
                name=row.variant,
                recipients=as_int(row.people),
                conversions=as_int(sums.conversions) if sums else 0,
                revenue=float(sums.revenue or 0.0) if sums else 0.0,
                revenue_squares=float(sums.squares or 0.0) if sums else 0.0,
            )
        )
    return found


def in_policy_order(found: list[Arm], names: list[str]) -> list[Arm]:
    """The variants as journeys.toml lists them (a configured variant not sent yet counts zero),
    then any variant no longer configured, by name."""
    by_name = {arm.name: arm for arm in found}
    return [by_name.get(name, Arm(name, 0, 0, 0.0, 0.0)) for name in names] + sorted(
        (arm for arm in found if arm.name not in names), key=lambda arm: arm.name
    )


def experiments(
    engine: Engine | Connection, policy: Policy, period: Period = Period(), now: datetime | None = None
) -> dict:
    """Every experiment configured or sent in the period, with its figures and auto-winner decision."""
    now = as_utc(now or datetime.now(UTC))
    with connection(engine) as conn:
        found = arms(conn, period, policy.attribution_window)
        decisions = {(row.journey, row.step): row for row in conn.execute(select(DECISIONS)).all()}
    configured = {
        (journey, index): step
        for journey, spec in policy.journeys.items()
        for index, step in enumerate(spec.steps, 1)
        if step.variants
    }
    report = []
    for key in sorted(set(found) | set(configured), key=lambda k: (journey_order(k[0]), k[1])):
        step = configured.get(key)
        names = [v.label for v in step.variants] if step and step.variants else []
        decision = decisions.get(key)
        report.append(
            {
                "journey": key[0],
                "step": key[1],
                "configured": step is not None,
                "auto_winner": step.auto_winner.model_dump() if step and step.auto_winner else None,
                "variants": [f.as_dict() for f in compare(in_policy_order(found.get(key, []), names))],
                "decision": (
                    {
                        "winner": decision.winner,
                        "decided_at": as_utc(decision.decided_at).isoformat(),
                        "figures": decision.figures,
                    }
                    if decision
                    else None
                ),
            }
        )
    return {"period": period.as_dict(), "generated_at": now.isoformat(), "experiments": report}
