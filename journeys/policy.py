"""Journey policy: the marketer-owned knobs, loaded from TOML and validated by pydantic.

A wrong key or value is an error at start-up that names the key, never a silent default.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from journeys import taxonomy
from journeys.experiments import AutoWinner, Variant
from journeys.segments import Segment, membership_block

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)


_ISO_DURATION = TypeAdapter(timedelta)


def parse_duration(value: object) -> timedelta:
    """`"90s"`, `"30m"`, `"4h"`, `"1d"`, `"1h30m"`, a number of seconds, or ISO 8601 (`"PT4H"`)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str) and value.strip().upper().startswith(("P", "-P")):
        return _ISO_DURATION.validate_python(value.strip())  # how the policy travels through Temporal
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(f"invalid duration {value!r}: use e.g. '90s', '30m', '4h', '1d' or '1h30m'")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
JourneyName = Literal["cart_recovery", "browse_recovery", "welcome", "back_in_stock", "price_drop"]
# The journeys routing picks from a person's history (`journeys.routing.decide_route`).
JOURNEY_NAMES: tuple[JourneyName, ...] = ("cart_recovery", "browse_recovery", "welcome")
# The journeys a catalogue change starts (`journeys.catalogue`); journeys.toml may leave them out.
CATALOGUE_JOURNEYS: tuple[JourneyName, ...] = ("back_in_stock", "price_drop")
ALL_JOURNEYS: tuple[JourneyName, ...] = JOURNEY_NAMES + CATALOGUE_JOURNEYS
CATALOGUE_WINDOW = timedelta(days=14)
SourceOfTruth = Literal["client", "server", "any"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One message of a journey: wait `delay` after the previous step, then send `template` — or one
    of its `variants` (journeys/experiments.py), with an optional `auto_winner` rule."""

    delay: Duration
    template: str | None = Field(default=None, min_length=1)
    variants: list[Variant] | None = None
    auto_winner: AutoWinner | None = None
    channel: Literal["email", "sms", "outbox"] = "email"

    @model_validator(mode="after")
    def _template_or_variants(self) -> Step:
        if (self.template is None) == (self.variants is None):
            raise ValueError("a step has either `template` or `variants`, not both and not neither")
        if self.variants is not None:
            names = [v.label for v in self.variants]
            if len(names) < 2:
                raise ValueError("variants: an experiment needs at least two variants")
            if len(set(names)) < len(names):
                raise ValueError(f"variants: names must be unique, got {names} (give `name` to tell them apart)")
        elif self.auto_winner is not None:
            raise ValueError("auto_winner needs `variants`")
        return self

    @property
    def templates(self) -> list[tuple[str, str | None]]:
        """Every (template, subject line replacing its own) the step can send."""
        return [(v.template, v.subject) for v in self.variants] if self.variants else [(self.template or "", None)]

    @property
    def label(self) -> str:
        """How logs name the step's message: its template, or its variants."""
        return " | ".join(v.label for v in self.variants) if self.variants else self.template or ""


class Journey(_Strict):
    steps: list[Step] = Field(min_length=1)
    reentry_cooldown: Duration = timedelta(0)
    # Segments (`[segments.NAME]`) the person must be in / must not be in: checked at routing and
    # again before every send (journeys/segments.membership_block).
    only_if: list[str] = []
    unless: list[str] = []
    # Catalogue journeys only: how far back a view or add-to-cart counts, and the span in which a
    # person gets at most one journey of this kind per product (default CATALOGUE_WINDOW).
    window: Duration | None = None


class QuietHours(_Strict):
    """Local-time window in which nothing is sent; `start` after `end` spans midnight."""

    start: time = time(21, 0)
    end: time = time(8, 0)
    enabled: bool = True


class Intent(_Strict):
    """Browse intent: weighted event counts inside a lookback window."""

    lookback: Duration = timedelta(days=7)
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            taxonomy.PRODUCT_VIEWED: 1.0,
            taxonomy.COLLECTION_VIEWED: 0.5,
            taxonomy.QUIZ_ANSWERED: 2.0,
            "Size Guide Viewed": 1.5,
            taxonomy.REMOVED_FROM_CART: 0.5,
        }
    )

    @field_validator("weights")
    @classmethod
    def _canonical_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        return {taxonomy.canonical_name(name): weight for name, weight in weights.items()}


def _default_journeys() -> dict[JourneyName, Journey]:
    def series(prefix: str, *delays: str) -> Journey:
        return Journey(steps=[Step(delay=d, template=f"{prefix}_{i}") for i, d in enumerate(delays, 1)])

    return {
        "cart_recovery": series("cart_recovery", "1h", "24h", "48h"),
        "browse_recovery": series("browse_recovery", "2h", "48h").model_copy(
            update={"reentry_cooldown": timedelta(days=7)}
        ),
        "welcome": series("welcome", "5m", "2d", "4d"),
        **_default_catalogue_journeys(),
    }


def _default_catalogue_journeys() -> dict[JourneyName, Journey]:
    return {
        name: Journey(
            steps=[Step(delay="5m", template=f"{name}_1"), Step(delay="2d", template=f"{name}_2")],
            window=CATALOGUE_WINDOW,
        )
        for name in CATALOGUE_JOURNEYS
    }


class Policy(_Strict):
    """Everything a journey decision depends on. Loaded once per process; handed to workflows."""

    cart_min_value: float = Field(default=50.0, ge=0)
    browse_intent_threshold: float = Field(default=5.0, ge=0)
    intent: Intent = Intent()
    min_hours_between_messages: float = Field(default=20.0, ge=0)
    quiet_hours: QuietHours = QuietHours()
    default_timezone: str = "UTC"
    attribution_window: Duration = timedelta(days=5)
    merge_window: Duration = timedelta(days=30)
    identify_events: list[str] = Field(
        default_factory=lambda: [taxonomy.EMAIL_CAPTURED, "SMS Captured", "Account Created", taxonomy.CHECKOUT_STARTED]
    )
    source_of_truth: dict[str, SourceOfTruth] = Field(default_factory=dict)
    duplicate_window: Duration = timedelta(minutes=10)
    hub_idle_timeout: Duration = timedelta(days=3)
    # How long the hub gathers `activity` signals before it re-routes: a browsing burst is one decision.
    hub_debounce: Duration = Field(default=timedelta(seconds=2), le=timedelta(minutes=5))
    holdout_percent: float = Field(default=0.0, ge=0, le=100)
    journeys: dict[JourneyName, Journey] = Field(default_factory=_default_journeys)
    segments: dict[str, Segment] = {}
    # How often the worker re-judges everyone's segments (windows that slid by, unsubscribes, merges).
    segment_refresh: Duration = Field(default=timedelta(hours=1), ge=timedelta(minutes=1))

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {name!r}") from None
        return name

    @field_validator("identify_events")
    @classmethod
    def _canonical_identify_events(cls, names: list[str]) -> list[str]:
        return [taxonomy.canonical_name(n) for n in names]

    @field_validator("source_of_truth")
    @classmethod
    def _canonical_sources(cls, sources: dict[str, SourceOfTruth]) -> dict[str, SourceOfTruth]:
        return {taxonomy.canonical_name(n): s for n, s in sources.items()}

    @field_validator("journeys", mode="before")
    @classmethod
    def _catalogue_journeys_by_default(cls, journeys: object) -> object:
        """journeys.toml written before catalogue triggers has no such sections: they get the defaults."""
        if isinstance(journeys, dict):
            return {**_default_catalogue_journeys(), **journeys}
        return journeys

    @model_validator(mode="after")
    def _every_journey_defined(self) -> Policy:
        missing = [name for name in JOURNEY_NAMES if name not in self.journeys]
        if missing:
            raise ValueError(f"journeys.{missing[0]} is not defined")
        for name, journey in self.journeys.items():
            if journey.window is not None and name not in CATALOGUE_JOURNEYS:
                raise ValueError(
                    f"journeys.{name}.window: only catalogue journeys ({', '.join(CATALOGUE_JOURNEYS)}) have one"
                )
        return self

    @model_validator(mode="after")
    def _known_segments(self) -> Policy:
        for name, journey in self.journeys.items():
            for rule in ("only_if", "unless"):
                for segment in getattr(journey, rule):
                    if segment not in self.segments:
                        raise ValueError(
                            f"journeys.{name}.{rule}: unknown segment {segment!r} (no [segments.{segment}])"
                        )
        return self

    def route_segments(self, route: str) -> dict[str, Segment]:
        """The segments one journey's `only_if`/`unless` names (none for a route that is no journey)."""
        journey = self.journeys.get(route)  # type: ignore[call-overload]
        names = [*journey.only_if, *journey.unless] if journey is not None else []
        return {name: self.segments[name] for name in names}

    def segment_block(self, route: str, member_of: frozenset[str] | set[str], started: bool = False) -> str | None:
        """Why the journey `route` may not run for a person in `member_of` (`membership_block`), or None."""
        journey = self.journeys.get(route)  # type: ignore[call-overload]
        return membership_block(journey.only_if, journey.unless, member_of, started) if journey is not None else None

    def journey_segments(self) -> dict[str, Segment]:
        """The segments some journey's `only_if`/`unless` names: what routing and sends evaluate."""
        named = {s for journey in self.journeys.values() for s in (*journey.only_if, *journey.unless)}
        return {name: segment for name, segment in self.segments.items() if name in named}

    def catalogue_window(self, name: str) -> timedelta:
        """The window of catalogue journey `name`: views older than this do not count, and one journey
        per person and product at most within it."""
        return self.journeys[name].window or CATALOGUE_WINDOW  # type: ignore[index]

    def step_templates(self) -> list[tuple[str, str, str | None]]:
        """Every (template, channel, variant subject) a step can send: what the worker checks at start-up."""
        return [
            (template, step.channel, subject)
            for journey in self.journeys.values()
            for step in journey.steps
            for template, subject in step.templates
        ]

    @property
    def min_time_between_messages(self) -> timedelta:
        return timedelta(hours=self.min_hours_between_messages)

    def source_of_truth_for(self, canonical_event: str) -> SourceOfTruth:
        return self.source_of_truth.get(canonical_event, "any")

    @property
    def version(self) -> str:
        """A fingerprint of every field: hubs compare it to learn that journeys.toml changed."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class PolicyError(ValueError):
    """A journey config that cannot be used; the message names the file and the key."""


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_policy(data: dict[str, Any], source: str = "journeys.toml") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_key(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise PolicyError(f"{source}: {problems}") from None


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{path}: journey config not found") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise PolicyError(f"{path}: journey config not readable ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML ({exc})") from None
    return parse_policy(data, str(path))
