"""Segments: who is (and was) in each `[segments.NAME]` of journeys.toml, with entry and exit times

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CURRENT = sa.text("left_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "segment_memberships",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("segment", sa.String(length=255), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_segment_memberships_person_id", "segment_memberships", ["person_id"])
    op.create_index(
        "ix_segment_memberships_current",
        "segment_memberships",
        ["segment", "person_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_table("segment_memberships")
