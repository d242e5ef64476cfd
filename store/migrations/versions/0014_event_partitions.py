"""events partitioned by month on PostgreSQL (issue 16); SQLite keeps its table as it is

A partitioned table's primary key and unique indexes must include the partition key (`timestamp`):
the primary key becomes (id, timestamp) — ids still come from the same sequence, so they stay
unique and increasing — and message ids are unique per (message_id, timestamp) on `events`, with
their global uniqueness (ingest's dedupe of retries) kept in `event_message_ids` (see
store/message_ids.py). No foreign key references `events`. Rows are copied into the new table
inside the migration's transaction, partitions covering their months (store/partitions.py).

Revision ID: 0014
Revises: 0013
"""

from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

from store import partitions

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OLD = "events_before_0014"
INDEXES = [  # the non-unique indexes of `events` at 0013, on either table shape
    'CREATE INDEX ix_events_anonymous_id_timestamp ON events (anonymous_id, "timestamp")',
    'CREATE INDEX ix_events_person_id_timestamp ON events (person_id, "timestamp")',
    'CREATE INDEX ix_events_name_timestamp ON events (name, "timestamp")',
    "CREATE INDEX ix_events_cart_id ON events (cart_id)",
    "CREATE INDEX ix_events_unowned_user_id ON events (user_id) WHERE person_id IS NULL",
    'CREATE INDEX ix_events_unowned_anonymous_id ON events (anonymous_id, "timestamp") WHERE person_id IS NULL',
]
PLAIN_KEYS = ["events_pkey", "events_message_id_key"]
PARTITIONED_KEYS = ["events_pkey", "uq_events_message_id_timestamp"]


def _set_aside(keys: list[str]) -> None:
    """Rename `events` out of the way and drop its indexes (their names are the new table's)."""
    op.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    for key in keys:
        op.execute(f"ALTER TABLE events DROP CONSTRAINT {key}")
    for index in INDEXES:
        op.execute(f"DROP INDEX {index.split()[2]}")
    op.execute(f"ALTER TABLE events RENAME TO {OLD}")


def _move_rows_and_drop_old() -> None:
    """Copy the rows (same columns, same order: LIKE), hand the id sequence to the new table, drop the old."""
    op.execute(f"INSERT INTO events SELECT * FROM {OLD}")
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")
    op.execute(f"DROP TABLE {OLD}")
    for index in INDEXES:
        op.execute(index)
    op.execute("ANALYZE events")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _set_aside(PLAIN_KEYS)
    op.execute(f'CREATE TABLE events (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp")')
    op.execute('ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id, "timestamp")')
    op.execute('ALTER TABLE events ADD CONSTRAINT uq_events_message_id_timestamp UNIQUE (message_id, "timestamp")')
    partitions.create_default(bind)
    oldest = bind.scalar(text(f'SELECT min("timestamp") FROM {OLD}'))
    for month in partitions.months_to_hold(datetime.now(UTC), oldest):
        partitions.create_month(bind, month)
    op.execute(
        "CREATE TABLE event_message_ids (message_id VARCHAR(255) PRIMARY KEY, "
        '"timestamp" TIMESTAMP WITH TIME ZONE NOT NULL)'
    )
    op.execute('CREATE INDEX ix_event_message_ids_timestamp ON event_message_ids ("timestamp")')
    op.execute(f'INSERT INTO event_message_ids SELECT message_id, "timestamp" FROM {OLD}')
    _move_rows_and_drop_old()


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _set_aside(PARTITIONED_KEYS)
    op.execute(f"CREATE TABLE events (LIKE {OLD} INCLUDING DEFAULTS)")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id)")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_message_id_key UNIQUE (message_id)")
    op.execute("DROP TABLE event_message_ids")
    _move_rows_and_drop_old()
