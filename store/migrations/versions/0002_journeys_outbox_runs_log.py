"""journeys: outbox, runs, log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:58:10.550874
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('journey_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('person_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('journey', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('journey_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journey_log_person_id'), ['person_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_journey_log_workflow_id'), ['workflow_id'], unique=False)

    op.create_table('journey_runs',
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('person_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('route', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('cart_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('cart_value', sa.Float(), nullable=True),
    sa.Column('cart_recovery_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('workflow_id'),
    sa.UniqueConstraint('cart_recovery_key')
    )
    with op.batch_alter_table('journey_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journey_runs_person_id'), ['person_id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('person_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('dedupe_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['dispatched_at', 'available_at'], unique=False)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('duplicate_of', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('duplicate_of')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
    with op.batch_alter_table('journey_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journey_runs_person_id'))

    op.drop_table('journey_runs')
    with op.batch_alter_table('journey_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journey_log_workflow_id'))
        batch_op.drop_index(batch_op.f('ix_journey_log_person_id'))

    op.drop_table('journey_log')
