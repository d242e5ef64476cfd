"""The message ids ingest has accepted, on PostgreSQL: the front doors' dedupe once `events` is
partitioned. A partitioned table's unique indexes must include the partition key, so `events` can
only promise one row per (message_id, timestamp) — but a client's retry can carry another timestamp
(Segment's is corrected by `sentAt`, which a retry sends anew; a missing or clamped one becomes the
arrival). This unpartitioned table keeps one row per message id; ingest inserts here first and
stores only the events whose id was new. Its rows go with retention, by `timestamp`, in batches.
SQLite keeps the unique message id on `events` itself and has no such table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

from store.dialect import is_postgresql

TABLE = "event_message_ids"
BATCH = 10_000


def forget_older_than(engine: Engine, cutoff: datetime, batch: int = BATCH) -> int:
    """Delete the ids of events older than `cutoff` (retention took the events); returns how many."""
    if not is_postgresql(engine):
        return 0
    total = 0
    statement = text(
        f"DELETE FROM {TABLE} WHERE message_id IN "
        f'(SELECT message_id FROM {TABLE} WHERE "timestamp" < :cutoff LIMIT :batch)'
    )
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(statement, {"cutoff": cutoff, "batch": batch}).rowcount
        total += deleted
        if deleted < batch:
            return total
