"""Customer.io Track API v1 front door (`/api/v1/*`), mapped onto the same ingest core as Segment."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from pydantic import BaseModel, ValidationError
from starlette.routing import Match

from api.body import BadBody, payload_text, problem_in, read_json
from api.deps import get_engine, get_settings, in_ingest_pool, nudge_dispatcher, require_cio
from api.schemas.common import MAX_ID, InvalidMessage, body_schema, problem
from api.schemas.customerio import AnonymousEvent, Event, Identify, Merge, Reference
from store.db import transaction
from store.identity import (
    InvalidIdentifier,
    attach_identifier,
    delete_person,
    lock_person,
    lock_up_front,
    merge_people,
    new_person,
    normalise_email,
    owner,
    retry_moved_locks,
)
from store.ingest import Incoming, Quarantined, quarantine
from store.models import Person, utcnow
from store.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["customer.io"], dependencies=[Depends(require_cio)])
CustomerId = Path(min_length=1, max_length=MAX_ID, description="The customer's id, or their email address")


def cio_error(status: int, *errors: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"meta": {"errors": list(errors)}}, status_code=status, headers=headers)


def _identifier_kind(customer_id: str) -> tuple[str, str]:
    """Customer.io lets the path identifier be an id or an email address."""
    if "@" in customer_id:
        try:
            return "email", normalise_email(customer_id)
        except InvalidIdentifier:
            pass
    return "user_id", customer_id


async def _body(request: Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadBody("request body must be a JSON object")
    return body


Body = TypeVar("Body", bound=BaseModel)


def _validated(model: type[Body], body: dict) -> Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidMessage(problem(exc)) from None


def _event(event: Event, received_at: datetime, **ids) -> Incoming:
    call = "track" if event.type == "event" else event.type
    properties = event.data if call == "track" else {**event.data, "name": event.name}
    original = event.name.strip() if call == "track" else ("Page Viewed" if call == "page" else "Screen Viewed")
    return Incoming(
        type=call,
        original_name=original,
        message_id=event.id or "",
        properties=properties,
        timestamp=event.timestamp or received_at,
        received_at=received_at,
        source="server",
        trusted=True,
        **ids,
    )


async def _ingest(request: Request, settings: Settings, engine: Engine, build) -> JSONResponse:
    """Parse with `build(body, received_at)`; store it, or quarantine it and answer 400 naming the problem."""
    try:
        body = await _body(request)
    except BadBody as exc:
        return cio_error(exc.status, exc.message)
    received_at = utcnow()
    try:
        problem = problem_in(body)
        if problem:
            raise InvalidMessage(problem)
        message = build(body, received_at)
    except InvalidMessage as exc:
        await in_ingest_pool(request, _quarantine, engine, request.url.path, str(exc), body)
        return cio_error(400, str(exc))
    result = await request.app.state.ingest_queue.ingest(
        settings, [message], api="customerio", endpoint=request.url.path, rejected=[]
    )
    if result.signals:
        nudge_dispatcher(request)
    return JSONResponse({})


def _quarantine(engine: Engine, endpoint: str, reason: str, body: object) -> None:
    with transaction(engine) as session:
        quarantine(session, "customerio", endpoint, [Quarantined(reason, payload_text(body))])


@router.put("/customers/{customer_id}", openapi_extra=body_schema(Identify), summary="Identify a customer")
async def identify_customer(
    request: Request,
    customer_id: str = CustomerId,
    settings: Settings = Depends(get_settings),
    engine: Engine = Depends(get_engine),
) -> JSONResponse:
    kind, value = _identifier_kind(customer_id)

    def build(body: dict, received_at: datetime) -> Incoming:
        traits = {k: v for k, v in body.items() if k not in ("anonymous_id", "_update", "id")}
        if kind == "email":
            traits.setdefault("email", value)
        anonymous_id = _validated(Identify, body).anonymous_id
        return Incoming(
            type="identify",
            original_name="Identify",
            properties=traits,
            timestamp=received_at,
            received_at=received_at,
            source="server",
            trusted=True,
            anonymous_id=anonymous_id,
            email=value if kind == "email" else None,
            user_id=value if kind == "user_id" else None,
        )

    return await _ingest(request, settings, engine, build)


@router.post("/customers/{customer_id}/events", openapi_extra=body_schema(Event), summary="Track a customer event")
async def customer_event(
    request: Request,
    customer_id: str = CustomerId,
    settings: Settings = Depends(get_settings),
    engine: Engine = Depends(get_engine),
) -> JSONResponse:
    kind, value = _identifier_kind(customer_id)

    def build(body: dict, received_at: datetime) -> Incoming:
        return _event(_validated(Event, body), received_at, **{kind: value})

    return await _ingest(request, settings, engine, build)


@router.post("/events", openapi_extra=body_schema(AnonymousEvent), summary="Track an anonymous event")
async def anonymous_event(
    request: Request, settings: Settings = Depends(get_settings), engine: Engine = Depends(get_engine)
) -> JSONResponse:
    def build(body: dict, received_at: datetime) -> Incoming:
        event = _validated(AnonymousEvent, body)
        return _event(event, received_at, anonymous_id=event.anonymous_id)

    return await _ingest(request, settings, engine, build)


def _reference(reference: Reference) -> tuple[str, str]:
    """The identifier a merge_customers `primary` / `secondary` names."""
    return (
        ("email", normalise_email(reference.email))
        if reference.email is not None
        else _identifier_kind(str(reference.id))
    )


@router.post("/merge_customers", openapi_extra=body_schema(Merge), summary="Merge two customers")
async def merge_customers(request: Request, engine: Engine = Depends(get_engine)) -> JSONResponse:
    try:
        body = await _body(request)
    except BadBody as exc:
        return cio_error(exc.status, exc.message)
    unstorable = problem_in(body)
    if unstorable:
        return cio_error(400, unstorable)
    try:
        merge_body = _validated(Merge, body)
        primary_key, secondary_key = _reference(merge_body.primary), _reference(merge_body.secondary)
    except (InvalidMessage, InvalidIdentifier) as exc:
        return cio_error(400, str(exc))

    def merge() -> None:
        with transaction(engine) as session:
            lock_up_front(session, [primary_key, secondary_key])
            primary, secondary = owner(session, *primary_key), owner(session, *secondary_key)
            if primary and secondary:
                merge_people(session, primary, secondary)
            elif secondary:
                # The primary is new to us: the secondary's profile takes on the primary's identifier.
                attach_identifier(session, secondary, *primary_key)

    await in_ingest_pool(request, retry_moved_locks, merge)
    nudge_dispatcher(request)
    return JSONResponse({})


@router.delete("/customers/{customer_id}", summary="Delete a customer and all their data")
async def delete_customer(
    request: Request, customer_id: str = CustomerId, engine: Engine = Depends(get_engine)
) -> JSONResponse:
    key = _identifier_kind(customer_id)

    def remove() -> None:
        with transaction(engine) as session:
            lock_up_front(session, [key])
            person_id = owner(session, *key)
            if person_id:
                delete_person(session, person_id)

    await in_ingest_pool(request, retry_moved_locks, remove)
    nudge_dispatcher(request)
    return JSONResponse({})


def _set_suppressed(engine: Engine, customer_id: str, suppressed: bool) -> None:
    kind, value = _identifier_kind(customer_id)
    with transaction(engine) as session:
        lock_up_front(session, [(kind, value)])
        person_id = owner(session, kind, value)
        if person_id is None:
            if not suppressed:
                return
            # Suppressing someone we have not met yet still has to hold when they arrive.
            person_id = new_person(session, utcnow()).id
            attach_identifier(session, person_id, kind, value)
        lock_person(session, person_id)
        person = session.get(Person, person_id)
        assert person is not None, "locked above, so it exists"
        person.suppressed = suppressed
        person.updated_at = utcnow()


@router.post("/customers/{customer_id}/suppress", summary="Suppress a customer: they get no messages")
async def suppress(
    request: Request, customer_id: str = CustomerId, engine: Engine = Depends(get_engine)
) -> JSONResponse:
    await in_ingest_pool(request, retry_moved_locks, lambda: _set_suppressed(engine, customer_id, True))
    return JSONResponse({})


@router.post("/customers/{customer_id}/unsuppress", summary="Lift a customer's suppression")
async def unsuppress(
    request: Request, customer_id: str = CustomerId, engine: Engine = Depends(get_engine)
) -> JSONResponse:
    await in_ingest_pool(request, retry_moved_locks, lambda: _set_suppressed(engine, customer_id, False))
    return JSONResponse({})


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown_endpoint(request: Request) -> JSONResponse:
    """Last route: a path or method the Track API does not have, answered in Customer.io's error
    shape (clients read `meta.errors`) instead of FastAPI's `{"detail": …}`."""
    allowed = sorted(
        {
            method
            for route in router.routes
            if isinstance(route, APIRoute)
            and route.endpoint is not unknown_endpoint
            and route.matches(request.scope)[0] == Match.PARTIAL
            for method in route.methods or ()
        }
    )
    if allowed:
        return cio_error(
            405,
            f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    return cio_error(404, f"{request.url.path} is not a Customer.io Track API endpoint")
