"""Report marks of events written once per statement on PostgreSQL: the INSERT, UPDATE and DELETE
triggers of `events` see all of a statement's rows at once (transition tables) instead of running
per row — a 500-event ingest or a 10 000-event identity merge ran the mark function per row (7.8 ms
of a batch, 45 µs a merged row). SQLite keeps its row triggers (no statement triggers there).

Revision ID: 0018
Revises: 0017
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ORDERS = "('Order Completed', 'Order Cancelled')"


def _marks(rows: str) -> str:
    """The marks of 0015's events trigger, for a statement's rows: an order's person, the person of
    every copy of an order or cancellation (looked up by index once per row: OFFSET 0 keeps the
    planner from joining the statement's rows to all of `events`, a plan it would cache for the
    session), and the device of an event with no owner. UNION: each owner marked once."""
    return (
        "INSERT INTO report_dirty (kind, key) "
        f"SELECT 'person', coalesce(r.person_id, '') FROM {rows} r WHERE r.name = 'Order Completed' "
        f"UNION SELECT 'person', coalesce(o.person_id, '') FROM {rows} r CROSS JOIN LATERAL "
        "(SELECT e.person_id FROM events e WHERE e.order_id = r.order_id AND e.name = 'Order Completed' OFFSET 0) o "
        f"WHERE r.order_id IS NOT NULL AND r.name IN {ORDERS} "
        f"UNION SELECT 'device', r.anonymous_id FROM {rows} r WHERE r.person_id IS NULL AND r.anonymous_id IS NOT NULL;"
    )


# An UPDATE trigger with transition tables cannot name columns (PostgreSQL refuses UPDATE OF … with
# REFERENCING): it marks the rows of every UPDATE of events. Each one today changes a column the
# reports read (person_id in merges, duplicate_of for copies), so nothing is marked for nothing.
STATEMENT_TRIGGERS = [
    "CREATE FUNCTION report_mark_events_rows() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
    f"IF TG_OP IN ('INSERT', 'UPDATE') THEN\n{_marks('new_rows')}\nEND IF;\n"
    f"IF TG_OP IN ('UPDATE', 'DELETE') THEN\n{_marks('old_rows')}\nEND IF;\n"
    "RETURN NULL;\nEND $$",
    "CREATE TRIGGER report_mark_events_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION report_mark_events_rows()",
    "CREATE TRIGGER report_mark_events_update AFTER UPDATE ON events "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION report_mark_events_rows()",
    "CREATE TRIGGER report_mark_events_delete AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION report_mark_events_rows()",
]


def _drop_event_triggers() -> None:
    for op_ in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER report_mark_events_{op_} ON events")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _drop_event_triggers()  # the row triggers of 0015 (and their copies on every partition)
    op.execute("DROP FUNCTION report_mark_events()")
    for ddl in STATEMENT_TRIGGERS:
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _drop_event_triggers()
    op.execute("DROP FUNCTION report_mark_events_rows()")
    spec = importlib.util.spec_from_file_location("rollups_0015", Path(__file__).with_name("0015_report_rollups.py"))
    rollups = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rollups)
    for ddl in rollups._postgresql_triggers():
        if "report_mark_events" in ddl.split("(")[0]:  # events' function and its three row triggers
            op.execute(ddl)
