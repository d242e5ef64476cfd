"""The front doors' bodies as pydantic models: the Segment messages (a union discriminated by `type`)
and the Customer.io Track API bodies. They validate each message and generate the OpenAPI schema.

The routes still read the body themselves (analytics.js posts JSON as text/plain, the libraries may
gzip it, and a batch must keep its good messages when one is bad), then validate message by message
with these models. A refusal is one sentence that names the field, as the API has always said it:
`errors_of` turns a ValidationError into that sentence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema

MAX_ID = 255
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)  # timestamps we believe
CALLS = {"identify": "i", "track": "t", "page": "p", "screen": "s", "alias": "a", "group": "g"}
CIO_EVENT_TYPES = ("event", "page", "screen")


class InvalidMessage(ValueError):
    """One message the API refuses; the text names the problem."""


def required(*fields: str) -> ConfigDict:
    """Fields the schema lists as required while their own validator (run on a missing value too)
    says what is missing, in the API's words rather than pydantic's "Field required"."""
    return ConfigDict(extra="allow", validate_default=True, json_schema_extra={"required": list(fields)})


# --- field types -------------------------------------------------------------------------------------


def _identifier(value: object, key: str, required: bool) -> str | None:
    """Segment ids may be strings or numbers; stored as text of at most MAX_ID characters."""
    if value is None or value == "":
        if required:
            raise ValueError(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{key} must be a string")
    text = str(value)
    if len(text) > MAX_ID:
        raise ValueError(f"{key} is {len(text)} characters long; the limit is {MAX_ID}")
    return text


def identifier(key: str, required: bool = False) -> Any:
    schema = {"type": ["string", "number"] if required else ["string", "number", "null"], "maxLength": MAX_ID}
    return Annotated[str | None, BeforeValidator(partial(_identifier, key=key, required=required)),
                     WithJsonSchema(schema)]


def _object(value: object, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


def json_object(key: str) -> Any:
    return Annotated[dict[str, Any], BeforeValidator(partial(_object, key=key)),
                     WithJsonSchema({"type": ["object", "null"], "additionalProperties": True})]


def parse_time(value: object, key: str) -> datetime | None:
    """An ISO-8601 instant; one without a zone is UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"{key} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidMessage(f"{key} {value[:40]!r} is not an ISO-8601 date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso_time(key: str) -> Any:
    def check(value: object) -> datetime | None:
        try:
            return parse_time(value, key)
        except InvalidMessage as exc:
            raise ValueError(str(exc)) from None

    return Annotated[datetime | None, BeforeValidator(check),
                     WithJsonSchema({"type": ["string", "null"], "format": "date-time", "description": "ISO-8601"})]


def _event_name(value: object, key: str, missing: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(missing)
    if len(value) > MAX_ID:
        raise ValueError(f"{key} is {len(value)} characters long; the limit is {MAX_ID}")
    return value.strip()


def event_name(key: str, missing: str) -> Any:
    return Annotated[str, BeforeValidator(partial(_event_name, key=key, missing=missing)),
                     WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID})]


# --- Segment -----------------------------------------------------------------------------------------


class SegmentMessage(BaseModel):
    """What every Segment call carries. Unknown fields (`integrations`, `channel`, …) are accepted."""

    model_config = ConfigDict(extra="allow", validate_default=True)
    PAYLOAD: ClassVar[str] = "properties"  # the field that holds what the message says: properties or traits

    messageId: identifier("messageId") = None
    context: json_object("context") = {}
    userId: identifier("userId") = None
    anonymousId: identifier("anonymousId") = None
    timestamp: iso_time("timestamp") = None
    originalTimestamp: iso_time("originalTimestamp") = None
    sentAt: iso_time("sentAt") = None

    def check_identity(self) -> None:
        if not (self.userId or self.anonymousId):
            raise InvalidMessage("userId or anonymousId is required")

    @property
    def payload(self) -> dict:
        return getattr(self, self.PAYLOAD)


class TrackMessage(SegmentMessage):
    model_config = required("event")
    type: Literal["track"] = "track"
    event: event_name("event name", "event is required for track calls") = None  # type: ignore[assignment]
    properties: json_object("properties") = {}


def _page_name(value: object) -> str | None:
    """A page's name is kept when it is a non-empty string (cut to MAX_ID); anything else is ignored."""
    return value[:MAX_ID] if isinstance(value, str) and value else None


class PageMessage(SegmentMessage):
    type: Literal["page"] = "page"
    name: Annotated[str | None, BeforeValidator(_page_name)] = None
    properties: json_object("properties") = {}


class ScreenMessage(PageMessage):
    type: Literal["screen"] = "screen"  # type: ignore[assignment]


class IdentifyMessage(SegmentMessage):
    type: Literal["identify"] = "identify"
    PAYLOAD: ClassVar[str] = "traits"
    traits: json_object("traits") = {}


class GroupMessage(SegmentMessage):
    type: Literal["group"] = "group"
    model_config = required("groupId")
    PAYLOAD: ClassVar[str] = "traits"
    groupId: identifier("groupId", required=True) = None
    traits: json_object("traits") = {}


class AliasMessage(SegmentMessage):
    model_config = required("userId", "previousId")
    type: Literal["alias"] = "alias"
    userId: identifier("userId", required=True) = None
    previousId: identifier("previousId", required=True) = None
    properties: json_object("properties") = {}

    def check_identity(self) -> None:
        """An alias names its two ids; no anonymousId is needed."""


SEGMENT_MODELS: dict[str, type[SegmentMessage]] = {
    "track": TrackMessage, "page": PageMessage, "screen": ScreenMessage, "identify": IdentifyMessage,
    "group": GroupMessage, "alias": AliasMessage,
}
AnySegmentMessage = Annotated[TrackMessage | PageMessage | ScreenMessage | IdentifyMessage | GroupMessage
                              | AliasMessage, Field(discriminator="type")]


class SegmentBatch(BaseModel):
    """`/v1/batch`: the messages, with a context and a sentAt that apply to all of them."""

    model_config = ConfigDict(extra="allow")

    batch: list[AnySegmentMessage]
    context: json_object("context") = {}
    sentAt: iso_time("sentAt") = None


def segment_message(item: dict, call: str | None) -> SegmentMessage:
    """Validate one Segment message; the route's call (`/v1/track`) wins over the body's `type`."""
    kind = call or item.get("type")
    if kind not in CALLS:
        raise InvalidMessage(f"type must be one of {', '.join(CALLS)}; got {str(kind)[:40]!r}")
    try:
        message = SEGMENT_MODELS[kind].model_validate({**item, "type": kind})
    except ValidationError as exc:
        raise InvalidMessage(errors_of(exc)) from None
    message.check_identity()
    return message


# --- Customer.io Track API ---------------------------------------------------------------------------


def _unix_time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("timestamp must be a unix timestamp in seconds")
    return value


UnixTime = Annotated[float | None, BeforeValidator(_unix_time),
                     WithJsonSchema({"type": ["integer", "null"], "description": "unix seconds"})]


def _bounded_text(value: object, message: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID or (required and not value):
        raise ValueError(message)
    return value


def bounded_text(message: str, required: bool = False) -> Any:
    schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID} if required else {
        "type": ["string", "null"], "maxLength": MAX_ID}
    return Annotated[str | None, BeforeValidator(partial(_bounded_text, message=message, required=required)),
                     WithJsonSchema(schema)]


def _cio_type(value: object) -> str:
    if value in (None, ""):
        return "event"
    if value not in CIO_EVENT_TYPES:
        raise ValueError("type must be event, page or screen")
    return value  # type: ignore[return-value]


class CioEvent(BaseModel):
    """`POST /api/v1/customers/{id}/events`: a named event with its data."""

    model_config = required("name")

    name: event_name("name", "name is required") = None  # type: ignore[assignment]
    data: json_object("data") = {}
    type: Annotated[Literal["event", "page", "screen"], BeforeValidator(_cio_type)] = "event"
    id: bounded_text(f"id must be a string of at most {MAX_ID} characters") = None
    timestamp: UnixTime = None


class CioAnonymousEvent(CioEvent):
    """`POST /api/v1/events`: an event of a device we do not know by name yet."""

    model_config = required("name", "anonymous_id")

    anonymous_id: bounded_text(f"anonymous_id is required (a string of at most {MAX_ID} characters)",
                               required=True) = None


class CioCustomer(BaseModel):
    """`PUT /api/v1/customers/{id}`: attributes of a customer; every other key is a trait."""

    model_config = ConfigDict(extra="allow")

    email: Annotated[Any, WithJsonSchema({"type": ["string", "null"]})] = None  # checked as identifiers
    phone: Annotated[Any, WithJsonSchema({"type": ["string", "null"]})] = None  # are, with their warnings
    anonymous_id: bounded_text(f"anonymous_id must be a string of at most {MAX_ID} characters") = None


def _reference(value: object) -> dict:
    if not isinstance(value, dict):
        raise ValueError("primary and secondary must be objects with id or email")
    email, id_ = value.get("email"), value.get("id")
    if isinstance(email, str):
        return {"email": email}
    if isinstance(id_, (str, int)) and not isinstance(id_, bool):
        return {"id": id_}
    raise ValueError("primary and secondary must each carry id or email")


class CioReference(BaseModel):
    """A customer named by email (preferred when both are given) or by id."""

    id: str | int | None = None
    email: str | None = None


Reference = Annotated[CioReference, BeforeValidator(_reference)]


class CioMerge(BaseModel):
    """`POST /api/v1/merge_customers`: the secondary customer is merged into the primary."""

    model_config = required("primary", "secondary")

    primary: Reference = None  # type: ignore[assignment]  # a missing one is refused by _reference
    secondary: Reference = None  # type: ignore[assignment]


def cio_body(model: type[BaseModel], body: dict) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidMessage(errors_of(exc)) from None


# --- errors and schema -------------------------------------------------------------------------------


def errors_of(exc: ValidationError) -> str:
    """The first problem as one sentence: our own text where a validator raised it, otherwise
    pydantic's message prefixed with where it is."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


COMPONENTS: dict[str, dict] = {}
REF = "#/components/schemas/{model}"


def body_schema(model: Any) -> dict:
    """`openapi_extra` for a route that reads its JSON body itself (as JSON, or as text/plain the way
    analytics.js sends it): the model's schema, its sub-models gathered into `COMPONENTS` for the
    app's OpenAPI document."""
    schema = TypeAdapter(model).json_schema(ref_template=REF, mode="validation")
    COMPONENTS.update(schema.pop("$defs", {}))
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "text/plain": {"schema": {"type": "string"}},
    }}}
