"""The decision hub: one long-lived entity workflow per identified person (`hub-{person_id}`).

Signal handlers only record what happened; the `run` loop loads the merged history, routes it with
the pure policy in `journeys/`, and runs the chosen journey as a child workflow.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from journeys.catalogue import decide_catalogue, journey_id
    from journeys.policy import ALL_JOURNEYS, CATALOGUE_JOURNEYS
    from journeys.routing import RouteDecision, decide_route
    from journeys.wakeups import replaces
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
        PersonLookup,
        RunningJourney,
        StopJourney,
    )

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
# Issue 12. The hub takes its queue of wake-ups before it decides and never clears it after, so a
# signal handled while it decides (an `Added to Cart` during `load_person`) is decided on next; and
# a wake-up in the same task as the idle timeout keeps the hub going.
KEEPS_SIGNALS = "hub-keeps-signals-during-decision"
# `activity` wake-ups are gathered for the policy's `hub_debounce` before the hub re-routes.
DEBOUNCE_ACTIVITY = "hub-debounces-activity"
# Journey and decision ids are drawn from the workflow's deterministic uuid4 (counting rows repeated
# them), and the decision is written before the running journey is stopped: a refused start (a cart
# already recovered) leaves the running journey alone.
UNIQUE_JOURNEY_IDS = "hub-unique-journey-ids"
# The hub follows the journey it started (failed, terminated, cancelled, timed out → re-route), and
# after continue-as-new, when it no longer holds the child, checks every JOURNEY_CHECK that it runs.
WATCHES_JOURNEY = "hub-watches-its-journey"
JOURNEY_CHECK = timedelta(hours=1)
# Issue 18. `catalogue` signals (a product back in stock or cheaper) start a catalogue journey when
# nothing more urgent runs; histories recorded before never carry one.
CATALOGUE_TRIGGERS = "hub-catalogue-triggers"
# Issue 16. Each `workflow.patched` call records a marker and upserts the TemporalChangeVersion search
# attribute (a visibility write on the server): the patches above cost every hub run seven history
# events and six visibility writes before it did any work. A run that records ALL_PATCHES takes every
# patch above as applied (one marker) and sets its route and status in one upsert; histories
# recorded before it replay through their own markers.
ALL_PATCHES = "hub-all-patches-2026-12"
# `browsing`: an `activity` signal the dispatcher gathered for its window already (issue 16) — routed
# at once, without a debounce timer and the workflow task it costs; histories recorded before never
# carry one.
ROUTING_REASONS = ("identified", "activity", "browsing", "merged", "journey_failed")
PROMPT_REASONS = ("identified", "browsing", "merged", "journey_failed")  # routed at once; `activity` is gathered first


def hub_id(person_id: str) -> str:
    return f"hub-{person_id}"


@workflow.defn(name="hub")
class Hub:
    def __init__(self) -> None:
        self.state = HubState()
        self.person_id = ""
        self.watched: str | None = None  # the journey this run started and follows as its child
        self.deciding = False  # between a wake-up and the next wait (the `busy` query)
        self.all_patches: bool | None = None  # whether this run recorded ALL_PATCHES (asked once)

    @workflow.run
    async def run(self, hub: HubInput) -> HubState:
        self.person_id = hub.person_id
        self.state = hub.state or self.state
        self.policy = hub.policy
        while True:
            self.deciding = False
            woke = await self._wait(self._timeout())
            self.deciding = True  # until it waits again: purchases, routing, continue-as-new
            if not woke:
                if self.state.journey is not None:  # a journey started by an earlier run: still there?
                    await self._check_journey()
                    continue
                self._status("idle_completed")
                return self.state
            if self.state.erased:
                await self._stop_journey("person erased or merged into another")
                self._status("erased")
                return self.state
            while self.state.purchases:
                await self._record_purchase(self.state.purchases.pop(0))
            if self.state.catalogue and self._patched(CATALOGUE_TRIGGERS):
                await self._catalogue_triggers()
            if self._patched(KEEPS_SIGNALS):
                await self._decide()
            else:
                if any(reason in ("identified", "activity", "browsing", "merged") for reason in self.state.pending):
                    self.state.pending.clear()
                    await self._evaluate()
                self.state.pending.clear()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(HubInput(person_id=self.person_id, policy=self.policy, state=self.state))

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched(patch_id)`, answered by ALL_PATCHES in runs that recorded it."""
        if self.all_patches is None:
            self.all_patches = workflow.patched(ALL_PATCHES)
        return self.all_patches or workflow.patched(patch_id)

    def _has_work(self) -> bool:
        return bool(self.state.pending or self.state.purchases or self.state.erased or self.state.catalogue)

    def _timeout(self) -> timedelta | None:
        """Idle: the policy's idle timeout. In a journey this run follows: none (its end wakes us). In
        one an earlier run started: the next check that it still runs."""
        journey = self.state.journey
        if journey is None:
            return self.policy.hub_idle_timeout
        if journey.workflow_id != self.watched and self._patched(WATCHES_JOURNEY):
            return JOURNEY_CHECK
        return None

    async def _wait(self, timeout: timedelta | None) -> bool:
        try:
            await workflow.wait_condition(self._has_work, timeout=timeout)
        except TimeoutError:
            # A signal handled in the same task as the timer is still work to do.
            return self._has_work() and self._patched(KEEPS_SIGNALS)
        return True

    async def _decide(self) -> None:
        """Route once for everything that woke the hub; what arrives meanwhile stays queued."""
        reasons, self.state.pending = self.state.pending, []
        if not any(reason in ROUTING_REASONS for reason in reasons):
            return
        if not any(reason in PROMPT_REASONS for reason in reasons) and self._patched(DEBOUNCE_ACTIVITY):
            try:
                await workflow.wait_condition(
                    lambda: bool(
                        self.state.erased
                        or self.state.purchases
                        or any(reason in PROMPT_REASONS for reason in self.state.pending)
                    ),
                    timeout=self.policy.hub_debounce,
                )
            except TimeoutError:
                pass
            if self.state.erased or self.state.purchases:  # handled first; then routed
                self.state.pending = reasons + self.state.pending
                return
            self.state.pending = []
        await self._evaluate()

    async def _evaluate(self) -> None:
        lookup = PersonLookup(person_id=self.person_id, at=workflow.now(), policy_version=self.policy.version)
        context: PersonContext | None = await self._store_call("load_person", lookup, PersonContext)
        if context is None:
            self.state.erased = True
            await self._stop_journey("person no longer exists")
            return
        if context.policy is not None:  # journeys.toml changed: decide (and start journeys) under the new one
            self.policy = context.policy
        summary = context.history.summary
        last_started = {**context.last_started, **self.state.last_started}
        decision = decide_route(
            context.history,
            self.policy,
            summary.as_of if summary else workflow.now(),
            last_started=last_started,
            recovered_carts=context.recovered_carts,
            segments=context.segments,
        )
        current = self.state.journey
        if current and not replaces(current.route, decision.route):
            return
        await self._start(decision, context)

    async def _start(self, decision: RouteDecision, context: PersonContext) -> None:
        unique = self._patched(UNIQUE_JOURNEY_IDS)
        stop_reason = f"re-routed to {decision.route}: {decision.reason}"
        if not unique:
            await self._stop_journey(stop_reason)
            self.state.journeys_started = max(self.state.journeys_started, context.journeys_count)
        now = workflow.now()
        workflow_id = None
        if decision.route in ALL_JOURNEYS:
            self.state.journeys_started += 1
            if decision.product_id is not None:  # one per person, product and window (journeys.catalogue)
                window = self.policy.catalogue_window(decision.route)
                workflow_id = journey_id(decision.route, self.person_id, decision.product_id, now, window)
            else:
                number = workflow.uuid4().hex if unique else self.state.journeys_started
                workflow_id = f"{decision.route}-{self.person_id}-{number}"
        allowed = await self._record_decision(decision, workflow_id, unique)
        route = [search.ROUTE.value_set(decision.route)] + (
            [search.CART_VALUE.value_set(float(decision.cart_value))] if decision.cart_value is not None else []
        )
        if not self.all_patches:  # recorded before ALL_PATCHES: the route in an upsert of its own, here
            workflow.upsert_search_attributes(route)
            route = []
        if workflow_id is None or not allowed:
            if self.state.journey is None:
                refused = "already_notified" if decision.product_id else "cart_already_recovered"
                self._status(decision.route if workflow_id is None else refused, route)
                workflow.set_current_details(f"no journey: {decision.reason}")
            elif route:
                workflow.upsert_search_attributes(route)
            return
        await self._stop_journey(stop_reason)
        handle = await workflow.start_child_workflow(
            decision.route,
            JourneyInput(
                person_id=self.person_id,
                hub_id=hub_id(self.person_id),
                route=decision.route,
                policy=self.policy,
                cart_id=decision.cart_id,
                cart_value=decision.cart_value,
                product_id=decision.product_id,
            ),
            id=workflow_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"{decision.route} for person {self.person_id}",
            static_details=decision.reason,
            search_attributes=search.attributes(self.person_id, decision.route, "running", decision.cart_value),
        )
        self.state.journey = RunningJourney(
            workflow_id=workflow_id, route=decision.route, cart_id=decision.cart_id, started_at=now
        )
        self.state.last_started[decision.route] = now
        self._status("in_journey", route)
        workflow.set_current_details(f"running {decision.route} ({workflow_id}): {decision.reason}")
        if self._patched(WATCHES_JOURNEY):
            self.watched = workflow_id
            asyncio.create_task(self._follow(handle))

    async def _record_decision(self, decision: RouteDecision, workflow_id: str | None, unique: bool) -> bool:
        """Keep the decision in the hub's state and write it to the store (`start_journey`); False when
        the store refuses the journey (a cart already recovered, a product already notified)."""
        now = workflow.now()
        record = Decision(
            at=now,
            route=decision.route,
            reason=decision.reason,
            cart_id=decision.cart_id,
            cart_value=decision.cart_value,
            workflow_id=workflow_id,
        )
        self.state.decisions = (self.state.decisions + [record])[-DECISIONS_KEPT:]
        decision_id = f"{hub_id(self.person_id)}:decision:" + (
            workflow.uuid4().hex if unique else str(len(self.state.decisions))
        )
        window = self.policy.catalogue_window(decision.route) if decision.route in CATALOGUE_JOURNEYS else None
        allowed: bool = await self._store_call(
            "start_journey",
            JourneyStart(
                workflow_id=workflow_id or decision_id,
                hub_id=hub_id(self.person_id),
                person_id=self.person_id,
                route=decision.route,
                reason=decision.reason,
                cart_id=decision.cart_id,
                cart_value=decision.cart_value,
                at=now,
                product_id=decision.product_id,
                window=window,
            ),
            bool,
            writes=True,
        )
        return allowed

    async def _catalogue_triggers(self) -> None:
        """Decide on each catalogue trigger: start its journey (`_start`), or only record why not (a
        journey as urgent runs, the holdout group) and leave the running journey alone."""
        while self.state.catalogue:
            trigger = self.state.catalogue.pop(0)
            lookup = PersonLookup(person_id=self.person_id, at=workflow.now(), policy_version=self.policy.version)
            context: PersonContext | None = await self._store_call("load_person", lookup, PersonContext)
            if context is None:
                self.state.erased = True
                return
            if context.policy is not None:
                self.policy = context.policy
            running = self.state.journey.route if self.state.journey is not None else None
            decision = decide_catalogue(
                self.person_id, trigger.product_id or "", trigger.trigger or "", self.policy, running, context.segments
            )
            if decision.route == "none":
                await self._record_decision(decision, None, unique=True)
            else:
                await self._start(decision, context)

    async def _follow(self, handle: workflow.ChildWorkflowHandle[Any, Any]) -> None:
        """Wait for the journey this run started to close; an abnormal end re-routes the person."""
        try:
            await handle
            failure = None  # completed: its `journey_ended` signal has normally told us already
        except ChildWorkflowError as error:  # failed, terminated, cancelled or timed out
            failure = str(error.cause or error)
        self._journey_gone(handle.id, failure)

    async def _check_journey(self) -> None:
        """A journey an earlier run started cannot be followed as a child: poke it; a journey that no
        longer runs and never said it ended (`journey_ended`) ended abnormally."""
        journey = self.state.journey
        if journey is None:
            return
        try:
            await workflow.get_external_workflow_handle(journey.workflow_id).signal("hub_check")
        except Exception:  # not running any more
            self._journey_gone(journey.workflow_id, "no longer running and never reported its end")

    def _journey_gone(self, workflow_id: str, failure: str | None) -> None:
        if self.state.journey is None or self.state.journey.workflow_id != workflow_id:
            return  # already ended by its `journey_ended` signal, or replaced
        self.state.journey = None
        self.state.pending.append("journey_failed" if failure else "journey_ended")
        if failure:
            workflow.set_current_details(f"journey {workflow_id} ended abnormally ({failure}): re-routing")

    async def _store_call(self, name: str, argument: Any, result_type: type[Any], writes: bool = False) -> Any:
        """The hub's short store reads run as local activities: no extra round trip through the server
        between identify and the routing decision. Its write of the decision is a regular activity
        (see DURABLE_DECISION). Histories recorded before either change still replay."""
        if self._patched(LOCAL_STORE_CALLS) and not (writes and self._patched(DURABLE_DECISION)):
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
            Conversion(
                person_id=self.person_id,
                hub_id=hub_id(self.person_id),
                order_id=purchase.order_id,
                revenue=purchase.revenue,
                ordered_at=purchase.at,
                at=workflow.now(),
                attribution_window=self.policy.attribution_window,
                journey_workflow_id=journey.workflow_id if journey else None,
            ),
            **STORE_CALL,
        )
        self.state.conversions += 1
        self._status("purchased")
        workflow.set_current_details(f"purchased (order {purchase.order_id or 'without id'})")

    def _status(self, status: str, also: list[Any] | None = None) -> None:
        """Set the hub's status (and `also`, the route of a decision) in one search-attribute upsert."""
        self.state.status = status
        workflow.upsert_search_attributes([search.STATUS.value_set(status)] + (also or []))

    @workflow.signal
    def identified(self, signal: HubSignal) -> None:
        self.state.pending.append("identified")

    @workflow.signal
    def activity(self, signal: HubSignal) -> None:
        self.state.pending.append("browsing" if signal.gathered else "activity")

    @workflow.signal
    def merged(self, signal: HubSignal) -> None:
        self.state.pending.append("merged")

    @workflow.signal
    def purchased(self, signal: HubSignal) -> None:
        self.state.purchases.append(signal)

    @workflow.signal
    def catalogue(self, signal: HubSignal) -> None:
        self.state.catalogue.append(signal)

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

    @workflow.query(name="busy")
    def busy(self) -> bool:
        """Whether the hub has wake-ups it has not decided on yet, or is deciding now."""
        return self._has_work() or self.deciding
