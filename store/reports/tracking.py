"""The tracking-health report: identify lateness, fragmented ids, missing recommended properties,
duplicates caught, anonymous activity that never merged, events ingest flagged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, UTC

from sqlalchemy import Connection, Engine, and_, case, func, or_, select, true

from journeys import taxonomy
from journeys.history import as_utc
from journeys.policy import Policy
from store.reports.period import Period
from store.reports.sql import (
    DAY,
    EVENTS,
    IDENTIFIERS,
    PEOPLE,
    Dialect,
    as_int,
    cohort_cte,
    connection,
    first_event_cte,
    materialized,
    never_identified_devices,
    ratio,
)

# An identify this soon after the shopper's first checkout/order still counts as "at checkout".
CHECKOUT_GRACE = timedelta(minutes=5)
MANY_ANONYMOUS_IDS = 3
# Identify-lateness histogram: upper bounds in seconds (the last bucket is open).
LATENESS_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("< 1 min", 60.0),
    ("1–10 min", 600.0),
    ("10–60 min", 3600.0),
    ("1–6 h", 6 * 3600.0),
    ("6–24 h", DAY),
    ("1–3 d", 3 * DAY),
    ("3–7 d", 7 * DAY),
    ("7–30 d", 30 * DAY),
    ("≥ 30 d", None),
)


def tracking(
    engine: Engine | Connection,
    policy: Policy,
    period: Period = Period(),
    now: datetime | None = None,
    many_ids: int = MANY_ANONYMOUS_IDS,
) -> dict:
    """Identify lateness, fragmented ids, missing recommended properties, duplicates caught,
    anonymous activity that never merged, and events ingest flagged (clock ahead, foreign links)."""
    now = as_utc(now or datetime.now(UTC))
    with connection(engine) as conn:
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
    return Devices(as_int(seen), as_int(single_page), as_int(never))


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
        select(
            first_anonymous.c.person_id,
            (d.epoch(cohort.c.identified_at) - d.epoch(first_anonymous.c.first_at)).label("seconds"),
        )
        .select_from(first_anonymous.join(cohort, cohort.c.person_id == first_anonymous.c.person_id))
        .cte("lateness")
    )

    def stats(columns) -> list:
        seconds = columns.seconds
        bucket_of = case(
            *((seconds < upper, label) for label, upper in LATENESS_BUCKETS if upper is not None),
            else_=LATENESS_BUCKETS[-1][0],
        )
        return [
            func.count(),
            func.avg(seconds),
            func.max(seconds),
            *(func.sum(case((bucket_of == label, 1), else_=0)) for label, _ in LATENESS_BUCKETS),
        ]

    row = conn.execute(d.percentiles(lateness, "seconds", (0.5, 0.9), stats)).one_or_none()
    median, p90, count, mean, longest, *bucket_counts = (
        row if row is not None else (None,) * (5 + len(LATENESS_BUCKETS))
    )
    buckets = {label: n for (label, _), n in zip(LATENESS_BUCKETS, bucket_counts, strict=False)}

    # "Identified only at checkout or purchase": by the time they identified (give or take the
    # grace), they had already started a checkout or ordered.
    first_checkout = first_event_cte("first_checkout", (taxonomy.CHECKOUT_STARTED, taxonomy.ORDER_COMPLETED))
    at_checkout = d.epoch(first_checkout.c.first_at) <= d.epoch(cohort.c.identified_at) + CHECKOUT_GRACE.total_seconds()
    people, late = conn.execute(
        select(func.count(), func.sum(case((at_checkout, 1), else_=0))).select_from(
            cohort.outerjoin(first_checkout, first_checkout.c.person_id == cohort.c.person_id)
        )
    ).one()
    people, late, with_activity = as_int(people), as_int(late), as_int(count)
    return {
        "identified": people,
        "with_anonymous_activity": with_activity,
        "identified_at_first_touch": people - with_activity,
        "median_seconds": _seconds(median),
        "p90_seconds": _seconds(p90),
        "mean_seconds": _seconds(mean),
        "max_seconds": _seconds(longest),
        "histogram": [{"bucket": label, "people": as_int(buckets.get(label))} for label, _ in LATENESS_BUCKETS],
        "identified_at_checkout_or_purchase": late,
        "share_at_checkout_or_purchase": ratio(late, people),
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
    distribution: dict[int, int] = dict(
        conn.execute(select(per_person.c.n, func.count()).group_by(per_person.c.n)).all()
    )
    # The most fragmented: only people with many ids are looked at (a HAVING on the identifiers).
    many_ids = (
        select(i.c.person_id, func.count().label("n"))
        .where(i.c.kind == "anonymous_id")
        .group_by(i.c.person_id)
        .having(func.count() >= many)
        .subquery("many_ids")
    )
    top = conn.execute(
        select(many_ids.c.person_id, many_ids.c.n)
        .select_from(many_ids.join(p, p.c.id == many_ids.c.person_id))
        .where(*period.where(p.c.identified_at))
        .order_by(many_ids.c.n.desc(), many_ids.c.person_id)
        .limit(10)
    ).all()
    people = sum(distribution.values())
    fragmented = sum(count for n, count in distribution.items() if n >= many)
    buckets = [("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3–4", 3, 4), ("5+", 5, None)]
    return {
        "people": people,
        "many_threshold": many,
        "people_with_many_ids": fragmented,
        "share_with_many_ids": ratio(fragmented, people),
        "max_ids": max((n for n, c in distribution.items() if c), default=0),
        "distribution": [
            {
                "anonymous_ids": label,
                "people": sum(c for n, c in distribution.items() if n >= lo and (hi is None or n <= hi)),
            }
            for label, lo, hi in buckets
        ],
        "most_fragmented": [{"person_id": r.person_id, "anonymous_ids": r.n} for r in top],
        "anonymous_ids": devices.seen,
        "single_page_view_ids": devices.single_page_view,
        "share_single_page_view": ratio(devices.single_page_view, devices.seen),
    }


def missing_properties(conn: Connection, d: Dialect, period: Period) -> dict:
    e = EVENTS
    names = tuple(taxonomy.RECOMMENDED_PROPERTIES)
    # Events per name: the (name, timestamp) index alone answers it.
    totals: dict[str, int] = dict(
        conn.execute(
            select(e.c.name, func.count()).where(e.c.name.in_(names), *period.where(e.c.timestamp)).group_by(e.c.name)
        ).all()
    )
    # Only events that lack something are unpacked; each counts once through its first gap.
    gaps = materialized(
        select(e.c.name, e.c.missing_properties)
        .where(e.c.type == "track", d.json_length(e.c.missing_properties) > 0, *period.where(e.c.timestamp))
        .cte("with_gaps")
    )
    element, first = d.json_elements_numbered(gaps.c.missing_properties)
    rows = conn.execute(
        select(
            gaps.c.name,
            element.c.value.label("property"),
            func.count().label("n"),
            func.sum(case((first, 1), else_=0)).label("events"),
        )
        .select_from(gaps.join(element, true()))
        .group_by(gaps.c.name, element.c.value)
    ).all()
    rows = [r for r in rows if r.name in totals]
    out = [
        {
            "event": r.name,
            "property": r.property,
            "missing": r.n,
            "events": as_int(totals.get(r.name)),
            "share": ratio(r.n, as_int(totals.get(r.name))),
        }
        for r in rows
    ]
    out.sort(key=lambda r: (-r["missing"], r["event"], r["property"]))
    checked, with_gaps = sum(totals.values()), sum(as_int(r.events) for r in rows)
    return {
        "events_checked": checked,
        "events_with_gaps": with_gaps,
        "share_with_gaps": ratio(with_gaps, checked),
        "by_event_property": out,
    }


def duplicates(conn: Connection, period: Period) -> dict:
    e = EVENTS
    copies = materialized(
        select(e.c.name, e.c.source).where(e.c.duplicate_of.is_not(None), *period.where(e.c.timestamp)).cte("copies")
    )
    rows = conn.execute(
        select(copies.c.name, copies.c.source, func.count().label("n")).group_by(copies.c.name, copies.c.source)
    ).all()
    by_event = [{"event": r.name, "late_copy_source": r.source, "pairs": r.n} for r in rows]
    by_event.sort(key=lambda r: (-r["pairs"], r["event"], r["late_copy_source"]))
    return {"pairs": sum(r["pairs"] for r in by_event), "by_event": by_event}


def unmerged(conn: Connection, period: Period, merge_cutoff: datetime, devices: Devices) -> dict:
    """Anonymous activity (events with an anonymous id and no user id, identify calls aside) that
    never joined a person; what is older than the merge window can no longer merge."""
    e = EVENTS
    unowned = e.c.person_id.is_(None)
    events, never, stale = conn.execute(
        select(
            func.count(),
            func.sum(case((unowned, 1), else_=0)),
            func.sum(case((and_(unowned, e.c.timestamp < merge_cutoff), 1), else_=0)),
        ).where(
            e.c.anonymous_id.is_not(None), e.c.user_id.is_(None), e.c.type != "identify", *period.where(e.c.timestamp)
        )
    ).one()
    events, never = as_int(events), as_int(never)
    return {
        "anonymous_events": events,
        "unmerged_events": never,
        "share_unmerged_events": ratio(never, events),
        "unmergeable_events": as_int(stale),
        "anonymous_ids": devices.seen,
        "unmerged_ids": devices.never_identified,
        "share_unmerged_ids": ratio(devices.never_identified, devices.seen),
    }


FLAGS = ("timestamp_clamped", "foreign_links")


def flagged(conn: Connection, period: Period) -> dict:
    """Events whose client clock ran ahead (timestamp clamped to arrival) or whose links pointed off
    the shop's hosts (left out of catalog and messages), per event name: a storefront to fix."""
    e = EVENTS
    has = {flag: e.c.flags[flag].as_string().is_not(None) for flag in FLAGS}
    rows = conn.execute(
        select(e.c.name, *(func.sum(case((has[flag], 1), else_=0)).label(flag) for flag in FLAGS))
        .where(or_(*has.values()), *period.where(e.c.timestamp))
        .group_by(e.c.name)
    ).all()
    by_event = sorted(
        ({"event": r.name, **{flag: as_int(getattr(r, flag)) for flag in FLAGS}} for r in rows),
        key=lambda r: (-(r["timestamp_clamped"] + r["foreign_links"]), r["event"]),
    )
    return {**{flag: sum(r[flag] for r in by_event) for flag in FLAGS}, "by_event": by_event}
