"""The events table at size on PostgreSQL (issue 16): which monthly partitions should exist (pure),
migration 0014 converting a populated table and back, ingest's dedupe through the message-id ledger
after it, partitions created ahead, and retention dropping whole months. The PostgreSQL tests skip
without BREADCRUMB_TEST_POSTGRES_URL (CI sets it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from alembic import command
from sqlalchemy import insert, text
from typer.testing import CliRunner

from conftest import SERVER_KEY, ServedApp, event_row, fresh_database, settings_for
from store.db import make_engine
from store.maintenance import upkeep
from store.migrate import alembic_config, upgrade
from store.models import Event
from store.partitions import DEFAULT, Month, create_ahead, droppable, months_to_hold, partitions
from worker.cli import app

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
WINDOW = timedelta(days=30)


def test_months_to_hold_run_from_the_current_month_to_those_ahead_across_a_year():
    assert [m.name for m in months_to_hold(datetime(2026, 11, 30, 23, tzinfo=UTC), ahead=2)] == [
        "events_2026_11",
        "events_2026_12",
        "events_2027_01",
    ]


def test_months_to_hold_reach_back_to_the_oldest_row_but_not_past_two_years():
    assert months_to_hold(NOW, oldest=datetime(2025, 12, 31, 23, tzinfo=UTC), ahead=0)[0] == Month(2025, 12)
    assert months_to_hold(NOW, oldest=datetime(1970, 1, 1, tzinfo=UTC), ahead=0)[0] == Month(2024, 3)
    assert months_to_hold(NOW, oldest=NOW + timedelta(days=90), ahead=1) == [Month(2026, 3), Month(2026, 4)]


def test_month_bounds_are_utc_and_a_month_of_another_zone_is_its_utc_month():
    east = datetime(2026, 4, 1, 1, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert Month.of(datetime(2026, 3, 31, 23, 30, tzinfo=UTC)) == Month(2026, 3)
    assert Month.of(east) == Month(2026, 4)
    assert (Month(2026, 12).start, Month(2026, 12).end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_only_months_entirely_older_than_the_cutoff_are_droppable():
    names = ["events_2026_02", DEFAULT, "events_2025_12", "events_2026_01", "events_2026_03"]
    cutoff = datetime(2026, 2, 10, tzinfo=UTC)  # February still holds rows newer than it
    assert droppable(names, cutoff) == ["events_2025_12", "events_2026_01"]
    assert droppable(names, datetime(2026, 2, 1, tzinfo=UTC)) == ["events_2025_12", "events_2026_01"]
    assert droppable(names, datetime(2026, 1, 31, 23, tzinfo=UTC)) == ["events_2025_12"]


def _where(engine, message_id: str) -> str:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT tableoid::regclass::text FROM events WHERE message_id = :m"), {"m": message_id})


def _alembic(engine, action, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        action(config, revision)


@pytest.fixture
def postgres(tmp_path):
    with fresh_database("postgres", tmp_path, "breadcrumb_partitions") as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def test_the_migration_partitions_a_populated_table_and_ingest_still_dedupes(postgres):
    now = datetime.now(UTC)
    upgrade(postgres, "0011")
    old = [event_row(f"old-{n}", now - timedelta(days=20 * n), person_id="p-1") for n in range(40)]  # ~26 months
    with postgres.begin() as conn:
        conn.execute(insert(Event.__table__), old)
        before = dict(conn.execute(text("SELECT message_id, id FROM events")).all())

    upgrade(postgres)

    with postgres.connect() as conn:
        assert conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'events'")) == "p"
        assert dict(conn.execute(text("SELECT message_id, id FROM events")).all()) == before
        held = partitions(conn)
        ledger = conn.scalar(text("SELECT count(*) FROM event_message_ids"))
    expected = [m.name for m in months_to_hold(now, oldest=now - timedelta(days=20 * 39))]
    assert held == sorted([*expected, DEFAULT]) and expected[-1] == Month.of(now).plus(3).name
    assert ledger == 40
    assert _where(postgres, "old-0") == Month.of(now).name
    assert _where(postgres, "old-39") == DEFAULT  # older than the two years given months

    with ServedApp(settings_for(postgres.url.render_as_string(hide_password=False))) as served:
        http = httpx.Client(base_url=served.url, auth=(SERVER_KEY, ""), timeout=60)

        def track(message_id: str, at: datetime) -> httpx.Response:
            body = {"userId": "u-1", "event": "Product Viewed", "messageId": message_id, "timestamp": at.isoformat()}
            return http.post("/v1/track", json=body)

        fresh = track("new-1", now - timedelta(minutes=5))
        retry = track("new-1", now - timedelta(minutes=4))  # a retry whose timestamp moved
        migrated_again = track("old-3", now)  # a message held since before the migration
        http.close()
    assert fresh.headers["X-Breadcrumb-Stored"] == "1", fresh.text
    assert (retry.headers["X-Breadcrumb-Stored"], retry.headers["X-Breadcrumb-Duplicates"]) == ("0", "1")
    assert migrated_again.headers["X-Breadcrumb-Stored"] == "0"
    with postgres.connect() as conn:
        new_id = conn.scalar(text("SELECT id FROM events WHERE message_id = 'new-1'"))
        assert conn.scalar(text("SELECT count(*) FROM events WHERE message_id IN ('new-1', 'old-3')")) == 2
    assert new_id > max(before.values())  # the same id sequence goes on
    assert _where(postgres, "new-1") == Month.of(now - timedelta(minutes=5)).name

    _alembic(postgres, command.downgrade, "0011")

    with postgres.connect() as conn:
        assert conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'events'")) == "r"
        assert conn.scalar(text("SELECT count(*) FROM events")) == 41
        assert conn.scalar(text("SELECT to_regclass('event_message_ids')")) is None
        assert partitions(conn) == []
    with pytest.raises(Exception, match="events_message_id_key"):  # one row per message id again
        with postgres.begin() as conn:
            conn.execute(insert(Event.__table__), [event_row("old-3", now + timedelta(hours=1))])


def test_partitions_are_created_ahead_once_and_take_over_default_rows(postgres):
    upgrade(postgres)
    later = datetime.now(UTC) + timedelta(days=200)
    with postgres.begin() as conn:
        conn.execute(insert(Event.__table__), [event_row("early-bird", later)])  # no month for it yet
    assert _where(postgres, "early-bird") == DEFAULT

    created = create_ahead(postgres, later, ahead=1)

    assert Month.of(later).name in created and Month.of(later).plus(1).name in created
    assert _where(postgres, "early-bird") == Month.of(later).name
    assert create_ahead(postgres, later, ahead=1) == []  # idempotent
    with postgres.connect() as conn:  # the moved-in partition got the parent's indexes on attach
        indexes = conn.scalar(text("SELECT count(*) FROM pg_indexes WHERE tablename = :t"), {"t": Month.of(later).name})
        assert indexes == conn.scalar(text("SELECT count(*) FROM pg_indexes WHERE tablename = :t"), {"t": DEFAULT})


def test_retention_drops_whole_old_months_and_deletes_the_boundary(postgres, monkeypatch):
    upgrade(postgres)
    now = datetime.now(UTC)
    old_month = Month.of(now).plus(-14)
    with postgres.begin() as conn:
        for month in (old_month, old_month.plus(1), old_month.plus(2)):
            conn.execute(
                text(
                    f"CREATE TABLE {month.name} PARTITION OF events "
                    f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
                )
            )
    cutoff = old_month.plus(1).start + timedelta(days=10)  # what a retention of (now - cutoff) means
    retention = now - cutoff
    rows = [
        event_row("whole-month", old_month.start + timedelta(days=3), person_id="p-1"),
        event_row("boundary-old", cutoff - timedelta(days=1), person_id="p-1"),
        event_row("boundary-kept", cutoff + timedelta(days=1), person_id="p-1"),
        event_row("recent", now - timedelta(days=1), person_id="p-1"),
    ]
    with postgres.begin() as conn:
        conn.execute(insert(Event.__table__), rows)
        conn.execute(text('INSERT INTO event_message_ids SELECT message_id, "timestamp" FROM events'))

    done = upkeep(postgres, now, retention, WINDOW, timedelta(days=5))

    assert [d.name for d in done.dropped] == [old_month.name]
    assert done.expired.past_retention == 1  # boundary-old, by DELETE
    assert done.forgotten == 2
    with postgres.connect() as conn:
        held = partitions(conn)
        left = set(conn.scalars(text("SELECT message_id FROM events")))
        ledger = set(conn.scalars(text("SELECT message_id FROM event_message_ids")))
    assert old_month.name not in held and old_month.plus(1).name in held
    assert left == ledger == {"boundary-kept", "recent"}

    monkeypatch.setenv("BREADCRUMB_EVENT_RETENTION", f"{retention.days - 40}d")
    result = CliRunner().invoke(app, ["maintenance", "--db", postgres.url.render_as_string(hide_password=False)])
    assert result.exit_code == 0, result.output
    assert old_month.plus(1).name in result.output and "dropped" in result.output
    with postgres.connect() as conn:
        assert old_month.plus(1).name not in partitions(conn)
        assert set(conn.scalars(text("SELECT message_id FROM events"))) == {"recent"}


def test_two_maintenance_runs_at_once_create_each_month_once(postgres):
    upgrade(postgres)
    later = datetime.now(UTC) + timedelta(days=400)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: create_ahead(postgres, later, ahead=2), range(2)))
    months = [m.name for m in months_to_hold(later, ahead=2)]
    assert sorted(runs[0] + runs[1]) == months  # each created by exactly one of them
    with postgres.connect() as conn:
        assert set(months) <= set(partitions(conn))
