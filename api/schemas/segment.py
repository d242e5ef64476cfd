"""Segment Tracking API messages: one model per call, a batch item being their union on `type`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from api.schemas.common import MAX_ID, invalid


def _identifier(value: object, info: ValidationInfo) -> str | None:
    """Segment ids may be numbers; empty counts as absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid(f"{info.field_name} must be a string")
    value = str(value)
    if len(value) > MAX_ID:
        raise invalid(f"{info.field_name} is {len(value)} characters long; the limit is {MAX_ID}")
    return value


def _object(value: object, info: ValidationInfo) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{info.field_name} must be an object")
    return value


def parse_time(value: object, info: ValidationInfo) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{info.field_name} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise invalid(f"{info.field_name} {value[:40]!r} is not an ISO-8601 date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _event_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("event is required for track calls")
    if len(value) > MAX_ID:
        raise invalid(f"event name is {len(value)} characters long; the limit is {MAX_ID}")
    return value.strip()


def _page_name(value: object) -> str | None:
    """A page or screen name is kept when it is a non-empty string (cut to the id limit), else ignored."""
    return value[:MAX_ID] if isinstance(value, str) and value else None


Identifier = Annotated[
    str | None,
    BeforeValidator(_identifier),
    WithJsonSchema({"type": ["string", "number", "null"], "maxLength": MAX_ID}),
]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_object), WithJsonSchema({"type": ["object", "null"]})]
IsoTime = Annotated[
    datetime | None,
    BeforeValidator(parse_time),
    WithJsonSchema({"type": ["string", "null"], "description": "ISO-8601"}),
]


class Message(BaseModel):
    """What every call carries. Unknown keys are allowed (the libraries add their own)."""

    model_config = ConfigDict(extra="allow")

    messageId: Identifier = None
    context: JsonObject = Field(default_factory=dict)
    userId: Identifier = None
    anonymousId: Identifier = None
    timestamp: IsoTime = None
    originalTimestamp: SkipValidation[IsoTime] = Field(None, description="used when timestamp is absent")
    sentAt: IsoTime = Field(None, description="the device clock at sending: timestamps are corrected by it")
    writeKey: SkipValidation[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _timestamp(cls, data: Any) -> Any:
        """The device time is `timestamp`, else `originalTimestamp` (the name some libraries use)."""
        if isinstance(data, dict) and not data.get("timestamp") and data.get("originalTimestamp"):
            return {**data, "timestamp": data["originalTimestamp"]}
        return data

    @model_validator(mode="after")
    def _someone(self) -> Message:
        if not (self.userId or self.anonymousId):
            raise invalid("userId or anonymousId is required")
        return self

    payload_field: ClassVar[str] = "properties"  # where the call carries its data

    @property
    def properties_or_traits(self) -> dict:
        return getattr(self, self.payload_field)


class Identify(Message):
    type: Literal["identify"]
    traits: JsonObject = Field(default_factory=dict)

    payload_field: ClassVar[str] = "traits"


class Track(Message):
    type: Literal["track"]
    properties: JsonObject = Field(default_factory=dict)
    event: Annotated[str, BeforeValidator(_event_name)] = Field(None, validate_default=True, max_length=MAX_ID)


class Page(Message):
    type: Literal["page"]
    properties: JsonObject = Field(default_factory=dict)
    name: Annotated[str | None, BeforeValidator(_page_name)] = None


class Screen(Page):
    type: Literal["screen"]  # type: ignore[assignment]


class Group(Message):
    type: Literal["group"]
    traits: JsonObject = Field(default_factory=dict)
    groupId: Identifier = None

    @model_validator(mode="after")
    def _group(self) -> Group:
        if not self.groupId:
            raise invalid("groupId is required")
        return self

    payload_field: ClassVar[str] = "traits"


class Alias(Message):
    type: Literal["alias"]
    properties: JsonObject = Field(default_factory=dict)
    previousId: Identifier = None

    @model_validator(mode="after")
    def _someone(self) -> Alias:  # an alias names a user and what they were known as before
        if not self.userId:
            raise invalid("userId is required")
        if not self.previousId:
            raise invalid("previousId is required")
        return self


CALLS: dict[str, type[Message]] = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "alias": Alias,
    "group": Group,
}
SHORT_PATHS = {"identify": "i", "track": "t", "page": "p", "screen": "s", "alias": "a", "group": "g"}
AnyMessage = Annotated[Identify | Track | Page | Screen | Alias | Group, Field(discriminator="type")]
MESSAGE = TypeAdapter(AnyMessage)


def _context(value: object) -> dict | None:
    """A batch's shared context; anything but an object is ignored, as the libraries do."""
    return value if isinstance(value, dict) else None


class Batch(BaseModel):
    """`/v1/batch`: each item is validated on its own, so one bad message does not lose the others."""

    model_config = ConfigDict(extra="allow")

    batch: list[SkipValidation[AnyMessage]]
    context: Annotated[dict | None, BeforeValidator(_context)] = None
    sentAt: SkipValidation[IsoTime] = Field(None, description="for items without their own sentAt")
    writeKey: SkipValidation[str | None] = None
