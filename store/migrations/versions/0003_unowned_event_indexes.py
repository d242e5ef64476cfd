"""partial indexes for the merge of not-yet-owned events

Identify attaches waiting events by anonymous id (inside the merge window) and by a new user id;
both look only at events with no person yet, so index exactly those.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNOWNED = sa.text("person_id IS NULL")


def upgrade() -> None:
    op.create_index("ix_events_unowned_user_id", "events", ["user_id"],
                    postgresql_where=UNOWNED, sqlite_where=UNOWNED)
    op.create_index("ix_events_unowned_anonymous_id", "events", ["anonymous_id", "timestamp"],
                    postgresql_where=UNOWNED, sqlite_where=UNOWNED)


def downgrade() -> None:
    op.drop_index("ix_events_unowned_anonymous_id", "events")
    op.drop_index("ix_events_unowned_user_id", "events")
