"""The three journeys: a sequence of steps (delay, template, channel) that re-checks the
guardrails before every send and sleeps through frequency caps and quiet hours."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from journeys.guardrails import earliest_send
    from journeys.policy import JourneyName
    from workflows import search
    from workflows.models import (
        JourneyEnded,
        JourneyInput,
        JourneyNote,
        JourneyState,
        SendCheck,
        SendCheckInput,
        SendInput,
        SendResult,
        StopJourney,
    )

# Errors no retry can mend: a template that does not render, a delivery setting that cannot work.
NOT_RETRYABLE = ["TemplateProblem", "TemplateError", "DeliveryConfigError"]
# Store calls ride out a database restart or fail-over, then give up: 20 attempts, at most 30 minutes.
# One attempt is a few short queries: 15 s start-to-close lets a SIGKILLed worker's call be retried
# soon (it cannot heartbeat) while leaving a busy database room to answer.
STORE_CALL: dict[str, Any] = dict(
    start_to_close_timeout=timedelta(seconds=15),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=1),
        maximum_attempts=20,
        non_retryable_error_types=NOT_RETRYABLE,
    ),
)
# A send heartbeats (activities/attempt.py), so a dead worker's send is retried ~10 s after it went
# quiet instead of after the whole start-to-close; one delivery (BREADCRUMB_DELIVERY_DEADLINE, at most
# 50 s) after waiting out another attempt's lease fits in the start-to-close. A relay that stays down
# is retried for up to 6 hours, then the step is recorded as failed and the journey goes on.
SEND_CALL: dict[str, Any] = dict(
    start_to_close_timeout=timedelta(minutes=2),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(hours=6),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=NOT_RETRYABLE,
    ),
)
WAIT_LABELS = {"frequency_cap": "frequency cap", "quiet_hours": "quiet hours"}
# Added with per-channel consent: a step whose channel cannot reach the person (unsubscribed from
# email, no SMS consent, no address) is skipped instead of ending the journey, while a later step on
# another channel still can reach them.
SKIP_BLOCKED_CHANNEL = "skip-blocked-channel"
# Added with the send's own re-check: when it finds what ends the journey while the message waited
# for its relay, the journey exits at that step instead of sleeping on to the next step's check.
SEND_CHECK_ENDS_JOURNEY = "send-check-ends-journey"
# Added with bounded retries: a guardrail read that finally fails ends the journey with the reason,
# a send that finally fails is recorded as failed and the journey goes on to its next step — where
# before the journey workflow failed with the activity's error.
GIVE_UP_WITH_A_REASON = "give-up-with-a-reason"


def reason_to_stop(check: SendCheck, route: str) -> str | None:
    """The first guardrail that ends the journey, in the contract's order: has not purchased,
    suppression/consent, the journey's segment rules (`only_if`/`unless`), the product still in stock
    and cheaper (catalogue journeys), cart still open (cart recovery). No one to send to on this channel is a
    `channel_blocked` (the step is skipped), never a reason to stop."""
    if not check.person_exists:
        return "person deleted"
    if check.purchased:
        return f"purchased: {check.purchased}"
    if check.suppressed:
        return check.suppressed
    if check.segment:
        return check.segment
    if check.product_stop:
        return check.product_stop
    if route == "cart_recovery" and not check.cart_open:
        return "cart no longer open"
    return None


def cause(error: ActivityError) -> str:
    """Why an activity finally failed, in one line: the last attempt's error, or the timeout."""
    inner: BaseException | None = error.cause
    while inner is not None and (deeper := getattr(inner, "cause", None)) is not None and not str(inner):
        inner = deeper
    if inner is None:
        return str(error)
    kind = getattr(inner, "type", None) or type(inner).__name__
    first_line = (str(inner).splitlines() or [""])[0]  # not a database error's SQL and parameters
    return f"{kind}: {first_line}"


class Journey:
    """Shared body of the three journey workflows."""

    def __init__(self) -> None:
        self.state: JourneyState | None = None
        self.stop_reason: str | None = None

    @property
    def _current(self) -> JourneyState:
        assert self.state is not None, "run_steps sets the state before anything reads it"
        return self.state

    async def run_steps(self, journey: JourneyInput) -> JourneyState:
        info = workflow.info()
        self.state = JourneyState(route=journey.route)
        steps = journey.policy.journeys[cast(JourneyName, journey.route)].steps
        for index, step in enumerate(steps, 1):
            self._current.step = index
            self._waiting("delay", workflow.now() + step.delay, f"step {index} ({step.label})")
            if await self._stopped_within(step.delay):
                return await self._end(journey, "exited", self.stop_reason or "")
            while True:
                try:
                    check: SendCheck = await workflow.execute_activity(
                        "check_before_send",
                        SendCheckInput(
                            person_id=journey.person_id,
                            route=journey.route,
                            channel=step.channel,
                            cart_id=journey.cart_id,
                            product_id=journey.product_id,
                            since=info.start_time if journey.product_id else None,
                        ),
                        result_type=SendCheck,
                        **STORE_CALL,
                    )
                except ActivityError as error:
                    if not workflow.patched(GIVE_UP_WITH_A_REASON):
                        raise
                    return await self._end(
                        journey, "exited", f"guardrails could not be read: {cause(error)}", step=index
                    )
                stop = reason_to_stop(check, journey.route)
                if stop:
                    return await self._end(journey, "exited", stop, step=index)
                if check.channel_blocked:
                    break
                slot = earliest_send(workflow.now(), check.last_message_at, journey.policy, check.timezone)
                if not slot.waits:
                    break
                wait = slot.waits[0]
                label = WAIT_LABELS[wait.reason]
                self._waiting(wait.reason, wait.until, f"step {index} deferred by {label}")
                await self._note(
                    journey, "waiting", f"{label} until {wait.until.isoformat()}", step=index, until=wait.until
                )
                if await self._stopped_within(wait.until - workflow.now()):
                    return await self._end(journey, "exited", self.stop_reason or "", step=index)
            if check.channel_blocked:
                blocked = check.channel_blocked
                later = [s for s in steps[index:] if s.channel != step.channel]
                if not workflow.patched(SKIP_BLOCKED_CHANNEL):
                    return await self._end(journey, "exited", blocked, step=index)
                await self._note(journey, "skipped", f"{blocked}: step {index} ({step.label}) not sent", step=index)
                if not later:
                    return await self._end(journey, "exited", f"{blocked}: no later step can reach them", step=index)
                continue
            self._status("sending")
            try:
                result: SendResult = await workflow.execute_activity(
                    "send_step",
                    SendInput(
                        workflow_id=info.workflow_id,
                        person_id=journey.person_id,
                        route=journey.route,
                        step=index,
                        template=step.template,
                        channel=step.channel,
                        cart_id=journey.cart_id,
                        at=workflow.now(),
                        product_id=journey.product_id,
                        since=info.start_time if journey.product_id else None,
                        variants=step.variants,
                        auto_winner=step.auto_winner,
                    ),
                    result_type=SendResult,
                    **SEND_CALL,
                )
            except ActivityError as error:
                if not workflow.patched(GIVE_UP_WITH_A_REASON):
                    raise
                reason = f"step {index} ({step.label}) not sent: {cause(error)}"
                self._current.sent.append(f"step {index}: failed")
                await self._note(journey, "failed", reason, step=index)
                continue
            self._current.sent.append(
                f"step {index}: {result.status}"
                + (f" [{result.variant}]" if result.variant else "")
                + (f" ({result.reason})" if result.reason else "")
            )
            if result.ends_journey and workflow.patched(SEND_CHECK_ENDS_JOURNEY):
                return await self._end(journey, "exited", result.reason or "stopped before sending", step=index)
        return await self._end(journey, "completed", f"all {len(steps)} steps done")

    def stop(self, request: StopJourney) -> None:
        self.stop_reason = self.stop_reason or request.reason

    async def _stopped_within(self, delay: timedelta) -> bool:
        """Sleep up to `delay`, waking early when the hub tells us to stop."""
        if delay > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self.stop_reason is not None, timeout=delay)
            except TimeoutError:
                pass
        return self.stop_reason is not None

    def _waiting(self, what: str, until: datetime, label: str) -> None:
        self._current.waiting_for, self._current.waiting_until = what, until
        self._status("waiting" if what == "delay" else f"waiting_{what}")
        workflow.set_current_details(f"{label}: waiting for {what.replace('_', ' ')} until {until.isoformat()}")

    def _status(self, status: str) -> None:
        self._current.status = status
        workflow.upsert_search_attributes([search.STATUS.value_set(status)])

    async def _note(self, journey: JourneyInput, kind: str, reason: str, **extra: Any) -> None:
        self._current.notes.append(f"{kind}: {reason}")
        await workflow.execute_activity(
            "record_journey_note",
            JourneyNote(
                workflow_id=workflow.info().workflow_id,
                person_id=journey.person_id,
                journey=journey.route,
                kind=kind,
                reason=reason,
                at=workflow.now(),
                **extra,
            ),
            **STORE_CALL,
        )

    async def _end(self, journey: JourneyInput, status: str, reason: str, step: int | None = None) -> JourneyState:
        self._current.waiting_for = self._current.waiting_until = None
        await self._note(journey, "exit" if status == "exited" else "completed", reason, step=step, final_status=status)
        self._status(status)
        workflow.set_current_details(f"{status}: {reason}")
        try:
            await workflow.get_external_workflow_handle(journey.hub_id).signal(
                "journey_ended", JourneyEnded(workflow_id=workflow.info().workflow_id, status=status, reason=reason)
            )
        except Exception:  # the hub may already be gone (erased person); nothing is waiting for us then
            pass
        return self._current


@workflow.defn(name="cart_recovery")
class CartRecovery(Journey):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        return await self.run_steps(journey)

    @workflow.signal(name="stop")
    def stop_signal(self, request: StopJourney) -> None:
        self.stop(request)

    @workflow.signal(name="hub_check")
    def hub_check(self) -> None:
        """A hub that continued as new pokes its journey to learn it still runs (a closed one refuses)."""

    @workflow.query(name="state")
    def query_state(self) -> JourneyState | None:
        return self._current


@workflow.defn(name="browse_recovery")
class BrowseRecovery(CartRecovery):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        return await self.run_steps(journey)


@workflow.defn(name="welcome")
class Welcome(CartRecovery):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        return await self.run_steps(journey)


@workflow.defn(name="back_in_stock")
class BackInStock(CartRecovery):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        return await self.run_steps(journey)


@workflow.defn(name="price_drop")
class PriceDrop(CartRecovery):
    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        return await self.run_steps(journey)
