"""trust boundaries: identity conflicts of two known people, event flags, catalog not pinned by the future

An identify naming two different known people (userId of one, email of the other) is recorded as an
`identifiers` conflict next to the shared-device ones (which keep their anonymous id; the new kind
has none). Events get `flags`: what ingest corrected (a future timestamp clamped) or refused (a
link to a foreign host). Catalog rows a future-dated event pinned before this release are unpinned.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("identity_conflicts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default="shared_device"))
        batch_op.add_column(sa.Column("identifiers", JSON, nullable=True))
        batch_op.add_column(sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch_op.alter_column("anonymous_id", existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
                              nullable=True)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flags", JSON, nullable=True))
    # "Newest wins" compared against a last_seen_at in the future held the row until that day.
    op.execute("UPDATE products SET last_seen_at = updated_at WHERE last_seen_at > updated_at")


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("flags")
    op.execute("DELETE FROM identity_conflicts WHERE anonymous_id IS NULL")
    with op.batch_alter_table("identity_conflicts", schema=None) as batch_op:
        batch_op.alter_column("anonymous_id", existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
                              nullable=False)
        batch_op.drop_column("message_id")
        batch_op.drop_column("identifiers")
        batch_op.drop_column("kind")
