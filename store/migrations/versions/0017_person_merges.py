"""Person merges: which person absorbed which, and when; identity conflicts found by person (both read
by the person timeline; merges and deletes look conflicts up by person too)

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_merges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("absorbed_person_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_person_merges_person_id", "person_merges", ["person_id"])
    for column in ("owner_person_id", "claimant_person_id"):
        op.create_index(f"ix_identity_conflicts_{column}", "identity_conflicts", [column])


def downgrade() -> None:
    for column in ("owner_person_id", "claimant_person_id"):
        op.drop_index(f"ix_identity_conflicts_{column}", table_name="identity_conflicts")
    op.drop_index("ix_person_merges_person_id", table_name="person_merges")
    op.drop_table("person_merges")
