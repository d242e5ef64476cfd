"""catalog and delivery: the products table, and per-message HTML part, unsubscribe link and attempts

The catalog is fed from Product Viewed / Added to Cart events and `PUT /admin/catalog`; recommendations
check stock in it. Messages now keep their HTML part and signed unsubscribe link next to the text,
and count delivery attempts so a retried send is visible while it is retrying.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("variant", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("bestseller_rank", sa.Integer(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sku", "variant"),
    )
    op.create_index("ix_products_category_in_stock", "products", ["category", "in_stock"], unique=False)

    # Existing messages get an empty HTML part and zero attempts.
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("html", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("unsubscribe_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("attempts")
        batch_op.drop_column("unsubscribe_url")
        batch_op.drop_column("html")
    op.drop_index("ix_products_category_in_stock", "products")
    op.drop_table("products")
