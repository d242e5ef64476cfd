"""Message delivery lease and idempotent journal lines

A message is claimed before it is delivered: `status = 'sending'` with the claiming attempt's
token (`lease_owner`) and the end of its delivery deadline (`lease_until`), so a second attempt of
the same send (a retry after a lost heartbeat, a worker restarted mid-delivery) waits instead of
delivering it again. `journey_log.note_key` makes a retried journal or conversion write land once.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("journey_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note_key", sa.String(length=400), nullable=True))
        batch_op.create_unique_constraint("uq_journey_log_note_key", ["note_key"])


def downgrade() -> None:
    with op.batch_alter_table("journey_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_journey_log_note_key", type_="unique")
        batch_op.drop_column("note_key")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
