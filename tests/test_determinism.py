"""Determinism (issue 7, item 6): the replay check in tests/test_replay.py is live.

tests/test_replay.py replays every recorded history in tests/histories/ against the current
workflow code. Here we prove that check would catch the mistake it exists for: changing workflow
code *without* a `workflow.patched` guard. Each variant below is the current code with one guard
removed — the change applied unconditionally, as someone forgetting the guard would write it — and
replaying the histories recorded before that change must fail with a non-determinism error, while
the guarded code (the real one) replays them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from conftest import CONVERTER
from workflows.registry import ALL_WORKFLOWS
from workflows.hub import Hub
from workflows.journey import STORE_CALL, BrowseRecovery, CartRecovery, Welcome
from workflows.models import HubInput, HubState

HISTORIES = Path(__file__).resolve().parent / "histories"
WORKFLOW_TYPES = {"hub", "cart_recovery", "browse_recovery", "welcome"}


def load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    started = data["events"][0]["workflowExecutionStartedEventAttributes"]
    return WorkflowHistory.from_json(started["workflowId"], data)


def histories() -> dict[str, WorkflowHistory]:
    return {path.stem: load(path) for path in sorted(HISTORIES.glob("*.json"))}


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def markers(history: WorkflowHistory) -> set[str]:
    """Patch ids recorded in a history (`core_patch` markers: {"id": …, "deprecated": …})."""
    found = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_patch":
            for payload in marker.details["patch-data"].payloads:
                found.add(json.loads(payload.data)["id"])
    return found


def test_every_workflow_type_has_histories_from_before_and_after_the_hub_patches():
    recorded = histories()
    assert {workflow_type(h) for h in recorded.values()} == WORKFLOW_TYPES
    hubs = [h for h in recorded.values() if workflow_type(h) == "hub"]
    # Old hubs (regular activities, no patch markers) and hubs with the current patches: both shapes
    # must keep replaying, so both must be recorded.
    assert any(not markers(h) for h in hubs), "no hub history from before the patches"
    assert any({"hub-local-store-calls", "hub-decision-durable-before-write"} <= markers(h) for h in hubs), (
        "no hub history recorded with the current code: see tests/test_replay.py on recording"
    )


# --------------------------------------------------------------------------------------------------
# The current hub with one guard removed
# --------------------------------------------------------------------------------------------------


@workflow.defn(name="hub", sandboxed=False)
class HubWithoutLocalCallsGuard(Hub):
    """The local-activity change applied unconditionally: every store call local, no patch marker."""

    @workflow.run
    async def run(self, hub: HubInput) -> HubState:
        return await super().run(hub)

    async def _store_call(self, name, argument, result_type, writes: bool = False):
        return await workflow.execute_local_activity(name, argument, result_type=result_type, **STORE_CALL)


@workflow.defn(name="hub", sandboxed=False)
class HubWithoutDurableDecisionGuard(Hub):
    """Before the durable-decision fix (start_journey local again), still patched for local calls
    but without the marker of the fix: histories recorded with the fix must not replay on it."""

    @workflow.run
    async def run(self, hub: HubInput) -> HubState:
        return await super().run(hub)

    async def _store_call(self, name, argument, result_type, writes: bool = False):
        if workflow.patched("hub-local-store-calls"):
            return await workflow.execute_local_activity(name, argument, result_type=result_type, **STORE_CALL)
        return await workflow.execute_activity(name, argument, result_type=result_type, **STORE_CALL)


async def replay(workflows: list, history: WorkflowHistory):
    replayer = Replayer(workflows=workflows, data_converter=CONVERTER)
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


@pytest.mark.parametrize(
    "variant,which",
    [
        (HubWithoutLocalCallsGuard, lambda h: not markers(h)),  # old hubs: regular activities
        (HubWithoutDurableDecisionGuard, lambda h: "hub-decision-durable-before-write" in markers(h)),
    ],
    ids=["local-store-calls-unguarded", "durable-decision-unguarded"],
)
async def test_an_unguarded_hub_change_fails_replay_of_older_histories(variant, which):
    hubs = {name: h for name, h in histories().items() if workflow_type(h) == "hub" and which(h)}
    assert hubs, "no history this variant is incompatible with"
    for name, history in hubs.items():
        assert await replay(ALL_WORKFLOWS, history) is None, f"{name} must replay on the current, guarded code"
        failure = await replay([variant, CartRecovery, BrowseRecovery, Welcome], history)
        assert failure is not None, f"{name} replayed on {variant.__name__}: the replay check would miss it"
        assert "nondetermin" in str(failure).lower(), failure


# --------------------------------------------------------------------------------------------------
# Issue 12's hub patches, each applied unconditionally (as if its `workflow.patched` were left out)
# --------------------------------------------------------------------------------------------------


def branch_histories(tag: str) -> dict[str, WorkflowHistory]:
    return {path.stem: load_branch(path) for path in sorted((HISTORIES / tag).glob("*-hub.json"))}


def load_branch(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(path.stem, data)  # the time-skipping server leaves the id out


@pytest.mark.parametrize(
    "patches",
    [{"hub-keeps-signals-during-decision", "hub-debounces-activity"}, {"hub-unique-journey-ids"}],
    ids=["debounce", "unique-ids"],
)
async def test_an_unguarded_hub_fix_fails_replay_of_hubs_recorded_before_it(patches, monkeypatch):
    """Hubs recorded before issue 12 (tests/histories/before-hub-fixes) replay on the guarded code; with
    the patch forced on they must not: a re-route by a page view gains a debounce timer, a decision
    is written before the running journey is stopped."""
    before = branch_histories("before-hub-fixes")
    assert before
    for name, history in before.items():
        assert await replay(ALL_WORKFLOWS, history) is None, f"{name} must replay on the current, guarded code"
    guarded = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda patch_id: patch_id in patches or guarded(patch_id))
    failures = [str(failure) for history in before.values() if (failure := await replay(ALL_WORKFLOWS, history))]
    assert failures, f"no history recorded before {patches} fails without its guard: the replay check would miss it"
    assert all("nondetermin" in failure.lower() for failure in failures), failures
