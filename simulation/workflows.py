"""The replay driver of a what-if simulation (registered only by `simulation/simulator.py`, never by the
production worker).

It plays the part of the storefront and the outbox dispatcher for one person: it starts the
production hub at the simulated identify moment and signals it `identified`, then, at each later
moment of the person's real history, sends the signal ingestion would have sent (`activity` for
journey-relevant events, `purchased` for orders, `identified` for later identify moments). Like the
dispatcher's signal-with-start, a signal for a hub that has already completed starts a new one.
Everything else — routing, journeys, guardrails — is the production hub and journey code.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from journeys.policy import Policy
    from workflows import search
    from workflows.hub import hub_id
    from workflows.models import HubInput, HubSignal


class ReplaySignal(BaseModel):
    at: datetime  # on the simulation clock
    kind: Literal["identified", "activity", "purchased"]
    signal: HubSignal


class DriverInput(BaseModel):
    person_id: str
    policy: Policy
    start: datetime  # the simulated identify moment (or --at), on the simulation clock
    signals: list[ReplaySignal] = []  # later moments of the history, oldest first
    until: datetime  # the horizon: stop replaying and waiting here


class DriverResult(BaseModel):
    hubs: int = 0
    signals: int = 0
    horizon_reached: bool = False


@workflow.defn(name="simulation_driver")
class SimulationDriver:
    @workflow.run
    async def run(self, given: DriverInput) -> DriverResult:
        result = DriverResult()
        hub: workflow.ChildWorkflowHandle | None = None
        first = ReplaySignal(at=given.start, kind="identified", signal=HubSignal(event="Identify", at=given.start))
        for item in [first, *given.signals]:
            if item.at > given.until:
                break
            await self._until(item.at, hub)
            if hub is None or hub.done():
                hub = await self._start_hub(given)
                result.hubs += 1
            try:
                await hub.signal(item.kind, item.signal)
            except Exception:  # completed between the check and the signal: start a new one, as the dispatcher would
                hub = await self._start_hub(given)
                result.hubs += 1
                await hub.signal(item.kind, item.signal)
            result.signals += 1
        if hub is not None and not hub.done():
            # The last hub completes once its journey has ended and it has been idle for a while.
            try:
                await workflow.wait_condition(
                    lambda: hub.done(), timeout=max(given.until - workflow.now(), timedelta(seconds=1))
                )
            except TimeoutError:
                result.horizon_reached = True
        return result

    async def _until(self, moment: datetime, hub: workflow.ChildWorkflowHandle | None) -> None:
        """Sleep until `moment`, noticing on the way if the hub completes (so the next signal starts a new one)."""
        wait = moment - workflow.now()
        if wait <= timedelta(0):
            return
        if hub is None or hub.done():
            await workflow.sleep(wait)
            return
        try:
            await workflow.wait_condition(lambda: hub.done(), timeout=wait)
        except TimeoutError:
            return
        remaining = moment - workflow.now()
        if remaining > timedelta(0):
            await workflow.sleep(remaining)

    async def _start_hub(self, given: DriverInput) -> workflow.ChildWorkflowHandle:
        return await workflow.start_child_workflow(
            "hub",
            HubInput(person_id=given.person_id, policy=given.policy),
            id=hub_id(given.person_id),
            parent_close_policy=ParentClosePolicy.TERMINATE,
            search_attributes=search.attributes(given.person_id, status="evaluating"),
            static_summary=f"simulated decision hub for person {given.person_id}",
        )
