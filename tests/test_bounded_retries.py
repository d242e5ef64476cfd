"""Bounded retries on Temporal's time-skipping test server, with the real workflows and the real store
activities on SQLite: a guardrail read that keeps failing ends the journey with the reason; a relay
that stays down past the send's retry budget leaves the step recorded as failed and the journey
goes on to its next step — neither wedges the journey nor fails its workflow.

With BREADCRUMB_RECORD_HISTORIES=1 the journeys' histories are (over)written to tests/histories/
(`journey_gave_up_on_guardrails`, `journey_send_failed_went_on`): the paths behind the
`give-up-with-a-reason` patch, replayed by tests/test_replay.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import text

from journey_harness import identify, running_shop, track
from test_journeys_timeskipping import BASE_POLICY, policy

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORD = os.environ.get("BREADCRUMB_RECORD_HISTORIES") == "1"


class RelayDown:
    """The mail relay (a third party) refusing connections for good."""

    def __init__(self) -> None:
        self.attempts = 0

    def deliver(self, message) -> None:
        self.attempts += 1
        raise ConnectionError("mail relay unreachable")


async def record(shop, workflow_id: str, name: str) -> None:
    """Save the history as tests/test_replay.py reads it (the time-skipping server leaves the workflow
    id out of the started event, where the dev server has it)."""
    if RECORD:
        history = json.loads((await shop.client.get_workflow_handle(workflow_id).fetch_history()).to_json())
        history["events"][0]["workflowExecutionStartedEventAttributes"]["workflowId"] = workflow_id
        (HISTORIES / f"{name}.json").write_text(json.dumps(history) + "\n")


async def test_a_guardrail_read_that_keeps_failing_ends_the_journey_with_the_reason(env, engine):
    async with running_shop(env, engine, policy()) as shop:
        await shop.shop(
            track("b1", "Added to Cart", cart_id="cb1", sku="S", price=90), identify("b1", "broken@example.com")
        )
        person = shop.person_id("broken@example.com")
        journey = await shop.journey_of(person)
        with engine.begin() as conn:  # the store loses the table the guardrails read (a bad deploy)
            conn.execute(text("ALTER TABLE people RENAME TO people_moved"))
        try:
            result = await shop.journey_result(journey)
        finally:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE people_moved RENAME TO people"))
        await record(shop, journey, "journey_gave_up_on_guardrails")
    assert result.status == "exited"
    [(kind, reason)] = [(k, r) for k, r, *_ in shop.log(person) if k == "exit"]
    assert reason.startswith("guardrails could not be read: OperationalError") and "people" in reason
    assert shop.scalar("SELECT status FROM journey_runs WHERE workflow_id = :w", w=journey) == "exited"
    assert shop.messages(person) == []


async def test_a_send_that_finally_fails_is_recorded_and_the_journey_goes_on(env, engine):
    relay = RelayDown()
    two_steps = {
        "steps": [
            {"delay": "5m", "template": "welcome_1"},
            {"delay": "1d", "template": "welcome_2", "channel": "outbox"},
        ]
    }
    chosen = policy(journeys={**BASE_POLICY["journeys"], "welcome": two_steps})
    async with running_shop(env, engine, chosen, channels={"email": relay}) as shop:
        await shop.shop(identify("b2", "unlucky@example.com"))
        person = shop.person_id("unlucky@example.com")
        journey = await shop.journey_of(person)
        result = await shop.journey_result(journey)
        await record(shop, journey, "journey_send_failed_went_on")
    assert result.status == "completed"
    assert result.sent == ["step 1: failed", "step 2: sent"]
    messages = shop.messages(person)
    assert [(m.step, m.status) for m in messages] == [(1, "failed"), (2, "sent")]
    assert "not sent: ConnectionError" in messages[0].reason
    assert relay.attempts > 5  # retried with backoff for the whole budget, then given up
    failed = [r for k, r, *_ in shop.log(person) if k == "failed"]
    assert failed == [messages[0].reason]
