"""The outbox cannot jam (issue 13), on SQLite and PostgreSQL: claims are owned and leased, a
stalled or killed dispatcher's rows go out once through another, a poisoned row dead-letters after
N attempts without holding back the person's later rows, admins see and retry dead letters over
HTTP, delivered rows are pruned, rows follow merges and deletes, and a resent order wakes no hub."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType

from conftest import ADMIN_TOKEN, settings_for
from store import outbox
from store.db import transaction
from store.identity import delete_person, merge_people, new_person
from store.models import OutboxRow, utcnow
from store.settings import REPO_ROOT
from dispatch.dispatcher import Dispatcher
from workflows.hub import hub_id

EXPIRED = timedelta(seconds=-1)  # a lease that has already run out: the next claim may take the rows


def queue(db, person_id: str, count: int, payload: dict | None = None) -> list[int]:
    with transaction(db.engine) as session:
        for _ in range(count):
            outbox.signal(session, "purchased", person_id, payload or {"message_id": f"m-{uuid.uuid4().hex}"})
    with Session(db.engine) as session:
        return list(
            session.exec(select(OutboxRow.id).where(OutboxRow.person_id == person_id).order_by(OutboxRow.id)).all()
        )


def rows(db) -> dict[int, OutboxRow]:
    with Session(db.engine) as session:
        return {row.id: row for row in session.exec(select(OutboxRow)).all()}


def test_a_claim_that_lost_its_lease_cannot_complete_or_release_the_rows(db):
    ids = queue(db, "p-lease", 3)
    stalled = outbox.claim(db.engine, lease=EXPIRED)
    assert [r.id for r in stalled.rows] == ids
    current = outbox.claim(db.engine)  # the stalled dispatcher's lease ran out: another one takes over
    assert [r.id for r in current.rows] == ids and current.owner != stalled.owner
    assert outbox.claim(db.engine).rows == []  # a live lease is not taken again

    assert outbox.mark_dispatched(db.engine, stalled.owner, ids) == 0  # its late "done" is ignored
    outbox.release(db.engine, stalled.owner, stalled.rows, "late failure", count_attempt=True, max_attempts=1)
    assert all(r.dead_at is None and r.attempts == 0 and r.claim_owner == current.owner for r in rows(db).values())

    assert outbox.mark_dispatched(db.engine, current.owner, ids) == 3
    assert all(r.dispatched_at is not None and r.claim_owner is None for r in rows(db).values())


def test_only_failures_of_the_row_count_towards_the_dead_letter(db):
    [row_id] = queue(db, "p-fail", 1)
    claim = outbox.claim(db.engine)
    outbox.release(db.engine, claim.owner, claim.rows, "Temporal unreachable", count_attempt=False, max_attempts=2)
    assert (rows(db)[row_id].attempts, rows(db)[row_id].dead_at) == (0, None)  # an outage is nobody's fault
    for attempt in (1, 2):
        _make_due(db, row_id)
        claim = outbox.claim(db.engine)
        assert [r.id for r in claim.rows] == [row_id]
        outbox.release(db.engine, claim.owner, claim.rows, f"boom {attempt}", count_attempt=True, max_attempts=2)
    dead = rows(db)[row_id]
    assert (dead.attempts, dead.last_error) == (2, "boom 2") and dead.dead_at is not None
    _make_due(db, row_id)
    assert outbox.claim(db.engine).rows == []  # a dead letter is never claimed
    assert [r.id for r in outbox.dead_letters(db.engine)] == [row_id]
    assert outbox.backlog(db.engine)[0] == 0


def _make_due(db, row_id: int) -> None:
    """Skip the retry backoff (the claim's clock is the database row's, not a sleep)."""
    with transaction(db.engine) as session:
        session.get(OutboxRow, row_id).available_at = utcnow() - timedelta(seconds=1)


def test_admin_sees_dead_letters_with_their_error_and_retries_one(api, db):
    [row_id] = queue(db, "p-admin", 1)
    claim = outbox.claim(db.engine)
    outbox.release(
        db.engine, claim.owner, claim.rows, "ValidationError: at is not a time", count_attempt=True, max_attempts=1
    )
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert api.http.get("/admin/outbox").status_code == 401
    listed = api.http.get("/admin/outbox", headers=auth).json()
    assert listed["pending"] == 0
    assert [(d["id"], d["person_id"], d["attempts"], d["error"]) for d in listed["dead_letters"]] == [
        (row_id, "p-admin", 1, "ValidationError: at is not a time")
    ]
    assert api.http.post(f"/admin/outbox/{row_id}/retry").status_code == 401
    retried = api.http.post(f"/admin/outbox/{row_id}/retry", headers=auth)
    assert retried.status_code == 200 and retried.json() == {"id": row_id, "status": "queued"}
    assert api.http.get("/admin/outbox", headers=auth).json() | {"lag_seconds": 0} == {
        "pending": 1,
        "lag_seconds": 0,
        "dead_letters": [],
    }
    assert [r.id for r in outbox.claim(db.engine).rows] == [row_id]  # due again, attempts from zero
    assert rows(db)[row_id].attempts == 0
    assert api.http.post(f"/admin/outbox/{row_id}/retry", headers=auth).status_code == 404  # not dead any more


def test_delivered_rows_are_pruned_after_the_retention(db):
    delivered, pending = queue(db, "p-prune", 2)
    claim = outbox.claim(db.engine, limit=1)
    outbox.mark_dispatched(db.engine, claim.owner, [delivered])
    assert outbox.prune(db.engine, timedelta(hours=1)) == 0  # delivered just now: kept
    assert outbox.prune(db.engine, timedelta(seconds=-1)) == 1
    assert list(rows(db)) == [pending]


def test_rows_follow_a_merge_and_vanish_with_a_delete(db):
    with transaction(db.engine) as session:
        survivor, absorbed = new_person(session, utcnow()).id, new_person(session, utcnow()).id
    queue(db, absorbed, 2)
    with transaction(db.engine) as session:
        merge_people(session, survivor, absorbed)
    owners = [(r.person_id, r.kind) for r in rows(db).values()]
    assert owners.count((survivor, "purchased")) == 2 and (absorbed, "absorbed") in owners
    with transaction(db.engine) as session:
        delete_person(session, survivor)
    assert [(r.person_id, r.kind) for r in rows(db).values() if r.person_id == survivor] == [(survivor, "erased")]


def test_a_resent_order_queues_no_second_purchased_signal(api, db):
    api.segment("identify", {"userId": "u-order", "traits": {"email": "order@example.com"}})
    for copy in range(3):  # the shop's backend resends the same order with new message ids
        response = api.segment(
            "track",
            {
                "userId": "u-order",
                "event": "Order Completed",
                "messageId": f"order-copy-{copy}",
                "context": {"library": {"name": "analytics-python"}},
                "properties": {"order_id": "o-77", "revenue": 40},
            },
        )
        assert response.status_code == 200
    other = api.segment(
        "track",
        {
            "userId": "u-order",
            "event": "Order Completed",
            "messageId": "order-other",
            "properties": {"order_id": "o-78", "revenue": 12},
        },
    )
    assert other.status_code == 200
    purchased = [r.payload["order_id"] for r in rows(db).values() if r.kind == "purchased"]
    assert sorted(purchased) == ["o-77", "o-78"]


# --- competing dispatchers with real Temporal ------------------------------------------------------

STALLED_DISPATCHER = """
import sys, time
from datetime import timedelta
from store import outbox
from store.db import make_engine
claim = outbox.claim(make_engine(sys.argv[1]), int(sys.argv[2]), timedelta(seconds=float(sys.argv[3])))
print(" ".join(str(row.id) for row in claim.rows), flush=True)
time.sleep(3600)
"""


async def signals_received(client, person_id: str) -> int:
    history = await client.get_workflow_handle(hub_id(person_id)).fetch_history()
    return sum(1 for event in history.events if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)


async def test_competing_dispatchers_one_killed_mid_claim_deliver_every_row_once_and_a_poison_dead_letters(env, db):
    lease, max_attempts = 3.0, 3
    people = [f"buyer-{n}-{uuid.uuid4().hex[:6]}" for n in range(4)]
    poisoned_person = f"poisoned-{uuid.uuid4().hex[:6]}"
    [poison] = queue(db, poisoned_person, 1, {"at": "not a time"})  # the hub's signal cannot carry it
    later = queue(db, poisoned_person, 3)[1:]  # the same person's later rows
    for person in people:
        queue(db, person, 4)

    # A dispatcher claims the first rows and is killed before delivering any of them.
    killed = subprocess.Popen(
        [sys.executable, "-c", STALLED_DISPATCHER, db.url, "8", str(lease)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        held = [int(i) for i in (await asyncio.to_thread(killed.stdout.readline)).split()]
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        killed.stdout.close()
    assert held and held[0] == poison
    assert all(r.claim_owner for r in rows(db).values() if r.id in held)

    settings = settings_for(db.url, outbox_lease_seconds=lease, outbox_max_attempts=max_attempts)
    dispatchers = [Dispatcher(db.engine, settings, batch=5, client=env.client) for _ in range(2)]

    def settled() -> bool:
        state = rows(db)
        return state[poison].dead_at is not None and all(
            r.dispatched_at is not None for row_id, r in state.items() if row_id != poison
        )

    for _ in range(600):  # a hang guard, not a timing: each round waits for the database's clock to move
        if settled():
            break
        await asyncio.gather(*(d.dispatch_once() for d in dispatchers))
        await asyncio.sleep(0.1)
    state = rows(db)
    assert settled(), {i: (r.dispatched_at, r.dead_at, r.attempts, r.last_error) for i, r in state.items()}
    assert state[poison].attempts == max_attempts and "validation error" in state[poison].last_error.lower()
    assert all(state[row_id].dispatched_at is not None for row_id in later)  # not held back by the poison
    for person in people:  # every row once: as many signals in the hub's history as rows queued for it
        assert await signals_received(env.client, person) == 4, person
    assert await signals_received(env.client, poisoned_person) == len(later)
