"""Message experiments: the variant each message got, and the auto-winner decision of each experiment

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("variant", sa.String(length=64), nullable=True))
    op.create_table(
        "experiment_decisions",
        sa.Column("journey", sa.String(length=32), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("winner", sa.String(length=64), nullable=False),
        sa.Column("figures", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_decisions")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("variant")
