"""Catalogue triggers: the product a back-in-stock or price-drop journey is about

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("journey_runs", sa.Column("product_id", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("journey_runs", "product_id")
