"""Drives the real hub and journeys on a Temporal server: ingest through the real core, dispatch
through the real outbox dispatcher, activities against a real database."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, UTC
from pathlib import Path

from sqlalchemy import Engine, text
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from journeys.policy import Policy
from store.ingest import Incoming, ingest
from store.models import Message, as_utc
from store.settings import Settings
from dispatch.dispatcher import Dispatcher
from workflows.hub import hub_id
from workflows.models import HubState, JourneyState

_ids = itertools.count()
# `BREADCRUMB_RECORD_BRANCHES=<tag>`: after each journey test, the hubs of the people it looked up
# and every journey they started are written to tests/histories/<tag>/ (see record_branch_histories).
RECORD_TAG = os.environ.get("BREADCRUMB_RECORD_BRANCHES")
HISTORIES = Path(__file__).resolve().parent / "histories"


def now() -> datetime:
    return datetime.now(UTC)


def track(
    anon: str | None,
    event: str,
    user_id: str | None = None,
    at: datetime | None = None,
    source: str = "client",
    **properties,
) -> Incoming:
    at = at or now()
    return Incoming(
        type="track",
        original_name=event,
        anonymous_id=anon,
        user_id=user_id,
        properties=properties,
        timestamp=at,
        received_at=at,
        source=source,
        message_id=f"m{next(_ids)}-{uuid.uuid4().hex[:6]}",
        trusted=True,
    )


def identify(
    anon: str | None, email: str, user_id: str | None = None, at: datetime | None = None, **traits
) -> Incoming:
    at = at or now()
    return Incoming(
        type="identify",
        original_name="Identify",
        anonymous_id=anon,
        user_id=user_id,
        properties={"email": email, **traits},
        timestamp=at,
        received_at=at,
        message_id=f"m{next(_ids)}-{uuid.uuid4().hex[:6]}",
        trusted=True,
    )


@asynccontextmanager
async def running_shop(env, engine: Engine, policy: Policy, channels: dict | None = None):
    """A worker (store activities, `channels` if given) on `env` under `policy`, and a Harness to drive it."""
    from conftest import settings_for
    from worker.worker import build_worker

    settings = settings_for(str(engine.url))
    settings.__dict__["policy"] = policy
    async with build_worker(env.client, engine, settings, **({"channels": channels} if channels else {})):
        yield Harness(env.client, engine, settings, policy, env=env)


class Harness:
    def __init__(self, client: Client, engine: Engine, settings: Settings, policy: Policy, env=None) -> None:
        self.env = env  # a time-skipping environment, when there is one
        self.client = client
        self.engine = engine
        self.policy = policy
        self.dispatcher = Dispatcher(engine, settings, client=client)
        self.dispatcher.policy = policy
        # Each `dispatch()` is one pass between steps taken in skipped time; the activity window is
        # wall-clock (tested in test_dispatch_coalescing.py) and would hold a step's browsing past it.
        self.dispatcher.window = 0
        self.people: list[str] = []  # whose hubs record_branch_histories writes out
        Harness.opened.append(self)

    opened: list[Harness] = []  # this test's harnesses (tests/conftest.py empties it per test)

    def ingest(self, *messages: Incoming):
        return ingest(self.engine, list(messages), self.policy, api="test", endpoint="test")

    async def dispatch(self) -> int:
        return await self.dispatcher.dispatch_once()

    async def shop(self, *messages: Incoming) -> None:
        self.ingest(*messages)
        await self.dispatch()

    def person_id(self, email: str) -> str:
        person = self.scalar("SELECT person_id FROM identifiers WHERE kind='email' AND value=:v", v=email)
        if person is not None and person not in self.people:
            self.people.append(person)
        return person

    async def hub_state(self, person_id: str) -> HubState:
        return await self.client.get_workflow_handle(hub_id(person_id)).query("state", result_type=HubState)

    async def until(self, person_id: str, predicate, timeout: float = 30.0) -> HubState:
        """Poll the hub's `state` query (in real time) until `predicate(state)` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                state = await self.hub_state(person_id)
                if predicate(state):
                    return state
            except Exception:
                state = None
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"hub of {person_id} never reached the expected state; last: {state}")
            await asyncio.sleep(0.1)

    async def journey_of(self, person_id: str) -> str:
        state = await self.until(person_id, lambda s: s.journey is not None)
        return state.journey.workflow_id

    async def journey_result(self, workflow_id: str) -> JourneyState:
        """Wait for a journey to end (skipping its timers on the time-skipping server)."""
        handle = self.client.get_workflow_handle(workflow_id, result_type=JourneyState)
        if self.env is None:
            return await handle.result()
        async with self.env.time_skipping_unlocked():
            return await handle.result()

    async def skip(self, duration: timedelta) -> None:
        await self.env.sleep(duration)

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    def messages(self, person_id: str) -> list[Message]:
        with Session(self.engine) as session:
            found = session.exec(
                select(Message).where(Message.person_id == person_id).order_by(Message.created_at, Message.step)
            ).all()
        for message in found:
            message.sent_at, message.created_at = as_utc(message.sent_at), as_utc(message.created_at)
        return list(found)

    def log(self, person_id: str) -> list:
        return self.rows(
            "SELECT kind, reason, journey, step FROM journey_log WHERE person_id=:p ORDER BY id", p=person_id
        )

    async def logged(self, person_id: str, timeout: float = 30.0) -> list:
        """The person's journey-log lines once there are any: the hub's state shows a decision as
        soon as it is made, its line is written by the activity that records it, a moment later."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (lines := self.log(person_id)) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return lines


async def record_branch_histories(client: Client, people: list[str], test_name: str, tag: str) -> list[Path]:
    """Write the history of each person's hub and of every journey it started (children read from the
    hub's own history) to tests/histories/<tag>/<test>-<n>-<workflow type>.json, for tests/test_replay.py.
    Histories of workflows still running when the test ended are kept as far as they got: a replay of
    them checks every workflow task they completed."""
    folder = HISTORIES / tag
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9]+", "_", test_name.removeprefix("test_")).strip("_")
    queue, seen, written = [hub_id(person) for person in people], set(), []
    while queue:
        workflow_id = queue.pop(0)
        if workflow_id in seen:
            continue
        seen.add(workflow_id)
        try:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        except RPCError as error:  # a person the test looked up whose hub was never started
            if error.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        started = history.events[0].workflow_execution_started_event_attributes
        queue += [
            e.start_child_workflow_execution_initiated_event_attributes.workflow_id
            for e in history.events
            if e.HasField("start_child_workflow_execution_initiated_event_attributes")
        ]
        path = folder / f"{stem}-{len(written) + 1}-{started.workflow_type.name}.json"
        path.write_text(history.to_json() + "\n")
        written.append(path)
    return written
