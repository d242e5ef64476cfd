"""Replay: histories recorded on a real dev server must replay cleanly against the current workflow code.

`tests/histories/<name>.json` are histories of completed hub and journey workflows, fetched with
`WorkflowHandle.fetch_history()` / `WorkflowHistory.to_json()` by `tests/test_e2e_devserver.py`.
A change to `workflows/` that would break running workflows (a new command, reordered activities or
timers, …) fails here; guard such a change with `workflow.patched(...)` and keep these files as they
are. Re-record (after a deliberate, patched change, or to add a path) with the command below, or
record the hub and journey branches of the time-skipping tests into a new sub-folder with
`BREADCRUMB_RECORD_BRANCHES=<tag> .venv/bin/pytest tests/test_journeys_timeskipping.py ...`:

    BREADCRUMB_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_e2e_devserver.py

`continue-as-new/` holds a hub run that continued as new on a real dev server (told to suggest it
after 40 events) and the run it started; re-record them with
`BREADCRUMB_RECORD_HISTORIES=1 .venv/bin/python tests/record_continue_as_new.py`.

The workflow id is read from each history's WorkflowExecutionStarted event. Histories are recorded
with the tests' payload key (conftest.PAYLOAD_KEYS), so their payloads are encrypted; those recorded
before payload encryption are in clear and replay too (the codec passes them through).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from conftest import CONVERTER
from workflows.registry import ALL_WORKFLOWS
from workflows.journey import STORE_CALL, BrowseRecovery, Journey, Welcome
from workflows.hub import Hub
from workflows.models import HubInput, JourneyInput, JourneyState, SendCheck, SendCheckInput, StopJourney

HISTORIES = Path(__file__).resolve().parent / "histories"
CONTINUE_AS_NEW = HISTORIES / "continue-as-new"  # tests/record_continue_as_new.py
EXPECTED = {"hub", "hub_purchased", "cart_recovery", "cart_recovery_purchased", "browse_recovery", "welcome"}


def load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    started = data["events"][0]["workflowExecutionStartedEventAttributes"]
    # the id first, then the history; the time-skipping server leaves the id out of the event
    return WorkflowHistory.from_json(started.get("workflowId", path.stem), data)


def history_files() -> list[Path]:
    """The e2e recordings at the top, and per-branch recordings in sub-folders named by when they were
    recorded (`before-hub-fixes` on the code before issue 12's hub patches, later tags after them)."""
    return sorted(HISTORIES.glob("**/*.json"))


def test_every_workflow_type_has_a_recorded_history():
    assert {path.stem for path in history_files()} >= EXPECTED, "re-record: see this module's docstring"
    types = {
        json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
        for p in history_files()
    }
    assert types == {
        "hub",
        "cart_recovery",
        "browse_recovery",
        "welcome",
        "back_in_stock",
        "price_drop",
        "segment_refresh",
    }


@pytest.mark.parametrize("path", history_files(), ids=lambda p: str(p.relative_to(HISTORIES).with_suffix("")))
async def test_history_replays_against_current_code(path: Path):
    history = load(path)
    if path.parent == HISTORIES:  # the e2e run records finished workflows; branch tests may leave hubs waiting
        assert history.events[-1].HasField("workflow_execution_completed_event_attributes"), (
            f"{path.name} is not a completed workflow's history"
        )
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=CONVERTER).replay_workflow(history)


async def test_a_hub_that_continued_as_new_is_recorded_with_the_run_it_started():
    """The replay above covers a real continue-as-new only while these files are there and say so."""
    continued = load(CONTINUE_AS_NEW / "hub_continued.json")
    after = load(CONTINUE_AS_NEW / "hub_after_continue.json")
    assert continued.workflow_id == after.workflow_id
    last = continued.events[-1]
    assert last.HasField("workflow_execution_continued_as_new_event_attributes"), (
        "hub_continued.json must end in WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    )
    first_run = continued.events[0].workflow_execution_started_event_attributes.original_execution_run_id
    started = after.events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == "hub" and started.continued_execution_run_id == first_run
    [handed_over] = await CONVERTER.decode(
        last.workflow_execution_continued_as_new_event_attributes.input.payloads, [HubInput]
    )
    [hub_input] = await CONVERTER.decode(started.input.payloads, [HubInput])
    assert hub_input.state is not None, "the next run must start from the carried state"
    assert hub_input == handed_over
    assert hub_input.state.journey is not None and hub_input.state.decisions  # a journey it did not start


def test_a_hub_run_records_one_patch_marker_and_one_upsert_per_decision():
    """Issue 16: a hub run today records one patch marker (ALL_PATCHES) where runs recorded before it
    (`after-hub-fixes`) recorded one per patch, each with its own TemporalChangeVersion upsert."""
    recorded = sorted((HISTORIES / "all-patches").glob("*-hub.json"))
    assert len(recorded) >= 20, "re-record all-patches: see this module's docstring"
    for path in recorded:
        history = load(path)
        patches = [
            event
            for event in history.events
            if event.HasField("marker_recorded_event_attributes")
            and event.marker_recorded_event_attributes.marker_name == "core_patch"
        ]
        upserts = sum(event.HasField("upsert_workflow_search_attributes_event_attributes") for event in history.events)
        scheduled = [
            event.activity_task_scheduled_event_attributes.activity_type.name
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
        ]
        decisions, purchases = scheduled.count("start_journey"), scheduled.count("record_conversion")
        assert len(patches) <= 1, f"{path.name}: {len(patches)} patch markers"
        # the patch's own upsert, one per decision (status and route together), one per purchase
        # recorded and one for how the run ended (idle, erased)
        assert upserts <= len(patches) + decisions + purchases + 1, (
            f"{path.name}: {upserts} upserts for {decisions} decisions and {purchases} purchases"
        )
    before = load(HISTORIES / "after-hub-fixes" / "a_browsing_burst_is_one_decision-1-hub.json")
    assert sum(event.HasField("marker_recorded_event_attributes") for event in before.events) > 3


@pytest.mark.parametrize("name", ["encrypted_hub", "encrypted_cart_recovery"])
async def test_encrypted_histories_hold_ciphertext_and_replay_only_with_the_codec(name: str):
    history = load(HISTORIES / f"{name}.json")
    payloads = [
        payload
        for event in history.events
        for payload in (
            *event.workflow_execution_started_event_attributes.input.payloads,
            *event.activity_task_completed_event_attributes.result.payloads,
            *event.workflow_execution_completed_event_attributes.result.payloads,
        )
    ]
    encodings = [payload.metadata.get("encoding") for payload in payloads]
    assert encodings and set(encodings) == {b"binary/encrypted"}, encodings
    blind = await Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert blind.replay_failure is not None


# A deliberately incompatible cart_recovery (checks the guardrails before the first delay instead of
# after it): replaying the recorded history against it must fail, or this module tests nothing.
@workflow.defn(name="cart_recovery", sandboxed=False)  # this module reads files at import
class ReorderedCartRecovery(Journey):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        await workflow.execute_activity(
            "check_before_send",
            SendCheckInput(person_id=journey.person_id, route=journey.route, channel="email", cart_id=journey.cart_id),
            result_type=SendCheck,
            **STORE_CALL,
        )
        await workflow.sleep(timedelta(seconds=1))
        return await self.run_steps(journey)

    @workflow.signal(name="stop")
    def stop_signal(self, request: StopJourney) -> None:
        self.stop(request)


async def test_replay_catches_an_incompatible_change():
    replayer = Replayer(workflows=[Hub, ReorderedCartRecovery, BrowseRecovery, Welcome], data_converter=CONVERTER)
    result = await replayer.replay_workflow(load(HISTORIES / "cart_recovery.json"), raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower(), result.replay_failure
