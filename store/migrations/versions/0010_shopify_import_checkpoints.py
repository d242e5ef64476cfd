"""Shopify Admin API import checkpoints (resume an interrupted `breadcrumb shopify import`)

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shopify_import_checkpoints",
        sa.Column("shop", sa.String(length=255), primary_key=True),
        sa.Column("resource", sa.String(length=32), primary_key=True),
        sa.Column("search", sa.String(length=255), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("shopify_import_checkpoints")
