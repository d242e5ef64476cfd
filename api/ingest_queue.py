"""Front-door requests that arrive while ingest is busy are stored together, in one transaction.

Under load, single tracks come faster than one transaction each can be written: on SQLite every
writer takes its turn at the one write lock, so 32 concurrent clients queued behind each other's
BEGIN … COMMIT (a request's p99 was its place in that queue), and on PostgreSQL each paid its own
round trips and commit. Here a request joins the waiting ones for the same door; whoever's turn
comes stores everything waiting at that moment (up to `GROUP_MESSAGES`) with one `ingest` call, and
each request gets back its own share of the result. A quiet server stores each request alone, at
once. Should a group fail, each of its requests is stored alone, so a bad one fails by itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial

import anyio
from sqlalchemy import Engine

from store.dialect import is_postgresql
from store.ingest import Guards, Incoming, IngestResult, Quarantined, ingest
from store.settings import Settings

# A group is at most about one Segment batch: a bigger request is stored alone.
GROUP_MESSAGES = 500


@dataclass
class _Waiting:
    messages: list[Incoming]
    rejected: list[Quarantined]
    taken: bool = False  # by a group (its own or another request's)
    result: asyncio.Future[IngestResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class IngestQueue:
    """One per app. Groups are stored one at a time on SQLite (its one writer) and up to
    `ingest_threads` at once on PostgreSQL, on the API's ingest pool (`pool`, the limiter the front
    doors' other store calls share: `api.deps.in_ingest_pool`)."""

    def __init__(self, engine: Engine, settings: Settings, pool: anyio.CapacityLimiter) -> None:
        self.engine = engine
        self.pool = pool
        self.turns = anyio.CapacityLimiter(settings.ingest_threads if is_postgresql(engine) else 1)
        self.waiting: dict[tuple, list[_Waiting]] = {}
        self.storing: set[asyncio.Task] = set()  # groups being stored (the loop keeps only weak references)

    async def ingest(
        self, settings: Settings, messages: list[Incoming], *, api: str, endpoint: str, rejected: list[Quarantined]
    ) -> IngestResult:
        """`store.ingest.ingest` of these messages (with the front doors' guards), in a group with
        whatever else is waiting for the same door."""
        door = (api, endpoint, id(settings))
        mine = _Waiting(messages, rejected)
        self.waiting.setdefault(door, []).append(mine)
        while not mine.taken:  # else a group in flight has it: its result comes with the group's
            async with self.turns:
                if not mine.taken:
                    # Shielded: should this request go away meanwhile, the others it took still get theirs.
                    group = asyncio.ensure_future(self._store(self._take(door), settings, api, endpoint))
                    self.storing.add(group)
                    group.add_done_callback(self.storing.discard)
                    await asyncio.shield(group)
        return await mine.result

    def _take(self, door: tuple) -> list[_Waiting]:
        """The waiting requests in arrival order, up to `GROUP_MESSAGES` (at least the first)."""
        queue = self.waiting[door]
        size, count = 0, 0
        for waiting in queue:
            size += len(waiting.messages)
            if count and size > GROUP_MESSAGES:
                break
            count += 1
        group, self.waiting[door] = queue[:count], queue[count:]
        for waiting in group:
            waiting.taken = True
        if not self.waiting[door]:
            del self.waiting[door]
        return group

    async def _store(self, group: list[_Waiting], settings: Settings, api: str, endpoint: str) -> None:
        async def store(messages: list[Incoming], rejected: list[Quarantined]) -> IngestResult:
            work = partial(
                ingest,
                self.engine,
                messages,
                settings.policy,
                api=api,
                endpoint=endpoint,
                rejected=rejected,
                phone_region=settings.default_phone_region,
                guards=Guards.from_settings(settings),
            )
            return await anyio.to_thread.run_sync(work, limiter=self.pool)

        if len(group) > 1:
            try:
                together = await store(
                    [m for waiting in group for m in waiting.messages],
                    [r for waiting in group for r in waiting.rejected],
                )
            except Exception:  # noqa: BLE001 — each is stored alone below, and fails alone if it must
                pass
            else:
                for waiting in group:
                    waiting.result.set_result(share_of(together, waiting.messages))
                return
        for waiting in group:
            try:
                waiting.result.set_result(await store(waiting.messages, waiting.rejected))
            except Exception as exc:  # noqa: BLE001 — raised in that request's own handler
                waiting.result.set_exception(exc)


def share_of(together: IngestResult, messages: list[Incoming]) -> IngestResult:
    """One request's part of a group's result: what it stored, its duplicates (its messages not
    stored: already held, or repeated in the group) and its identify moments and warnings. `signals`
    is the group's: a request only uses it to nudge the dispatcher."""
    sent = {id(m) for m in messages}
    stored = [m for m in together.stored if id(m) in sent]
    ids = {m.message_id for m in stored}
    return IngestResult(
        stored=stored,
        duplicates=len(messages) - len(stored),
        people={message_id: person for message_id, person in together.people.items() if message_id in ids},
        warnings=[w for w in together.warnings if w.message_id in ids],
        signals=together.signals,
    )
