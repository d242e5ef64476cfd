"""Which database a connection talks to: SQLite (embedded) or PostgreSQL. The one place that asks,
so the store's few dialect-specific statements branch on the same answer."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import URL, Connection, Engine, String, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
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


def among(bind: Bind, column: Any, values: Any) -> Any:
    """`column IN (values)` with the values as one parameter — an array on PostgreSQL (`= ANY(…)`), a
    JSON array on SQLite (`IN (SELECT value FROM json_each(…))`): the statement's text is the same
    whatever their number, so the statement caches keep it, where an IN list of n parameters is a
    new statement for every n and costs a bound parameter each."""
    values = list(values)
    if is_postgresql(bind):
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    # SQLite: the values as one JSON array parameter, for the same reason.
    listed = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))
