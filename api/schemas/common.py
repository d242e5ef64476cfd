"""What both front doors' models share: the error a client reads, id limits, and the OpenAPI body
of a route that reads its JSON itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

MAX_ID = 255
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


class InvalidMessage(ValueError):
    pass


def invalid(message: str) -> PydanticCustomError:
    """A validation error whose text is exactly what the client reads (no pydantic prefix)."""
    return PydanticCustomError("invalid_message", message)


def problem(exc: ValidationError) -> str:
    """The first problem of a failed validation, in the words the API has always used."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "invalid_message":
        return error["msg"]
    if error["type"] == "missing":
        return f"{where} is required"
    return f"{where}: {error['msg']}" if where else error["msg"]


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with its `$defs` references written in place: an operation's body schema in the
    OpenAPI document cannot point into a `$defs` of its own. The models are not recursive."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {
            key: _inlined(value, definitions) for key, value in schema.items() if key not in ("$defs", "discriminator")
        }
    if isinstance(schema, list):
        return [_inlined(value, definitions) for value in schema]
    return schema


def body_schema(model: Any) -> dict:
    """`openapi_extra` for a route that reads its JSON body itself (as JSON, or as text/plain the
    way analytics.js sends it) and validates it with `model`, whose schema documents it in /docs."""
    schema = TypeAdapter(model).json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inlined(schema, schema.get("$defs", {}))},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    }
