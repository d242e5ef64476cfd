#!/bin/bash
# First start of the PostgreSQL volume only (docker-entrypoint-initdb.d): a login role for
# Temporal, allowed to create its own two databases, so Temporal does not use Breadcrumb's superuser.
set -euo pipefail
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 -v password="$TEMPORAL_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'EOSQL'
SELECT format('CREATE ROLE temporal LOGIN CREATEDB PASSWORD %L', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'temporal') \gexec
EOSQL
