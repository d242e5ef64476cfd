"""The decision hub: one long-lived entity workflow per identified person (`hub-{person_id}`).

Signal handlers only record what happened; the `run` loop loads the merged history, routes it with
the pure policy in `journeys/`, and runs the chosen journey as a child workflow.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from journeys.routing import RouteDecision, decide_route
    from workflows import search
    from workflows.journey import STORE_CALL
    from workflows.models import (
        Conversion,
        Decision,
        HubInput,
        HubSignal,
        HubState,
        JourneyEnded,
        JourneyInput,
        JourneyStart,
        PersonContext,
        RunningJourney,
        StopJourney,
    )

# A running journey is only replaced by a more urgent one (welcome → browse → cart).
PRIORITY = {"none": 0, "control": 0, "welcome": 1, "browse_recovery": 2, "cart_recovery": 3}
JOURNEYS = ("cart_recovery", "browse_recovery", "welcome")
DECISIONS_KEPT = 20
LOCAL_STORE_CALLS = "hub-local-store-calls"
# `start_journey` writes the routing decision to the store. As a local activity it wrote before the
# decision was durable: when the worker died before that workflow task completed, the retried task
# re-read the store, found its own row (a journey "already started", a re-entry cooldown), and
# numbered or routed differently — a cart lost its recovery journey, a browser got a welcome, and
# the orphan row said "running" for ever (found by tests/test_faults.py, SIGKILLing the worker).
# As a regular activity its input (route, workflow id) is in the history before it runs, so a retry
# is the same write. The read (`load_person`) stays local: re-running a read is harmless.
DURABLE_DECISION = "hub-decision-durable-before-write"


def hub_id(person_id: str) -> str:
    return f"hub-{person_id}"


def replaces(current: str | None, proposed: str) -> bool:
    """Whether a new routing decision should cancel the running journey."""
    return current is None or PRIORITY[proposed] > PRIORITY[current]


@workflow.defn(name="hub")
class Hub:
    def __init__(self) -> None:
        self.state = HubState()
        self.person_id = ""

    @workflow.run
    async def run(self, hub: HubInput) -> HubState:
        self.person_id = hub.person_id
        self.state = hub.state or self.state
        self.policy = policy = hub.policy
        while True:
            idle = self.state.journey is None
            woke = await self._wait(policy.hub_idle_timeout if idle else None)
            if not woke:
                self._status("idle_completed")
                return self.state
            if self.state.erased:
                await self._stop_journey("person erased or merged into another")
                self._status("erased")
                return self.state
            while self.state.purchases:
                await self._record_purchase(self.state.purchases.pop(0))
            if any(reason in ("identified", "activity", "merged") for reason in self.state.pending):
                self.state.pending.clear()
                await self._evaluate(policy)
            self.state.pending.clear()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(HubInput(person_id=self.person_id, policy=policy, state=self.state))

    async def _wait(self, timeout: timedelta | None) -> bool:
        try:
            await workflow.wait_condition(
                lambda: bool(self.state.pending or self.state.purchases or self.state.erased), timeout=timeout
            )
        except TimeoutError:
            return False
        return True

    async def _evaluate(self, policy) -> None:
        context: PersonContext | None = await self._store_call("load_person", self.person_id, PersonContext)
        if context is None:
            self.state.erased = True
            await self._stop_journey("person no longer exists")
            return
        last_started = {**context.last_started, **self.state.last_started}
        decision = decide_route(context.history, policy, workflow.now(), last_started=last_started)
        current = self.state.journey
        if current and not replaces(current.route, decision.route):
            return
        if current:
            await self._stop_journey(f"re-routed to {decision.route}: {decision.reason}")
        self.state.journeys_started = max(self.state.journeys_started, context.journeys_count)
        await self._start(decision, policy)

    async def _start(self, decision: RouteDecision, policy) -> None:
        now = workflow.now()
        workflow_id = None
        if decision.route in JOURNEYS:
            self.state.journeys_started += 1
            workflow_id = f"{decision.route}-{self.person_id}-{self.state.journeys_started}"
        record = Decision(at=now, route=decision.route, reason=decision.reason, cart_id=decision.cart_id,
                          cart_value=decision.cart_value, workflow_id=workflow_id)
        self.state.decisions = (self.state.decisions + [record])[-DECISIONS_KEPT:]
        allowed: bool = await self._store_call(
            "start_journey",
            JourneyStart(workflow_id=workflow_id or f"{hub_id(self.person_id)}:decision:{len(self.state.decisions)}",
                         hub_id=hub_id(self.person_id), person_id=self.person_id, route=decision.route,
                         reason=decision.reason, cart_id=decision.cart_id, cart_value=decision.cart_value, at=now),
            bool,
            writes=True,
        )
        workflow.upsert_search_attributes(
            [search.ROUTE.value_set(decision.route)]
            + ([search.CART_VALUE.value_set(float(decision.cart_value))] if decision.cart_value is not None else [])
        )
        if workflow_id is None or not allowed:
            self._status(decision.route if workflow_id is None else "cart_already_recovered")
            workflow.set_current_details(f"no journey: {decision.reason}")
            return
        await workflow.start_child_workflow(
            decision.route,
            JourneyInput(person_id=self.person_id, hub_id=hub_id(self.person_id), route=decision.route, policy=policy,
                         cart_id=decision.cart_id, cart_value=decision.cart_value),
            id=workflow_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"{decision.route} for person {self.person_id}",
            static_details=decision.reason,
            search_attributes=search.attributes(self.person_id, decision.route, "running", decision.cart_value),
        )
        self.state.journey = RunningJourney(workflow_id=workflow_id, route=decision.route, cart_id=decision.cart_id,
                                            started_at=now)
        self.state.last_started[decision.route] = now
        self._status("in_journey")
        workflow.set_current_details(f"running {decision.route} ({workflow_id}): {decision.reason}")

    async def _store_call(self, name: str, argument, result_type, writes: bool = False):
        """The hub's short store reads run as local activities: no extra round trip through the server
        between identify and the routing decision. Its write of the decision is a regular activity
        (see DURABLE_DECISION). Histories recorded before either change still replay."""
        if workflow.patched(LOCAL_STORE_CALLS) and not (writes and workflow.patched(DURABLE_DECISION)):
            return await workflow.execute_local_activity(name, argument, result_type=result_type, **STORE_CALL)
        return await workflow.execute_activity(name, argument, result_type=result_type, **STORE_CALL)

    async def _stop_journey(self, reason: str) -> None:
        journey = self.state.journey
        if journey is None:
            return
        self.state.journey = None
        try:
            await workflow.get_external_workflow_handle(journey.workflow_id).signal("stop", StopJourney(reason=reason))
        except Exception:  # already finished: nothing to stop
            pass

    async def _record_purchase(self, purchase: HubSignal) -> None:
        journey = self.state.journey
        await self._stop_journey(f"purchased (order {purchase.order_id or 'without id'})")
        await workflow.execute_activity(
            "record_conversion",
            Conversion(person_id=self.person_id, hub_id=hub_id(self.person_id), order_id=purchase.order_id,
                       revenue=purchase.revenue, ordered_at=purchase.at, at=workflow.now(),
                       attribution_window=self.policy.attribution_window,
                       journey_workflow_id=journey.workflow_id if journey else None),
            **STORE_CALL,
        )
        self.state.conversions += 1
        self._status("purchased")
        workflow.set_current_details(f"purchased (order {purchase.order_id or 'without id'})")

    def _status(self, status: str) -> None:
        self.state.status = status
        workflow.upsert_search_attributes([search.STATUS.value_set(status)])

    @workflow.signal
    def identified(self, signal: HubSignal) -> None:
        self.state.pending.append("identified")

    @workflow.signal
    def activity(self, signal: HubSignal) -> None:
        self.state.pending.append("activity")

    @workflow.signal
    def merged(self, signal: HubSignal) -> None:
        self.state.pending.append("merged")

    @workflow.signal
    def purchased(self, signal: HubSignal) -> None:
        self.state.purchases.append(signal)

    @workflow.signal
    def absorbed(self, signal: HubSignal) -> None:
        self.state.erased = True

    @workflow.signal
    def erased(self, signal: HubSignal) -> None:
        self.state.erased = True

    @workflow.signal
    def journey_ended(self, ended: JourneyEnded) -> None:
        if self.state.journey and self.state.journey.workflow_id == ended.workflow_id:
            self.state.journey = None
            self.state.pending.append("journey_ended")

    @workflow.query(name="state")
    def current_state(self) -> HubState:
        return self.state
