"""The Alembic migrations build exactly the schema the models describe, on both databases, and
`breadcrumb migrate` applies them."""

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers the tables)
from alembic import command
from store.db import make_engine
from store.migrate import alembic_config, upgrade
from store.partitions import compared_with_the_models, is_partitioning_table
from conftest import fresh_database, venv_binary


def _drift(engine) -> list:
    with engine.connect() as connection:
        include = compared_with_the_models(connection.dialect.name)
        return compare_metadata(
            MigrationContext.configure(connection, opts={"include_object": include}), SQLModel.metadata
        )


def test_migrations_match_the_models(database):
    assert _drift(database.engine) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_event_partitions_migration_goes_down_and_up_again(backend, tmp_path):
    """0014 (monthly partitions on PostgreSQL, nothing on SQLite) reverts to 0011 and applies again."""
    with fresh_database(backend, tmp_path, "breadcrumb_down_up") as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            config = alembic_config(url)
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.downgrade(config, "0011")
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0011"
            upgrade(engine)
            assert _drift(engine) == []
        finally:
            engine.dispose()


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
