"""Typed inputs, outputs and state of the hub, the journeys and their activities.

Everything here crosses Temporal's data converter and is built inside workflows, so no field has a
default that reads the clock or draws a random id.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, model_validator

from journeys.experiments import AutoWinner, Variant
from journeys.history import PersonHistory
from journeys.policy import Policy
from journeys.send_rules import SendCheck as SendCheck  # defined beside the rule that fills it


class HubSignal(BaseModel):
    """What woke the hub; the outbox payload of one row."""

    message_id: str | None = None
    event: str | None = None
    at: datetime | None = None
    order_id: str | None = None
    revenue: float | None = None
    into: str | None = None
    absorbed: str | None = None
    # A catalogue trigger (`catalogue` signal): which product, and `back_in_stock` or `price_drop`.
    product_id: str | None = None
    trigger: str | None = None
    # Browsing the dispatcher already gathered for its activity window: the hub routes at once.
    gathered: bool = False


class HubInput(BaseModel):
    person_id: str
    policy: Policy
    state: HubState | None = None  # carried through continue-as-new


class RunningJourney(BaseModel):
    workflow_id: str
    route: str
    cart_id: str | None = None
    started_at: datetime


class Decision(BaseModel):
    at: datetime
    route: str
    reason: str
    cart_id: str | None = None
    cart_value: float | None = None
    workflow_id: str | None = None


class HubState(BaseModel):
    """All a hub knows; handed whole to the next run on continue-as-new."""

    status: str = "evaluating"
    pending: list[str] = []  # wake-up reasons not yet handled
    purchases: list[HubSignal] = []  # purchases not yet recorded
    journey: RunningJourney | None = None
    journeys_started: int = 0
    last_started: dict[str, datetime] = {}
    decisions: list[Decision] = []
    conversions: int = 0
    erased: bool = False
    catalogue: list[HubSignal] = []  # catalogue triggers not yet decided on


class PersonLookup(BaseModel):
    """What the hub asks `load_person`: the person, the moment it routes at (the projected history is
    exact for that moment) and the version of the policy it holds."""

    person_id: str
    at: datetime | None = None  # None: the activity's own clock
    policy_version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_person_id(cls, data: object) -> object:
        # Hubs scheduled before the lookup existed ask with the bare person id.
        return {"person_id": data} if isinstance(data, str) else data


class PersonContext(BaseModel):
    """The hub's view of a person, loaded from the store."""

    history: PersonHistory
    last_started: dict[str, datetime] = {}
    journeys_count: int = 0
    # Carts that already had their one recovery journey: routing skips them (`decide_route`).
    recovered_carts: list[str] = []
    # The policy now in force, when it is not the version the hub asked with (journeys.toml changed).
    policy: Policy | None = None
    # The segments some journey's `only_if`/`unless` names that the person is in now (names only).
    segments: list[str] = []


class JourneyStart(BaseModel):
    workflow_id: str
    hub_id: str
    person_id: str
    route: str
    reason: str
    cart_id: str | None = None
    cart_value: float | None = None
    at: datetime
    # A catalogue journey: its product, and the window in which the person gets one per product.
    product_id: str | None = None
    window: timedelta | None = None


class JourneyInput(BaseModel):
    person_id: str
    hub_id: str
    route: str
    policy: Policy
    cart_id: str | None = None
    cart_value: float | None = None
    product_id: str | None = None  # a catalogue journey's product: re-read before every send


class StopJourney(BaseModel):
    reason: str


class SendCheckInput(BaseModel):
    person_id: str
    route: str
    channel: str
    cart_id: str | None = None
    product_id: str | None = None
    since: datetime | None = None  # a catalogue journey's start: only orders from then on end it


class SendInput(BaseModel):
    workflow_id: str
    person_id: str
    route: str
    step: int
    template: str | None = None  # None when the step is an experiment: the send picks one of `variants`
    channel: str
    cart_id: str | None = None
    at: datetime
    product_id: str | None = None
    since: datetime | None = None
    variants: list[Variant] | None = None
    auto_winner: AutoWinner | None = None


class SendResult(BaseModel):
    """What the journey decides on: no subject, items or address (those can name the shopper and
    stay in the store, keyed by `message_id`)."""

    message_id: str
    status: str
    reason: str | None = None
    # The send's own re-check found what ends the journey (a purchase, a suppression, a closed cart,
    # the person gone) while the message waited for its relay: `reason` says which.
    ends_journey: bool = False
    variant: str | None = None  # the experiment variant the message got (its name, never its content)


class JourneyNote(BaseModel):
    """One line of a journey's log: a wait, a send, a skip, an exit, with its reason."""

    workflow_id: str
    person_id: str
    journey: str
    kind: Literal["decision", "waiting", "sent", "failed", "skipped", "exit", "completed", "conversion"]
    reason: str = ""
    at: datetime
    step: int | None = None
    until: datetime | None = None
    message_id: str | None = None
    final_status: str | None = None  # set on the journey run when the journey ends


class JourneyEnded(BaseModel):
    workflow_id: str
    status: str
    reason: str


class JourneyState(BaseModel):
    route: str
    status: str = "running"
    step: int = 0
    waiting_for: str | None = None
    waiting_until: datetime | None = None
    sent: list[str] = []
    notes: list[str] = []


class Conversion(BaseModel):
    person_id: str
    hub_id: str
    order_id: str | None = None
    revenue: float | None = None
    ordered_at: datetime | None = None
    at: datetime
    attribution_window: timedelta
    journey_workflow_id: str | None = None


HubInput.model_rebuild()
