"""Retention: events past BREADCRUMB_EVENT_RETENTION go, and anonymous events of devices never
identified go once they are older than the merge window; everything else stays (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from conftest import event_row
from store.models import Event, Identifier
from store.retention import expire_events
from worker.cli import app

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
WINDOW = timedelta(days=30)


def _event(message_id: str, age: timedelta, *, anonymous_id=None, user_id=None, person_id=None) -> dict:
    return event_row(message_id, NOW - age, anonymous_id=anonymous_id, user_id=user_id, person_id=person_id)


def _store(engine, *events: dict, claimed: tuple[str, ...] = ()) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), list(events))
        for device in claimed:
            conn.execute(
                insert(Identifier.__table__).values(person_id="p-1", kind="anonymous_id", value=device, created_at=NOW)
            )


def _left(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(Event.__table__.c.message_id)))


def test_retention_deletes_only_events_older_than_it(db):
    _store(
        db.engine,
        _event("old-person", timedelta(days=401), person_id="p-1", user_id="u-1"),
        _event("kept-person", timedelta(days=399), person_id="p-1", user_id="u-1"),
        *(_event(f"old-{n}", timedelta(days=500 + n), person_id="p-2") for n in range(5)),
    )

    expired = expire_events(db.engine, NOW, timedelta(days=400), WINDOW, batch=2)

    assert expired.past_retention == 6
    assert _left(db.engine) == {"kept-person"}


def test_without_retention_only_unmergeable_anonymous_events_expire(db):
    _store(
        db.engine,
        _event("stray-old", WINDOW + timedelta(hours=1), anonymous_id="device-stray"),
        _event("stray-recent", WINDOW - timedelta(hours=1), anonymous_id="device-stray"),
        _event("claimed-old", WINDOW * 3, anonymous_id="device-claimed"),
        _event("with-user-id", WINDOW * 3, anonymous_id="device-user", user_id="u-9"),
        _event("merged-old", WINDOW * 3, anonymous_id="device-merged", person_id="p-1"),
        claimed=("device-claimed",),
    )

    expired = expire_events(db.engine, NOW, None, WINDOW)

    assert expired == type(expired)(past_retention=0, never_identified=1)
    assert _left(db.engine) == {"stray-recent", "claimed-old", "with-user-id", "merged-old"}
    assert expire_events(db.engine, NOW, None, WINDOW).never_identified == 0  # idempotent


def test_maintenance_command_applies_the_configured_retention(db, monkeypatch):
    _store(
        db.engine,
        _event("ancient", timedelta(days=10_000), person_id="p-1"),
        _event("today", timedelta(0), person_id="p-1"),
        _event("browsing", timedelta(0), anonymous_id="device-1"),
    )
    monkeypatch.setenv("BREADCRUMB_EVENT_RETENTION", "365d")
    assert db.scalar("SELECT count(*) FROM report_dirty") > 0  # the anonymous view marked its device

    result = CliRunner().invoke(app, ["maintenance", "--db", db.url])

    assert result.exit_code == 0, result.output
    assert "Deleted 1 events past retention and 1 anonymous events" in result.output  # NOW is long past
    assert _left(db.engine) == {"today"}
    # The report roll-ups are brought up to date too: no marks are left to pile up.
    assert "Report roll-ups up to date" in result.output
    assert db.scalar("SELECT count(*) FROM report_dirty") == 0


def test_maintenance_names_a_malformed_retention(db, monkeypatch):
    monkeypatch.setenv("BREADCRUMB_EVENT_RETENTION", "a year")

    result = CliRunner().invoke(app, ["maintenance", "--db", db.url])

    assert result.exit_code == 1
    assert "BREADCRUMB_EVENT_RETENTION" in result.output
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Event.__table__)) == 0
