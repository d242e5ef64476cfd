#!/bin/sh
# Create or upgrade Temporal's two PostgreSQL databases (history and visibility) — what the
# deprecated temporalio/auto-setup image used to do at start-up. Runs in temporalio/admin-tools
# before the server starts, on every `docker compose up`: `create` skips an existing database,
# `setup-schema -v 0.0` leaves a versioned schema alone and `update-schema` applies only the
# versions that are missing, so it is also how a Temporal upgrade migrates its schema.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS (the PostgreSQL host) is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${POSTGRES_PWD:?POSTGRES_PWD is required}"
DB_PORT="${DB_PORT:-5432}"
DBNAME="${DBNAME:-temporal}"
VISIBILITY_DBNAME="${VISIBILITY_DBNAME:-temporal_visibility}"
SCHEMA_DIR="${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"
export SQL_PASSWORD="$POSTGRES_PWD"  # read by temporal-sql-tool; keeps the password off the command line

sql() {
  temporal-sql-tool --plugin postgres12 --endpoint "$POSTGRES_SEEDS" --port "$DB_PORT" --user "$POSTGRES_USER" "$@"
}

for pair in "$DBNAME:temporal" "$VISIBILITY_DBNAME:visibility"; do
  database="${pair%%:*}"
  schema="${pair##*:}"
  echo "temporal schema: $database ($schema)"
  sql --database "$database" create
  sql --database "$database" setup-schema -v 0.0
  sql --database "$database" update-schema -d "$SCHEMA_DIR/$schema/versioned"
done
echo "temporal schema: up to date"
