"""Suppression list (hashed emails/phones that outlive deletion) and an outbox that cannot jam
(claim owner, dead letters, partial indexes for the claim and for pruning)

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING = sa.text("dispatched_at IS NULL AND dead_at IS NULL")
DISPATCHED = sa.text("dispatched_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("digest", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claim_owner", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index("ix_outbox_pending")
    op.create_index("ix_outbox_claimable", "outbox", ["available_at"], postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_outbox_dispatched_at", "outbox", ["dispatched_at"],
                    postgresql_where=DISPATCHED, sqlite_where=DISPATCHED)
    op.create_index("ix_outbox_person_id", "outbox", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_person_id", "outbox")
    op.drop_index("ix_outbox_dispatched_at", "outbox")
    op.drop_index("ix_outbox_claimable", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("dead_at")
        batch.drop_column("claim_owner")
    op.create_index("ix_outbox_pending", "outbox", ["dispatched_at", "available_at"])
    op.drop_table("suppressions")
