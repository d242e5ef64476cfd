"""Customer.io Track API v1 bodies: identify, events (of a customer or anonymous) and merges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation, WithJsonSchema, model_validator

from api.schemas.common import EARLIEST, LATEST, MAX_ID, invalid


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("name is required")
    if len(value) > MAX_ID:
        raise invalid(f"name is {len(value)} characters long; the limit is {MAX_ID}")
    return value


def _data(value: object) -> dict:
    value = value or {}
    if not isinstance(value, dict):
        raise invalid("data must be an object")
    return value


def _kind(value: object) -> str:
    value = value or "event"
    if value not in ("event", "page", "screen"):
        raise invalid("type must be event, page or screen")
    return value


def _message_id(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
        raise invalid(f"id must be a string of at most {MAX_ID} characters")
    return value or None


def _unix_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid("timestamp must be a unix timestamp in seconds")
    try:
        moment = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise invalid("timestamp is out of range") from None
    if not EARLIEST <= moment < LATEST:
        raise invalid(f"timestamp {moment.isoformat()} is out of range (1970–2100)")
    return moment


def _anonymous_id(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
        raise invalid(f"anonymous_id must be a string of at most {MAX_ID} characters")
    return value or None


ShortId = WithJsonSchema({"type": ["string", "null"], "maxLength": MAX_ID})


class Event(BaseModel):
    """`POST /customers/{id}/events`: a named event, a page or a screen view."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, BeforeValidator(_name)] = Field(None, validate_default=True, max_length=MAX_ID)
    data: Annotated[dict[str, Any], BeforeValidator(_data)] = Field(default_factory=dict)
    type: Annotated[Literal["event", "page", "screen"], BeforeValidator(_kind)] = Field("event", validate_default=True)
    id: Annotated[str | None, BeforeValidator(_message_id), ShortId] = None
    timestamp: Annotated[
        datetime | None,
        BeforeValidator(_unix_time),
        WithJsonSchema({"type": ["integer", "null"], "description": "unix seconds"}),
    ] = None


class AnonymousEvent(Event):
    """`POST /events`: an event of a device not yet known as a customer."""

    anonymous_id: str = Field(min_length=1, max_length=MAX_ID)

    @model_validator(mode="before")
    @classmethod
    def _device_first(cls, data: Any) -> Any:
        """Whose event it is comes before what it is."""
        anonymous_id = data.get("anonymous_id") if isinstance(data, dict) else None
        if not isinstance(anonymous_id, str) or not anonymous_id or len(anonymous_id) > MAX_ID:
            raise invalid(f"anonymous_id is required (a string of at most {MAX_ID} characters)")
        return data


class Identify(BaseModel):
    """`PUT /customers/{id}`: every key but `anonymous_id`, `id` and `_update` is a trait."""

    model_config = ConfigDict(extra="allow")

    anonymous_id: Annotated[str | None, BeforeValidator(_anonymous_id), ShortId] = None
    email: SkipValidation[str | None] = Field(None, description="checked as the person's email when stored")
    phone: SkipValidation[str | None] = Field(None, description="checked as the person's phone when stored")


def _reference_object(value: object) -> object:
    if not isinstance(value, dict):
        raise invalid("primary and secondary must be objects with id or email")
    return value


class Reference(BaseModel):
    """A customer a merge names, by id or email."""

    email: Annotated[str | None, BeforeValidator(lambda v: v if isinstance(v, str) else None)] = None
    id: Annotated[
        str | None,
        BeforeValidator(lambda v: str(v) if isinstance(v, (str, int)) else None),
        WithJsonSchema({"type": ["string", "integer", "null"]}),
    ] = None

    @model_validator(mode="after")
    def _named(self) -> Reference:
        if self.email is None and self.id is None:
            raise invalid("primary and secondary must each carry id or email")
        return self


class Merge(BaseModel):
    """`POST /merge_customers`: `secondary` is merged into `primary`."""

    primary: Annotated[Reference, BeforeValidator(_reference_object)]
    secondary: Annotated[Reference, BeforeValidator(_reference_object)]

    @model_validator(mode="before")
    @classmethod
    def _both(cls, data: Any) -> Any:
        if not (
            isinstance(data, dict) and isinstance(data.get("primary"), dict) and isinstance(data.get("secondary"), dict)
        ):
            raise invalid("primary and secondary must be objects with id or email")
        return data
