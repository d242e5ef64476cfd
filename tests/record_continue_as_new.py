"""Records a real continue-as-new of the hub, for tests/test_replay.py.

The time-skipping test server never suggests continue-as-new, so no branch recording has one. This
script starts a real dev server (`temporal server start-dev` from the venv) that suggests it after
SUGGEST_AFTER history events (`limit.historyCount.suggestContinueAsNew`), with our search
attributes, a worker built as the tests build it (tests' encrypting CONVERTER, a migrated SQLite
store, `examples/journeys.fast.toml`), and drives one identified person through repeated identify
wake-ups (ingest, then the outbox dispatcher's signal-with-start) until the hub continues as new. The
next run carries the running welcome journey in its state, hears its `journey_ended` and idles out.

It always replays both histories against the current code; with `BREADCRUMB_RECORD_HISTORIES=1` it
also (over)writes them to tests/histories/continue-as-new/ (`hub_continued.json`, ending in
WORKFLOW_EXECUTION_CONTINUED_AS_NEW, and `hub_after_continue.json`, the run it started). Re-record
after an intentional, `workflow.patched`-guarded change to the hub — never to make a failing replay pass:

    BREADCRUMB_RECORD_HISTORIES=1 .venv/bin/python tests/record_continue_as_new.py

Not a test module (pytest does not collect it): the saved files are what tests/test_replay.py checks.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, journey_harness

from temporalio.client import WorkflowHistory  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from conftest import CONVERTER, settings_for, venv_binary  # noqa: E402
from journey_harness import Harness, identify  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.settings import REPO_ROOT  # noqa: E402
from dispatch.temporal import register_search_attributes  # noqa: E402
from worker.worker import build_worker  # noqa: E402
from workflows.registry import ALL_WORKFLOWS  # noqa: E402
from workflows.hub import hub_id  # noqa: E402
from workflows.models import HubState  # noqa: E402

FOLDER = Path(__file__).resolve().parent / "histories" / "continue-as-new"
RECORD = os.environ.get("BREADCRUMB_RECORD_HISTORIES") == "1"
FAST_POLICY = REPO_ROOT / "examples" / "journeys.fast.toml"
SUGGEST_AFTER = 40  # history events; Temporal's default is 4,096
MAX_WAKES = 30


async def wait_for(probe, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := await probe():
                return value
        except Exception:  # a query before the first workflow task, …: ask again
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def drive(shop: Harness) -> tuple[WorkflowHistory, WorkflowHistory]:
    """Identify one person, then identify them again until their hub continues as new; returns the
    histories of the run that continued and of the run it started (after that one completed)."""
    tag = uuid.uuid4().hex[:8]
    anon, email = f"anon-can-{tag}", f"can.{tag}@example.com"
    await shop.shop(identify(anon, email))
    person = shop.person_id(email)
    hub = shop.client.get_workflow_handle(hub_id(person))
    await shop.until(person, lambda s: s.journey is not None)  # a welcome journey, carried over below
    first_run = (await hub.describe()).run_id

    async def settled() -> bool:
        return not await hub.query("busy", result_type=bool)

    for _ in range(MAX_WAKES):
        if (await hub.describe()).run_id != first_run:
            break
        await shop.shop(identify(anon, email))
        await wait_for(settled, "the hub to handle its wake-up")
    else:
        raise AssertionError(f"the hub did not continue as new after {MAX_WAKES} wake-ups")

    continued = await shop.client.get_workflow_handle(hub.id, run_id=first_run).fetch_history()
    last = continued.events[-1]
    assert last.HasField("workflow_execution_continued_as_new_event_attributes"), last
    next_run = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    after = shop.client.get_workflow_handle(hub.id, run_id=next_run, result_type=HubState)
    # the welcome journey ends (seconds), then the hub idles out (`hub_idle_timeout`, 20 s)
    final = await asyncio.wait_for(after.result(follow_runs=False), 90)
    assert final.status == "idle_completed", final
    return continued, await after.fetch_history()


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),  # never let the SDK download a server
        data_converter=CONVERTER,
        ui=False,
        dev_server_extra_args=["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"],
    )
    try:
        await register_search_attributes(env.client)
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'breadcrumb.db'}")
            try:
                upgrade(engine)
                settings = settings_for(str(engine.url), journeys=FAST_POLICY)
                async with build_worker(env.client, engine, settings):
                    continued, after = await drive(Harness(env.client, engine, settings, settings.policy))
            finally:
                engine.dispose()
    finally:
        await env.shutdown()

    histories = {"hub_continued": continued, "hub_after_continue": after}
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=CONVERTER)
    for name, history in histories.items():
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name}: {result.replay_failure!r}"
        print(f"{name}: {len(history.events)} events, replays")
    if RECORD:
        FOLDER.mkdir(parents=True, exist_ok=True)
        for name, history in histories.items():
            (FOLDER / f"{name}.json").write_text(history.to_json() + "\n")
        print(f"recorded {len(histories)} histories under {FOLDER}")
    else:
        print("not written (set BREADCRUMB_RECORD_HISTORIES=1 to record)")


if __name__ == "__main__":
    asyncio.run(main())
