"""A deploy in the middle of a delivery, on real processes (tests/fault_stack.py): `temporal server
start-dev`, `breadcrumb api` and `breadcrumb worker` as subprocesses, SQLite or PostgreSQL,
`examples/journeys.fast.toml`, and a slow SMTP relay in this process that keeps each message as soon
as DATA ends and answers 250 three seconds later.

The worker gets SIGTERM while the relay holds a message, three times, and is started again each
time: every (person, step) reaches the relay exactly once. A worker that cancelled the send at
SIGTERM would leave the row unsent though the relay has the message, and its retry would deliver
it a second time; with the shutdown grace the send finishes and is recorded before the worker exits.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from conftest import free_port, fresh_database
from delivery_helpers import Mailbox, SmtpServer
from fault_stack import Stack, drive, outcome, shoppers, wait_until
from store.db import make_engine

SHOPPERS = 12
SIGTERMS = 3


@pytest.mark.timeout(420)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigterm_while_a_slow_relay_is_mid_delivery_delivers_every_message_exactly_once(backend, tmp_path):
    relay = SmtpServer(free_port(), Mailbox(data_delay=3.0)).start()
    with fresh_database(backend, tmp_path, "breadcrumb_sigterm") as url:
        stack = Stack(tmp_path / "stack", url, smtp=relay)
        engine = None
        try:
            stack.start_temporal()
            stack.migrate()
            stack.start_api()
            stack.start_worker()
            engine = make_engine(url)
            people = shoppers(SHOPPERS, uuid.uuid4().hex[:6])

            async def drive_all() -> None:
                async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
                    await asyncio.gather(*(drive(http, s) for s in people))

            asyncio.run(drive_all())
            exits = []
            for _ in range(SIGTERMS):
                wait_until(lambda: relay.mailbox.answering > 0, 120, "a delivery inside the relay's DATA", stack.worker)
                stack.worker.stop(grace=60)  # SIGTERM; SIGKILL only if it has not exited after a minute
                exits.append(stack.worker.process.returncode)
                stack.start_worker()

            def settled() -> bool:
                result = outcome(engine, people, relay.mailbox)
                return not result.missing and not result.not_sent

            wait_until(settled, 240, "every message to be sent", stack.worker)
            time.sleep(4)  # a second delivery of anything would land now
            result = outcome(engine, people, relay.mailbox)
        finally:
            stack.stop()
            relay.stop()
            if engine is not None:
                engine.dispose()
    print(f"\n{SIGTERMS} SIGTERMs mid-delivery ({backend}): {result.line()}; worker exit codes {exits}")
    assert exits == [0] * SIGTERMS, "the worker did not shut down cleanly within its grace"
    assert result.sent == result.expected and not result.not_sent
    assert result.duplicates_by_key == 0 and result.duplicates_by_recipient_step == 0
    assert result.deliveries == result.expected, "a message reached the relay more than once"
    assert result.redeliveries == 0 and result.delivered_keys == result.expected
