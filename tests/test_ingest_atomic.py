"""API crash mid-batch, in process (issue 7, item 3), on SQLite and PostgreSQL: a failure injected
inside the ingest transaction after the bulk insert rolls the whole batch back, and the client's
retry with the same messageIds stores each event once. (The API process SIGKILLed mid-request is in
tests/test_faults.py.)"""

from __future__ import annotations

import uuid

import pytest

from test_faults import batch_of


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["store.ingest.upsert_from_events", "store.ingest._hub_signals"])
def test_failure_after_the_bulk_insert_rolls_the_whole_batch_back(api, db, monkeypatch, where):
    """In process, on SQLite and PostgreSQL: the ingest transaction fails after the events were
    inserted and identities resolved; nothing of the batch stays, and the retry stores it once."""
    run = uuid.uuid4().hex[:8]
    body = {"batch": batch_of(run, 40)}

    def boom(*args, **kwargs):
        raise Boom("injected failure inside the ingest transaction")

    monkeypatch.setattr(where, boom)
    response = api.segment("batch", body, headers={"Connection": "close"})  # uvicorn drops the connection after a 500
    assert response.status_code == 500
    for table in ("events", "people", "identifiers", "outbox", "products", "rejected"):
        assert db.scalar(f"SELECT count(*) FROM {table}") == 0, f"{table} kept rows of a failed batch"
    monkeypatch.undo()
    retried = api.segment("batch", body)
    assert retried.status_code == 200 and retried.headers["x-breadcrumb-stored"] == "41"
    again = api.segment("batch", body)
    assert again.status_code == 200 and again.headers["x-breadcrumb-duplicates"] == "41"
    assert db.scalar("SELECT count(*) FROM events") == 41
    assert db.scalar("SELECT count(*) FROM outbox") == 1
