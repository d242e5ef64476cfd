"""Report roll-ups: per day x journey x step x variant sums the journey report reads, each person's
and never-identified device's share of them, and the dirty marks database triggers write in every
writer's transaction (docs/reports.md)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ORDERS = "('Order Completed', 'Order Cancelled')"

# Per table: the columns whose change matters, which rows matter (R is NEW or OLD) and the
# (kind, key, from, condition) marks a changed row leaves. Insert-only: writers never wait on a mark.
TRACKED = {
    "people": (("id", "identified_at"), None, [("person", "R.id", "", "")]),
    "journey_runs": (("person_id", "route", "started_at"), None, [("person", "R.person_id", "", "")]),
    "messages": (
        ("person_id", "journey", "step", "status", "reason", "sent_at", "created_at", "cart_id"),
        None,
        [("person", "R.person_id", "", "")],
    ),
    "journey_log": (
        ("person_id", "workflow_id", "journey", "step", "kind", "reason", "at"),
        None,
        [("person", "R.person_id", "", "")],
    ),
    "events": (
        ("name", "person_id", "anonymous_id", "timestamp", "order_id", "duplicate_of", "properties", "cart_id"),
        f"R.name IN {ORDERS} OR (R.person_id IS NULL AND R.anonymous_id IS NOT NULL)",
        [
            ("person", "coalesce(R.person_id, '')", "", "R.name = 'Order Completed'"),
            # every copy of the same order: which copy counts, and whether it was cancelled
            (
                "person",
                "coalesce(o.person_id, '')",
                "FROM events o",
                f"R.order_id IS NOT NULL AND R.name IN {ORDERS} AND o.order_id = R.order_id"
                " AND o.name = 'Order Completed'",
            ),
            ("device", "R.anonymous_id", "", "R.person_id IS NULL AND R.anonymous_id IS NOT NULL"),
        ],
    ),
    "identifiers": (
        ("kind", "value"),
        "R.kind = 'anonymous_id'",
        [("device", "R.value", "", "R.kind = 'anonymous_id'")],
    ),
}


def _marks(marks, row: str) -> str:
    statements = []
    for kind, key, source, condition in marks:
        where = f" WHERE {condition}" if condition else (" WHERE true" if not source else "")
        statements.append(
            f"INSERT INTO report_dirty (kind, key) SELECT '{kind}', {key} {source}{where};".replace("R.", f"{row}.")
        )
    return "\n".join(statements)


def _sqlite_triggers() -> list[str]:
    ddl = []
    for table, (columns, when, marks) in TRACKED.items():
        for op_, rows in (("INSERT", ("NEW",)), ("DELETE", ("OLD",)), ("UPDATE", ("NEW", "OLD"))):
            on = f"UPDATE OF {', '.join(columns)}" if op_ == "UPDATE" else op_
            condition = " OR ".join(f"({when.replace('R.', f'{r}.')})" for r in rows) if when else ""
            body = "\n".join(_marks(marks, r) for r in rows)
            ddl.append(
                f"CREATE TRIGGER report_mark_{table}_{op_.lower()} AFTER {on} ON {table} FOR EACH ROW"
                f"{' WHEN ' + condition if condition else ''}\nBEGIN\n{body}\nEND"
            )
    return ddl


def _postgresql_triggers() -> list[str]:
    ddl = []
    for table, (columns, when, marks) in TRACKED.items():
        ddl.append(
            f"CREATE FUNCTION report_mark_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            f"IF TG_OP IN ('INSERT', 'UPDATE') THEN\n{_marks(marks, 'NEW')}\nEND IF;\n"
            f"IF TG_OP IN ('UPDATE', 'DELETE') THEN\n{_marks(marks, 'OLD')}\nEND IF;\n"
            "RETURN NULL;\nEND $$"
        )
        for op_, rows in (("INSERT", ("NEW",)), ("DELETE", ("OLD",)), ("UPDATE", ("NEW", "OLD"))):
            on = f"UPDATE OF {', '.join(columns)}" if op_ == "UPDATE" else op_
            condition = " OR ".join(f"({when.replace('R.', f'{r}.')})" for r in rows) if when else ""
            ddl.append(
                f"CREATE TRIGGER report_mark_{table}_{op_.lower()} AFTER {on} ON {table} FOR EACH ROW"
                f"{' WHEN (' + condition + ')' if condition else ''} EXECUTE FUNCTION report_mark_{table}()"
            )
    return ddl


def _rollup_columns() -> list[sa.Column]:
    text = lambda name, n: sa.Column(name, sa.String(length=n), nullable=False)  # noqa: E731
    return [
        text("figure", 32),
        text("day", 10),
        text("journey", 32),
        sa.Column("step", sa.Integer(), nullable=False),
        text("variant", 64),
        text("outcome", 16),
        text("reason", 80),
        text("prev_day", 10),
        text("end_day", 10),
        text("after_day", 10),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("cart_hits", sa.Integer(), nullable=False),
        sa.Column("prior", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
    ]


KEY = ("figure", "day", "journey", "step", "variant", "outcome", "reason", "prev_day", "end_day", "after_day")


def upgrade() -> None:
    op.create_index(
        "ix_events_order_id",
        "events",
        ["order_id"],
        postgresql_where=sa.text("order_id IS NOT NULL"),
        sqlite_where=sa.text("order_id IS NOT NULL"),
    )
    op.create_table(
        "report_dirty",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
    )
    op.create_table(
        "report_contributions",
        *_rollup_columns(),
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner_kind", sa.String(length=8), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_report_contributions_owner", "report_contributions", ["owner_kind", "owner"])
    op.create_index("ix_report_contributions_figure_day", "report_contributions", ["figure", "day"])
    op.create_table(
        "report_rollups",
        *_rollup_columns(),
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.UniqueConstraint(*KEY, name="uq_report_rollups_key"),
    )
    op.create_table(
        "report_rollup_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("attribution_window_seconds", sa.Float(), nullable=False),
        sa.Column("conversion_days", sa.Integer(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
    )
    pg = op.get_bind().dialect.name == "postgresql"
    for ddl in _postgresql_triggers() if pg else _sqlite_triggers():
        op.execute(ddl)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for table in TRACKED:
        for op_ in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER report_mark_{table}_{op_}" + (f" ON {table}" if pg else ""))
        if pg:
            op.execute(f"DROP FUNCTION report_mark_{table}()")
    for table in ("report_rollup_state", "report_rollups", "report_contributions", "report_dirty"):
        op.drop_table(table)
    op.drop_index("ix_events_order_id", "events")
