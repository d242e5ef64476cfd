"""Front-door requests that arrive while ingest is busy are stored together (`api/ingest_queue.py`,
issue 16): one transaction for all of them, each answered with its own share — and a group that
fails is stored request by request, so only the bad one fails. The turns are held here so the
requests are sure to wait together; `ingest` is wrapped to count (or, for one poisoned message,
fail) the calls, and otherwise runs as it is, on a real database."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api import ingest_queue
from api.app import create_app
from conftest import WRITE_KEY, settings_for

POISON = "poisoned-message"


def track_body(message_id: str | None = None) -> dict:
    return {
        "writeKey": WRITE_KEY,
        "event": "Product Viewed",
        "anonymousId": f"anon-{uuid.uuid4().hex[:8]}",
        "messageId": message_id or uuid.uuid4().hex,
        "properties": {"product_id": "P-1"},
    }


def batch_body(size: int) -> dict:
    return {"writeKey": WRITE_KEY, "batch": [{"type": "track", **track_body()} for _ in range(size)]}


@pytest.fixture
def ingest_calls(monkeypatch) -> list[int]:
    """The number of messages of every `ingest` the queue makes; a call holding POISON fails."""
    calls: list[int] = []
    real = ingest_queue.ingest

    def counted(engine, messages, *args, **kwargs):
        calls.append(len(messages))
        if any(m.message_id == POISON for m in messages):
            raise RuntimeError("a store failure for the poisoned message")
        return real(engine, messages, *args, **kwargs)

    monkeypatch.setattr(ingest_queue, "ingest", counted)
    return calls


def post_together(client: TestClient, requests: list[tuple[str, dict]]) -> list:
    """Post every request while all of the queue's turns are held; let them go once all wait."""
    queue = client.app.state.ingest_queue
    holders = [object() for _ in range(int(queue.turns.total_tokens))]
    for holder in holders:
        client.portal.call(queue.turns.acquire_on_behalf_of, holder)
    waiting = lambda: sum(len(w) for w in queue.waiting.values())  # noqa: E731
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = []
        for path, body in requests:  # one at a time: they wait in this order
            futures.append(pool.submit(client.post, path, json=body))
            deadline = time.monotonic() + 20
            while client.portal.call(waiting) < len(futures) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert client.portal.call(waiting) == len(futures), "a request never waited for a turn"
        for holder in holders:
            client.portal.call(queue.turns.release_on_behalf_of, holder)
        return [future.result(timeout=60) for future in futures]


def stored_events(database, message_ids: list[str]) -> int:
    with database.engine.connect() as conn:
        return sum(
            conn.scalar(text("SELECT count(*) FROM events WHERE message_id = :m"), {"m": message_id})
            for message_id in message_ids
        )


def test_waiting_requests_are_stored_in_one_transaction_each_answered_with_its_share(database, ingest_calls):
    bodies = [track_body() for _ in range(6)]
    retry = dict(bodies[0])  # a client's retry of the first, waiting in the same group
    with TestClient(create_app(settings_for(database.url, auto_migrate=True))) as client:
        responses = post_together(client, [("/v1/track", body) for body in [*bodies, retry]])
    assert ingest_calls == [7], "the seven waiting requests were not stored with one ingest"
    assert all(r.status_code == 200 for r in responses)
    for response in responses[1:6]:
        assert (response.headers["X-Breadcrumb-Stored"], response.headers["X-Breadcrumb-Duplicates"]) == ("1", "0")
    first_copies = sorted(
        (r.headers["X-Breadcrumb-Stored"], r.headers["X-Breadcrumb-Duplicates"]) for r in (responses[0], responses[6])
    )
    assert first_copies == [("0", "1"), ("1", "0")], (
        "one copy of the retried message is stored, the other is its duplicate"
    )
    assert stored_events(database, [b["messageId"] for b in bodies]) == 6


def test_a_group_is_about_one_batch_and_a_bigger_request_is_stored_alone(database, ingest_calls, monkeypatch):
    monkeypatch.setattr(ingest_queue, "GROUP_MESSAGES", 4)
    batches = [batch_body(2), batch_body(2), batch_body(5), batch_body(1)]
    with TestClient(create_app(settings_for(database.url, auto_migrate=True, ingest_threads=1))) as client:
        responses = post_together(client, [("/v1/batch", body) for body in batches])
    assert ingest_calls == [4, 5, 1], "groups are taken in arrival order, each up to the limit"
    assert [r.headers["X-Breadcrumb-Stored"] for r in responses] == ["2", "2", "5", "1"]


def test_a_group_that_fails_is_stored_request_by_request_and_only_the_bad_one_fails(database, ingest_calls):
    bodies = [track_body() for _ in range(4)]
    poisoned = track_body(POISON)
    app = create_app(settings_for(database.url, auto_migrate=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        responses = post_together(client, [("/v1/track", body) for body in [*bodies, poisoned]])
    assert ingest_calls[0] == 5 and sorted(ingest_calls[1:]) == [1] * 5, ingest_calls
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 500]
    assert stored_events(database, [b["messageId"] for b in bodies]) == 4
    assert stored_events(database, [POISON]) == 0
