"""The Alembic migrations build exactly the schema the models describe, on both databases, and
`breadcrumb migrate` applies them."""

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers the tables)
from store.partitions import compared_with_the_models, is_partitioning_table
from conftest import fresh_database, venv_binary


def test_migrations_match_the_models(database):
    with database.engine.connect() as connection:
        include = compared_with_the_models(connection.dialect.name)
        drift = compare_metadata(
            MigrationContext.configure(connection, opts={"include_object": include}), SQLModel.metadata
        )
    assert drift == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_breadcrumb_migrate_builds_the_schema_on_a_fresh_database(backend, tmp_path):
    """The console script, as an operator runs it, on an empty SQLite file and an empty PostgreSQL
    database; a second run finds nothing to do."""
    with fresh_database(backend, tmp_path / "fresh", "breadcrumb_migrate") as url:
        for _ in range(2):
            done = subprocess.run(
                [venv_binary("breadcrumb"), "migrate", "--db", url], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "schema up to date" in done.stdout
        engine = create_engine(url)
        try:
            tables = {t for t in inspect(engine).get_table_names() if not is_partitioning_table(t)}
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        finally:
            engine.dispose()
    assert set(SQLModel.metadata.tables) | {"alembic_version"} == tables
