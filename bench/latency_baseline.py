"""The baseline of `bench/identify_latency.py`: the least a signal-with-start can cost on the same
server and the same worker (it registers these on the product worker, on its task queue) — a
trivial workflow that, once signalled, runs one no-op activity.

Kept in its own small module so the workflow runs in the workflow sandbox exactly like the hub
(the sandbox re-imports the module that defines a workflow)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
def noop(key: str) -> str:
    """Synchronous, on a thread pool, like the store activities."""
    return key


@workflow.defn(name="bench_signal_then_activity")
class SignalThenActivity:
    def __init__(self) -> None:
        self.poked: str | None = None

    @workflow.run
    async def run(self, key: str) -> str:
        await workflow.wait_condition(lambda: self.poked is not None)
        return await workflow.execute_activity(noop, self.poked, start_to_close_timeout=timedelta(seconds=30))

    @workflow.signal
    def poke(self, key: str) -> None:
        self.poked = key
