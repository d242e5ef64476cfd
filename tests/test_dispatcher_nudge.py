"""The dispatcher's nudge is never lost: a nudge that lands while a claim is in flight (its row
committed just after that claim looked) triggers another pass at once, not after a full poll.

Found by bench/identify_latency.py: before the fix, ~1–4 % of identifies waited for the 0.5 s poll."""

from __future__ import annotations

import asyncio
import time

from conftest import settings_for
from dispatch.dispatcher import Dispatcher


class Recording(Dispatcher):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[float] = []

    async def dispatch_once(self) -> int:
        self.passes.append(time.monotonic())
        if len(self.passes) == 1:
            await asyncio.sleep(0.01)  # the claim is running and finds nothing …
            self.nudge()  # … while an ingest commits a row and nudges
            await asyncio.sleep(0.01)
        return 0


async def test_a_nudge_during_a_claim_triggers_another_pass_at_once(tmp_path):
    dispatcher = Recording(engine=None, settings=settings_for(f"sqlite:///{tmp_path / 'x.db'}"), poll_interval=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        deadline = time.monotonic() + 2
        while len(dispatcher.passes) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert len(dispatcher.passes) >= 2, "the nudge was lost: the next pass waits for the 5 s poll"
        assert dispatcher.passes[1] - dispatcher.passes[0] < 1.0
    finally:
        stop.set()
        dispatcher.nudge()
        await asyncio.wait_for(task, 10)


async def test_without_nudges_the_dispatcher_waits_for_the_poll(tmp_path):
    dispatcher = Recording(engine=None, settings=settings_for(f"sqlite:///{tmp_path / 'x.db'}"), poll_interval=0.3)
    dispatcher.passes.append(0.0)  # skip the nudging first pass
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.5)
        gaps = [b - a for a, b in zip(dispatcher.passes[1:], dispatcher.passes[2:], strict=False)]
        assert 1 <= len(dispatcher.passes) - 1 <= 3 and all(gap >= 0.25 for gap in gaps), dispatcher.passes
    finally:
        stop.set()
        dispatcher.nudge()
        await asyncio.wait_for(task, 10)
