"""Which database a connection talks to: SQLite (embedded) or PostgreSQL. The one place that asks,
so the store's few dialect-specific statements branch on the same answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import URL, Connection, Dialect, Engine, String, Table, TextClause, any_, bindparam, func, select, text
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
    listed = func.json_each(bindparam(None, orjson.dumps(values).decode(), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


def json_rows_insert(dialect: str, table: Table, columns: Sequence[str]) -> Any:
    """The dialect's INSERT of `columns` into `table` from rows handed as one JSON array parameter,
    `:rows` (`json_rows`), in their order: one statement of a fixed text however many rows, where a
    multi-row VALUES or an `executemany` costs the driver and SQLAlchemy a bound parameter each.
    PostgreSQL reads each element as the table's own row type; SQLite extracts the fields. Add the
    ON CONFLICT clause the caller needs."""
    if dialect == "postgresql":
        fields = ", ".join(f'r."{c}"' for c in columns)
        sql = (
            f"SELECT {fields} FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS e(doc, n), "
            f"jsonb_populate_record(NULL::{table.name}, e.doc) AS r ORDER BY e.n"
        )
    else:  # WHERE true: SQLite's parser needs it between an INSERT's SELECT and ON CONFLICT
        fields = ", ".join(f"json_extract(value, '$.{c}') AS \"{c}\"" for c in columns)
        sql = f"SELECT {fields} FROM json_each(:rows) WHERE true ORDER BY key"
    clause: TextClause = text(sql)
    return insert_for(dialect)(table).from_select(columns, clause.columns(*(table.c[c] for c in columns)))


def json_rows(dialect: Dialect, table: Table, rows: list[dict]) -> str:
    """`rows` as the JSON text `json_rows_insert` reads. On SQLite each value is first bound as
    SQLAlchemy would (dates become its stored text); PostgreSQL reads dates and JSON as they are."""
    if rows and dialect.name == "sqlite":
        columns = tuple(rows[0])
        binds = bind_processors(dialect, table, columns)
        rows = [{c: bind(row[c]) if bind else row[c] for c, bind in zip(columns, binds, strict=True)} for row in rows]
    return orjson.dumps(rows).decode()


@cache
def bind_processors(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> list[Callable[[Any], Any] | None]:
    """How SQLAlchemy turns each column's Python value into the driver's (dates to text on SQLite,
    JSON to text through the engine's serializer), for rows handed to the driver directly."""
    return [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
