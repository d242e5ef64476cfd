"""Monthly partitions of `events` on PostgreSQL (issue 16): the table is partitioned by RANGE on
`timestamp` — the time retention, reports, history loads and merges select on — one partition per
calendar month (UTC), created a few months ahead, and a DEFAULT partition for whatever falls outside
(a Shopify import of old orders, a clock years off). Retention drops whole months instead of
deleting their rows; the rows of the boundary month, and those in DEFAULT, go through the DELETE of
`store.retention`. SQLite keeps one unpartitioned table: nothing here runs there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from store import message_ids
from store.dialect import is_postgresql

PARENT = "events"
DEFAULT = "events_default"
MONTHS_AHEAD = 3  # partitions exist this many months past the current one, so ingest never waits on DDL
MONTHS_BACK = 24  # the migration gives older rows no month of their own: they go to DEFAULT
_NAME = re.compile(r"^events_(\d{4})_(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in UTC: the range of one partition, [start, end)."""

    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC) if moment.tzinfo else moment
        return cls(moment.year, moment.month)

    @classmethod
    def named(cls, table: str) -> Month | None:
        """The month a partition's name says, None for a name that is not one (DEFAULT)."""
        found = _NAME.match(table)
        return cls(int(found[1]), int(found[2])) if found else None

    @property
    def name(self) -> str:
        return f"events_{self.year:04d}_{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.plus(1).start

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)


def months_to_hold(now: datetime, oldest: datetime | None = None, ahead: int = MONTHS_AHEAD) -> list[Month]:
    """The months that should have a partition: from the month of `oldest` (the oldest row, when
    converting a table; at most MONTHS_BACK back) through `ahead` months past `now`'s."""
    current = Month.of(now)
    first = max(Month.of(oldest), current.plus(-MONTHS_BACK)) if oldest is not None else current
    first = min(first, current)
    return [first.plus(n) for n in range(_months_from(first, current) + ahead + 1)]


def droppable(names: list[str], cutoff: datetime) -> list[str]:
    """The monthly partitions entirely older than `cutoff` (their end at or before it), oldest first;
    never DEFAULT."""
    months = sorted(m for m in map(Month.named, names) if m is not None and m.end <= cutoff)
    return [m.name for m in months]


def _months_from(first: Month, last: Month) -> int:
    return (last.year - first.year) * 12 + last.month - first.month


def partitions(conn: Connection) -> list[str]:
    """The partitions of `events` as they are in the database, by name."""
    return list(
        conn.scalars(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:parent AS regclass) ORDER BY c.relname"
            ),
            {"parent": PARENT},
        )
    )


def create_month(conn: Connection, month: Month) -> None:
    """Create `month`'s partition. Rows DEFAULT holds for that month (they arrived before it had a
    partition) move into it first: PostgreSQL refuses a new partition while DEFAULT has rows for it."""
    bounds = f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    in_month = {"start": month.start, "end": month.end}
    stranded = conn.scalar(
        text(f'SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE "timestamp" >= :start AND "timestamp" < :end)'),
        in_month,
    )
    if not stranded:
        conn.execute(text(f"CREATE TABLE {month.name} PARTITION OF {PARENT} {bounds}"))
        return
    conn.execute(text(f"CREATE TABLE {month.name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} "
            f'WHERE "timestamp" >= :start AND "timestamp" < :end RETURNING *) '
            f"INSERT INTO {month.name} SELECT * FROM moved"
        ),
        in_month,
    )
    conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {month.name} {bounds}"))


def create_default(conn: Connection) -> None:
    conn.execute(text(f"CREATE TABLE {DEFAULT} PARTITION OF {PARENT} DEFAULT"))


@dataclass(frozen=True)
class Dropped:
    name: str
    rows: int  # the planner's estimate (pg_class.reltuples): counting a month would read it all


def _take_turns(conn: Connection) -> None:
    """Two maintenance runs at once (two cron hosts) change partitions one after the other."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('breadcrumb: event partitions'))"))


def create_ahead(engine: Engine, now: datetime, ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the missing partitions from the current month through `ahead` months on; returns
    their names (none on SQLite, none when they all exist: run it as often as you like)."""
    if not is_postgresql(engine):
        return []
    created = []
    with engine.begin() as conn:
        _take_turns(conn)
        existing = set(partitions(conn))
        for month in months_to_hold(now, ahead=ahead):
            if month.name not in existing:
                create_month(conn, month)
                created.append(month.name)
    return created


def drop_older_than(engine: Engine, cutoff: datetime) -> list[Dropped]:
    """Drop the monthly partitions whose every row is older than `cutoff` (DETACH, then DROP: no row
    is read or deleted); returns what went. Each partition goes in its own short transaction."""
    if not is_postgresql(engine):
        return []
    with engine.connect() as conn:
        names = droppable(partitions(conn), cutoff)
    dropped = []
    for name in names:
        with engine.begin() as conn:
            _take_turns(conn)
            if name not in partitions(conn):
                continue  # another maintenance run dropped it meanwhile
            rows = conn.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": name})
            conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
        dropped.append(Dropped(name, max(int(rows or 0), 0)))
    return dropped


def is_partitioning_table(name: str) -> bool:
    """A table of the partitioning itself (a partition, DEFAULT, the message-id ledger): not in the models."""
    return name in (DEFAULT, message_ids.TABLE) or Month.named(name) is not None


def compared_with_the_models(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object` when comparing the database with the models: on PostgreSQL the
    partitions, the message-id ledger and the (message_id, timestamp) uniqueness of `events` are
    this module's, not the models' (the models keep SQLite's one-column unique message id)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if dialect != "postgresql":
            return True
        if type_ == "table":
            return not is_partitioning_table(name or "")
        return not (type_ == "unique_constraint" and obj.table.name == PARENT)

    return include
