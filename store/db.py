"""Engines and sessions. SQLite is the embedded default (WAL; writers take the lock up front so
concurrent identifies queue instead of failing, readers do not wait for it); PostgreSQL is first-class."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from store.dialect import dialect_name, insert_for, is_postgresql


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if is_postgresql(url):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, json_serializer=_json)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, json_serializer=_json)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY instead of waiting, so
        # writers take the lock up front. Readers (see `reading`) must not: under WAL they run beside
        # the writer instead of queueing behind every ingest request.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


READ_ONLY = "breadcrumb_read_only"


def reading(engine: Engine) -> Engine:
    """The same engine (same pool) for transactions that only read."""
    return engine.execution_options(**{READ_ONLY: True})


_WRITERS: dict[str, threading.RLock] = {}  # SQLite file → the lock its writers in this process queue on


def _writer_lock(engine: Engine) -> threading.RLock | contextlib.nullcontext:
    """SQLite has one writer at a time. Threads that all send BEGIN IMMEDIATE at once do not queue:
    each loser sleeps in SQLite's busy handler (1, 2, 5 … 100 ms) and retries, so under 32
    concurrent requests a write waits for its luck, not its turn — a p99 of seconds (a lock convoy).
    In-process they queue on this lock, first come first served, and SQLite's busy handler is left
    for the other processes (the worker). PostgreSQL needs none."""
    if dialect_name(engine) != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url)
    lock = _WRITERS.get(key)
    if lock is None:
        lock = _WRITERS.setdefault(key, threading.RLock())
    return lock


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error. On SQLite the process's writers
    take turns (`_writer_lock`); keep the work inside short — it holds the database's write lock."""
    with _writer_lock(engine), Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def insert_ignoring_conflicts(session: Session, table):
    """INSERT … ON CONFLICT DO NOTHING for whichever database the session is on."""
    return insert_for(dialect_name(session))(table).on_conflict_do_nothing()


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on `server_url`'s server for a test or benchmark run, dropped
    (open connections and all) on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # fails loudly when the server is unreachable
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
