"""Which database a connection talks to: SQLite (embedded) or PostgreSQL. The one place that asks,
so the store's few dialect-specific statements branch on the same answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Connection, Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

Bind = Engine | Connection | Session | URL


def dialect_name(bind: Bind) -> str:
    """`postgresql` or `sqlite` for an engine, a connection, a session or a database URL."""
    if isinstance(bind, URL):
        return bind.get_backend_name()
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def is_postgresql(bind: Bind) -> bool:
    return dialect_name(bind) == "postgresql"


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT construct (it has `on_conflict_do_nothing` / `on_conflict_do_update`)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert
