"""One try of the send activity, as delivery needs it: a lease token of its own, heartbeats while
it waits or delivers, a delivery that a cancellation cannot cut in half, and the clock `sent_at` is
read from.

Called outside Temporal (the activity methods invoked directly, as tests/test_delivery.py does),
heartbeats and shields have nobody to talk to and the clock is the wall clock.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import TypeVar
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from store.models import as_utc, utcnow

HEARTBEAT_EVERY = 2.0  # seconds; well inside SEND_CALL's heartbeat timeout
T = TypeVar("T")


class Attempt:
    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.temporal = activity.in_activity()
        self._began = time.monotonic()
        self._started_at = as_utc(activity.info().started_time) if self.temporal else utcnow()

    def now(self) -> datetime:
        """The instant on the Temporal server's clock: this attempt's start as the server recorded it,
        plus the worker's own elapsed time. In production that is wall time; under the time-skipping
        test server it is the workflows' skipped time, so a frequency cap measured from `sent_at`
        compares like with like (`workflow.now()`) in those tests too."""
        return self._started_at + timedelta(seconds=time.monotonic() - self._began)

    def beat(self) -> None:
        if self.temporal:
            activity.heartbeat()

    def pause(self, seconds: float) -> None:
        """Wait a moment, telling Temporal this attempt is alive."""
        self.beat()
        time.sleep(seconds)

    def refuse_when_shutting_down(self) -> None:
        """A worker that is draining for a deploy starts no new delivery: the retry goes to a worker
        that will still be there when the relay answers."""
        if self.temporal and activity.is_worker_shutdown():
            raise ApplicationError(
                "worker shutting down: another worker delivers this message", type="WorkerShuttingDown"
            )

    def shielded(self):
        """No cancellation exception thrown into the block (a worker's shutdown grace running out, a
        cancel from the server): it is raised after the block, once the delivery is recorded."""
        return activity.shield_thread_cancel_exception() if self.temporal else nullcontext()

    def run(self, work: Callable[[], T]) -> T:
        """`work` (bounded by the delivery deadline) in a thread of its own, heartbeating until it ends."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery") as pool:
            future = pool.submit(work)
            while True:
                try:
                    return future.result(timeout=HEARTBEAT_EVERY)
                except StillRunning:
                    self.beat()
