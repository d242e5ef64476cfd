"""Exactly-once delivery at the activity level, on SQLite and PostgreSQL, with a real SMTP relay:
the message row is claimed with a lease before delivery, so two attempts of one send racing (a
retry after a lost heartbeat, a restarted worker) deliver once; a dead attempt's lease runs out and
the next attempt delivers; `sent_at` is the delivery instant; journal and conversion writes that
Temporal retries land once; nothing that can name the shopper comes back into Temporal.

The activities run in temporalio's ActivityEnvironment, so heartbeats, the activity's identity and
its start time are what a worker gives them."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from conftest import free_port
from delivery_helpers import Mailbox, SmtpServer
from journey_harness import now
from store.models import Message, as_utc, utcnow
from test_delivery import activities_for, cart_person, delivery_settings, send_input
from workflows.models import Conversion, JourneyNote, SendCheckInput


def execute(db, sql: str, **params) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


@pytest.fixture
def slow_relay():
    """A relay that keeps each message at once and answers 250 two seconds later."""
    server = SmtpServer(free_port(), Mailbox(data_delay=2.0)).start()
    yield server
    server.stop()


def attempt_env(attempt: int, activity_id: str = "7", run_id: str = "run-1") -> ActivityEnvironment:
    """One attempt of one activity call, as a worker would run it (its heartbeats counted)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=attempt, activity_id=activity_id, workflow_run_id=run_id, started_time=utcnow()
    )
    env.beats = []
    env.on_heartbeat = lambda *details: env.beats.append(time.monotonic())
    return env


def test_two_attempts_racing_on_one_message_deliver_it_once(db, slow_relay):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, slow_relay.port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    first_env, second_env = attempt_env(1), attempt_env(2)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", first_env.run(activities.send_step, send)))
    first.start()
    deadline = time.monotonic() + 20
    while not slow_relay.mailbox.answering:  # the first attempt is inside the relay's DATA
        assert time.monotonic() < deadline and first.is_alive(), "the first attempt never reached the relay"
        time.sleep(0.01)
    assert [tuple(r) for r in db.rows("SELECT status FROM messages")] == [("sending",)]
    results["second"] = second_env.run(activities.send_step, send)  # e.g. Temporal retried after a lost heartbeat
    first.join(30)

    assert len(slow_relay.mailbox.received) == 1, "the message was delivered twice"
    assert results["first"].status == "sent"
    assert results["second"] == results["first"]  # the waiting attempt reports the first's outcome
    assert second_env.beats, "the waiting attempt did not heartbeat"
    assert first_env.beats, "the delivering attempt did not heartbeat while the relay was slow"
    assert [tuple(r) for r in db.rows("SELECT status, lease_until FROM messages")] == [("sent", None)]
    assert db.scalar("SELECT count(*) FROM journey_log WHERE kind = 'sent'") == 1


def test_a_cancel_mid_delivery_waits_for_the_relay_and_records_the_send(db, slow_relay):
    """What the worker does when its shutdown grace runs out, or the server cancels the activity: the
    cancellation is raised after the delivery is recorded, not into the SMTP conversation."""
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, slow_relay.port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    env, raised = attempt_env(1), []

    def run() -> None:
        try:
            env.run(activities.send_step, send)
        except BaseException as exc:  # noqa: BLE001 — the test looks at what came out
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    while not slow_relay.mailbox.answering:
        assert time.monotonic() < deadline and thread.is_alive(), "the attempt never reached the relay"
        time.sleep(0.01)
    env.cancel()
    thread.join(30)
    assert [type(exc).__name__ for exc in raised] == ["CancelledError"]
    assert [tuple(r) for r in db.rows("SELECT status FROM messages")] == [("sent",)]
    assert len(slow_relay.mailbox.received) == 1
    retry = attempt_env(2).run(activities.send_step, send)  # Temporal's retry of the cancelled attempt
    assert retry.status == "sent" and len(slow_relay.mailbox.received) == 1


def test_a_worker_shutting_down_starts_no_delivery(db, slow_relay):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, slow_relay.port))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    env = attempt_env(1)
    env.worker_shutdown()
    with pytest.raises(ApplicationError, match="worker shutting down") as refused:
        env.run(activities.send_step, send)
    assert refused.value.type == "WorkerShuttingDown" and not refused.value.non_retryable
    assert [tuple(r) for r in db.rows("SELECT status FROM messages")] == [("pending",)]
    assert attempt_env(2).run(activities.send_step, send).status == "sent"  # the retry, on a worker that stays
    assert len(slow_relay.mailbox.received) == 1


def test_a_dead_attempts_lease_runs_out_and_the_next_attempt_delivers(db, slow_relay):
    person = cart_person(db)
    slow_relay.mailbox.data_delay = 0
    activities = activities_for(db, delivery_settings(db, slow_relay.port, delivery_deadline=1.0))
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    # An attempt that claimed the row and died (SIGKILL) before reaching the relay.
    slow_relay.stop()
    with pytest.raises(Exception):
        attempt_env(1).run(activities.send_step, send)
    execute(
        db,
        "UPDATE messages SET status = 'sending', lease_owner = 'dead-attempt', lease_until = :until",
        until=utcnow() + activities.lease,
    )
    slow_relay.start()
    retry = attempt_env(2)
    result = retry.run(activities.send_step, send)
    assert result.status == "sent"
    assert len(slow_relay.mailbox.received) == 1
    assert len(retry.beats) >= 2, "the retry did not wait out the lease"


def test_sent_at_is_the_delivery_instant_not_the_scheduled_time(db, slow_relay):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db, slow_relay.port))
    scheduled = now() - timedelta(hours=3)  # the journey decided to send three hours ago (a long outage)
    send = send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1").model_copy(update={"at": scheduled})
    before = utcnow()
    attempt_env(1).run(activities.send_step, send)
    with Session(db.engine) as session:
        sent_at = as_utc(session.exec(select(Message.sent_at)).one())
    assert before + timedelta(seconds=2) <= sent_at <= utcnow()  # after the relay's 250, not `send.at`
    check = activities.check_before_send(
        SendCheckInput(person_id=person, route="cart_recovery", channel="email", cart_id="c1")
    )
    assert check.last_message_at >= before + timedelta(seconds=2)  # the frequency cap counts from there


def test_nothing_that_names_the_shopper_comes_back_from_the_send_path(db, smtp_refusing):
    person = cart_person(db)  # ada@example.com, first name Ada
    activities = activities_for(db, delivery_settings(db, smtp_refusing.port))
    check = activities.check_before_send(
        SendCheckInput(person_id=person, route="cart_recovery", channel="email", cart_id="c1")
    )
    result = attempt_env(1).run(
        activities.send_step, send_input(person, "cart_recovery", 1, "cart_recovery_1", cart_id="c1")
    )
    assert check.reachable and result.status == "failed"
    returned = check.model_dump_json() + result.model_dump_json()
    assert "ada@example.com" not in returned and "Ada" not in returned and "Night Serum" not in returned
    assert "550" in result.reason and "<recipient>" in result.reason


@pytest.fixture
def smtp_refusing():
    """A relay that refuses the recipient permanently and echoes the address, as real ones do."""
    mailbox = Mailbox()
    mailbox.refuse["ada@"] = "550 5.1.1 <ada@example.com>: Recipient address rejected"
    server = SmtpServer(free_port(), mailbox).start()
    yield server
    server.stop()


def test_a_retried_journal_write_lands_once(db):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db))
    workflow_id = f"cart_recovery-{person}-1"
    execute(
        db,
        "INSERT INTO journey_runs (workflow_id, person_id, route, status, reason, started_at) "
        "VALUES (:w, :p, 'cart_recovery', 'running', '', :at)",
        w=workflow_id,
        p=person,
        at=utcnow(),
    )
    note = JourneyNote(
        workflow_id=workflow_id,
        person_id=person,
        journey="cart_recovery",
        kind="waiting",
        reason="frequency cap until later",
        at=now(),
        step=1,
    )
    for attempt in (1, 2, 3):  # the write committed, then the worker died before reporting it: Temporal retries
        attempt_env(attempt, activity_id="4").run(activities.record_journey_note, note)
    attempt_env(1, activity_id="9").run(activities.record_journey_note, note)  # a later, separate note
    assert db.scalar("SELECT count(*) FROM journey_log WHERE kind = 'waiting'") == 2


def test_a_retried_conversion_write_lands_once(db):
    person = cart_person(db)
    activities = activities_for(db, delivery_settings(db))
    conversion = Conversion(
        person_id=person,
        hub_id=f"hub-{person}",
        order_id="o-1",
        revenue=64.0,
        ordered_at=now(),
        at=now(),
        attribution_window=timedelta(days=5),
    )
    for attempt in (1, 2):
        attempt_env(attempt, activity_id="12", run_id="hub-run").run(activities.record_conversion, conversion)
    assert db.scalar("SELECT count(*) FROM journey_log WHERE kind = 'conversion'") == 1
