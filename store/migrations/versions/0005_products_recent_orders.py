"""products.recent_orders: the bestseller count, refreshed in the background, not per message

Welcome emails without browsing fall back to bestsellers: the admin's rank, then what sold most in
the last 90 days. Counting that from the orders' `products[]` on every send cost half a second on a
shop with 30 000 orders a quarter; the count now lives on the product and the worker refreshes it
every few minutes.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recent_orders", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("recent_orders")
