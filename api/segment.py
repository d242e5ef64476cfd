"""Segment HTTP Tracking API front door (`/v1/*`), analytics.js short paths included."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.body import MESSAGE_LIMIT, BadBody, dumps, payload_text, problem_in, read_json
from api.deps import (
    BROWSER,
    SERVER,
    UNKNOWN_KEY,
    get_settings,
    nudge_dispatcher,
    segment_trust,
    write_key_trust,
)
from api.ratelimit import segment_refusal
from api.schemas.common import EARLIEST, LATEST, InvalidMessage, body_schema, problem
from api.schemas.segment import CALLS, MESSAGE, SHORT_PATHS, Alias, Batch, Group, Page, Track
from journeys import taxonomy
from store.identity import InvalidIdentifier, normalise_email
from store.ingest import Incoming, Quarantined, identify_claim
from store.models import utcnow
from store.settings import Settings


class TooLarge(InvalidMessage):
    """A message over the 32 KB limit: sent alone, the request itself is over the size limit."""


def corrected_timestamp(timestamp: datetime | None, sent_at: datetime | None, received_at: datetime) -> datetime:
    """Correct the device clock: timestamp = receivedAt − (sentAt − timestamp)."""
    if timestamp is None:
        return received_at
    try:
        corrected = received_at - (sent_at - timestamp) if sent_at else timestamp
    except OverflowError:
        raise InvalidMessage("timestamp is out of range") from None
    if not EARLIEST <= corrected < LATEST:
        raise InvalidMessage(f"timestamp {corrected.isoformat()} is out of range (1970–2100)")
    return corrected.astimezone(UTC)


def event_source(context: dict, trust: str) -> str:
    """Through a browser key the source is always client (the body cannot vouch for itself). Through
    a server key, `context.source` when the sender says, otherwise server."""
    if trust != SERVER:
        return "client"
    explicit = context.get("source")
    return explicit if explicit in ("client", "server") else "server"


def identity_hash(identity: str, secret: str) -> str:
    """The `user_hash` a storefront shows for a logged-in shopper: HMAC-SHA256 (hex) of their userId,
    else their email (trimmed, lower-case), keyed with BREADCRUMB_IDENTITY_SECRET."""
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(message: Incoming, given: object, secret: str) -> str | None:
    """Check a browser identify's `user_hash`: trusted when it matches, else the reason it is refused."""
    identity = message.user_id
    if identity is None:
        try:
            identity = normalise_email(message.properties.get("email"))
        except InvalidIdentifier:
            return "user_hash refused: the identify has no userId or valid email to verify"
    if not secret:
        return "user_hash refused: this API has no BREADCRUMB_IDENTITY_SECRET to verify it with"
    if not isinstance(given, str) or not hmac.compare_digest(given.strip().lower(), identity_hash(identity, secret)):
        return f"user_hash refused: it does not match the {'userId' if message.user_id else 'email'}"
    message.trusted = True
    return None


def _take_user_hash(context: dict, traits: dict) -> tuple[dict, dict, object]:
    """`context.user_hash` or `traits.user_hash`, removed from what is stored (it vouches for a person)."""
    given = context.get("user_hash", traits.get("user_hash"))
    return (
        {k: v for k, v in context.items() if k != "user_hash"},
        {k: v for k, v in traits.items() if k != "user_hash"},
        given,
    )


def parse_message(
    item: object,
    call: str | None,
    received_at: datetime,
    batch_context: dict | None = None,
    batch_sent_at: object = None,
    *,
    trust: str = BROWSER,
    identity_secret: str = "",
    shared_problem: str | None = None,
) -> Incoming:
    """Validate one Segment message into the shared `Incoming` shape, or say exactly what is wrong.
    `trust` is the write key's; a browser identify with a valid `user_hash` becomes trusted, one with
    a wrong hash keeps the browser's limits and says why. `shared_problem` is what makes the batch's
    shared context or sentAt unstorable (checked once per request), which every item inherits."""
    if not isinstance(item, dict):
        raise InvalidMessage("message must be a JSON object")
    try:
        dumped: str | None = dumps(item)
    except orjson.JSONEncodeError:  # nested past orjson's limit: the walk below says how deep
        dumped = None
    unstorable = problem_in(item, dumped=dumped) or shared_problem
    if unstorable:  # too deep to serialise, or a NUL that PostgreSQL cannot store
        raise InvalidMessage(unstorable)
    assert dumped is not None, "a message orjson cannot serialise is nested too deep, which problem_in names"
    size = len(dumped.encode())
    if size > MESSAGE_LIMIT:
        raise TooLarge(f"message is {size} bytes; the limit is {MESSAGE_LIMIT // 1024} KB")
    kind = call or item.get("type")
    if kind not in CALLS:
        raise InvalidMessage(f"type must be one of {', '.join(CALLS)}; got {str(kind)[:40]!r}")
    if "sentAt" not in item and batch_sent_at is not None:
        item = {**item, "sentAt": batch_sent_at}
    try:
        parsed = MESSAGE.validate_python({**item, "type": kind})
    except ValidationError as exc:
        raise InvalidMessage(problem(exc)) from None
    context = {**(batch_context or {}), **parsed.context}
    properties = parsed.properties_or_traits
    if isinstance(parsed, Track):
        name = parsed.event
    elif isinstance(parsed, Page):  # and Screen
        name = taxonomy.PAGE_VIEWED if kind == "page" else taxonomy.SCREEN_VIEWED
        properties = {**properties, "name": parsed.name} if parsed.name else properties
    elif isinstance(parsed, Group):
        name = taxonomy.GROUP
        properties = {**properties, "groupId": parsed.groupId}
    else:
        name = taxonomy.IDENTIFY if kind == "identify" else taxonomy.ALIAS
    user_hash = None
    if kind == "identify":
        context, properties, user_hash = _take_user_hash(context, properties)
    message = Incoming(
        type=kind,
        original_name=name,
        message_id=parsed.messageId or "",
        anonymous_id=parsed.anonymousId,
        user_id=parsed.userId,
        previous_id=parsed.previousId if isinstance(parsed, Alias) else None,
        properties=properties,
        context=context,
        timestamp=corrected_timestamp(parsed.timestamp, parsed.sentAt, received_at),
        received_at=received_at,
        source=event_source(context, trust),
        trusted=trust == SERVER,
    )
    if user_hash is not None and not message.trusted:
        refused = verify_user_hash(message, user_hash, identity_secret)
        if refused:
            message.refused.append(refused)
    return message


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"success": False, "error": message, **extra}, status_code=status)


async def receive(request: Request, call: str | None, settings: Settings, trust: str | None) -> JSONResponse:
    if trust == UNKNOWN_KEY:
        return _error(401, "unknown write key (send it as HTTP Basic user, or as writeKey in the body)")
    try:
        body = await read_json(request)
    except BadBody as exc:
        return _error(exc.status, exc.message)
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    trust = trust or write_key_trust(body.get("writeKey"), settings)
    if trust is None:
        return _error(401, "unknown write key (send it as HTTP Basic user, or as writeKey in the body)")
    if limited := segment_refusal(request, body, trust):
        return limited

    received_at = utcnow()
    if call is None:
        try:
            envelope = Batch.model_validate(body)
        except ValidationError:
            return _error(400, "batch must be an array of messages")
        items: list[Any] = envelope.batch
        batch_context, batch_sent_at = envelope.context, envelope.sentAt
    else:
        items, batch_context, batch_sent_at = [body], None, None
    shared_problem = next(
        (
            f"{where}{problem}"
            for where, problem in (
                ("batch context: ", problem_in(batch_context)),
                ("batch sentAt: ", problem_in(batch_sent_at)),
            )
            if problem
        ),
        None,
    )

    strict = request.headers.get("x-strict-mode") == "1"
    valid: list[Incoming] = []
    rejected: list[Quarantined] = []
    errors: list[dict] = []
    too_large: TooLarge | None = None
    for index, item in enumerate(items):
        try:
            message = parse_message(
                item,
                call,
                received_at,
                batch_context,
                batch_sent_at,
                trust=trust,
                identity_secret=settings.identity_secret,
                shared_problem=shared_problem,
            )
            if strict:  # an email or phone we cannot use makes the message invalid, not just incomplete
                problems = identify_claim(message, settings.policy, settings.default_phone_region)[1]
                if problems:
                    raise InvalidMessage("; ".join(problems))
            valid.append(message)
        except InvalidMessage as exc:
            message_id = item.get("messageId") if isinstance(item, dict) else None
            where = f"batch[{index}]: " if call is None else ""
            rejected.append(Quarantined(f"{where}{exc}", payload_text(item), str(message_id) if message_id else None))
            errors.append({"index": index, "messageId": message_id, "error": str(exc)})
            too_large = exc if call is not None and isinstance(exc, TooLarge) else too_large
    if errors and strict:
        return _error(400, f"{len(errors)} invalid message(s); strict mode stored nothing", errors=errors)

    result = await request.app.state.ingest_queue.ingest(
        settings, valid, api="segment", endpoint=request.url.path, rejected=rejected
    )
    if too_large:  # quarantined (it is valid JSON the shop may want to see), and refused like any oversized request
        return _error(400, str(too_large))
    if result.signals:
        nudge_dispatcher(request)
    return JSONResponse(
        {"success": True},
        headers={
            "X-Breadcrumb-Stored": str(len(result.stored)),
            "X-Breadcrumb-Duplicates": str(result.duplicates),
            # Quarantine rows written: invalid messages, and stored ones with a part refused (an invalid
            # email or phone; through a browser key a consent change, a new identifier of a known
            # person, a merge; a forged user_hash).
            "X-Breadcrumb-Rejected": str(len(rejected) + len(result.warnings)),
        },
    )


router = APIRouter(prefix="/v1", tags=["segment"])


def _route(call: str | None):
    async def endpoint(
        request: Request,
        settings: Settings = Depends(get_settings),
        trust: str | None = Depends(segment_trust),
    ) -> JSONResponse:
        return await receive(request, call, settings, trust)

    endpoint.__name__ = f"segment_{call or 'batch'}"
    return endpoint


for _call, _short in SHORT_PATHS.items():
    for _path in (f"/{_call}", f"/{_short}"):
        router.add_api_route(
            _path,
            _route(_call),
            methods=["POST"],
            openapi_extra=body_schema(CALLS[_call]),
            operation_id=f"segment_{_path.strip('/')}",
            summary=f"Segment {_call}",
        )
for _path in ("/batch", "/b", "/import"):
    router.add_api_route(
        _path,
        _route(None),
        methods=["POST"],
        openapi_extra=body_schema(Batch),
        operation_id=f"segment_{_path.strip('/')}",
        summary="Segment batch",
    )
