"""Admin read side (Bearer `BREADCRUMB_ADMIN_TOKEN`): people, messages, quarantine, identity conflicts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import get_engine, get_policy, get_settings, require_admin
from api.body import BadBody, problem_in, read_json
from store import catalog, queries
from store.export import person_export
from store.db import reading, transaction
from store.identity import find_person
from journeys.policy import Policy
from store.settings import Settings

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
MAX_OFFSET = 2**31 - 1  # past a 64-bit integer the database driver itself fails


def get_session(engine: Engine = Depends(get_engine)):
    """A read-only session: admin reads never wait behind ingestion."""
    with Session(reading(engine)) as session:
        yield session


@router.get("/people", summary="Find a person by email, user id, phone or anonymous id")
def find_people(
    email: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    phone: str | None = None,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
) -> dict:
    if not (email or user_id or anonymous_id or phone):
        raise HTTPException(400, "give one of email, user_id, phone or anonymous_id")
    person_id = find_person(
        session,
        email=email,
        user_id=user_id,
        anonymous_id=anonymous_id,
        phone=phone,
        phone_region=settings.default_phone_region,
    )
    return _profile_or_404(session, person_id)


@router.get("/people/{person_id}", summary="A person's merged profile, events, journeys and messages")
def get_person(person_id: str, session: Session = Depends(get_session)) -> dict:
    return _profile_or_404(session, person_id)


@router.get("/people/{person_id}/export", summary="Everything we hold on a person (data-subject request)")
def export_person(person_id: str, session: Session = Depends(get_session)) -> dict:
    found = person_export(session, person_id)
    if found is None:
        raise HTTPException(404, "no such person")
    return found


def _profile_or_404(session: Session, person_id: str | None) -> dict:
    found = queries.profile(session, person_id) if person_id else None
    if found is None:
        raise HTTPException(404, "no such person")
    return found


@router.get("/messages", summary="Messages journeys decided to send")
def list_messages(
    person_id: str | None = None, limit: int = Query(500, ge=1, le=5000), session: Session = Depends(get_session)
) -> list[dict]:
    return queries.messages_of(session, person_id, limit)


@router.get("/rejected", summary="Quarantined input with the reason it was refused")
def list_rejected(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    session: Session = Depends(get_session),
) -> list[dict]:
    return queries.rejected(session, limit, offset)


@router.get("/conflicts", summary="Identifies that named someone else's identity: shared devices, two known people")
def list_conflicts(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    person_id: str | None = Query(None, max_length=36),
    session: Session = Depends(get_session),
) -> list[dict]:
    return queries.conflicts(session, limit, offset, person_id)


@router.get("/messages/{message_id}", summary="One message with its rendered text, HTML and unsubscribe link")
def get_message(message_id: str, session: Session = Depends(get_session)) -> dict:
    found = queries.message_detail(session, message_id)
    if found is None:
        raise HTTPException(404, "no such message")
    return found


CATALOG_REQUEST_LIMIT = 10 * 1024 * 1024


CATALOG_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["products"],
                    "properties": {"products": {"type": "array", "items": catalog.CatalogItem.model_json_schema()}},
                }
            }
        },
    }
}


@router.put(
    "/catalog",
    openapi_extra=CATALOG_BODY,
    summary="Create or update products (bulk); fields an item leaves out keep their value",
)
async def put_catalog(
    request: Request, engine: Engine = Depends(get_engine), policy: Policy = Depends(get_policy)
) -> JSONResponse:
    """Body: `{"products": [{"sku", "variant"?, "name"?, "category"?, "price"?, "currency"?,
    "image_url"?, "url"?, "in_stock"?, "bestseller_rank"?}, …]}` (or a bare array). All or
    nothing: any invalid item makes the request 400 with one line per problem, naming the item and
    the field."""
    try:
        body = await read_json(request, CATALOG_REQUEST_LIMIT)
        problem = problem_in(body)
        if problem:
            raise BadBody(problem)
        items = catalog.validate_items(body)
    except BadBody as exc:
        return JSONResponse({"detail": [exc.message]}, status_code=exc.status)
    except catalog.CatalogInvalid as exc:
        return JSONResponse({"detail": exc.problems}, status_code=400)

    def write() -> dict:
        with transaction(engine) as session:
            return catalog.upsert_admin(session, items, policy)

    return JSONResponse(await run_in_threadpool(write))


@router.get("/catalog", summary="Products in the catalog (filter by sku, category, stock)")
def get_catalog(
    sku: str | None = None,
    category: str | None = None,
    in_stock: bool | None = None,
    limit: int = Query(500, ge=1, le=5000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    session: Session = Depends(get_session),
) -> list[dict]:
    return catalog.list_products(session, sku=sku, category=category, in_stock=in_stock, limit=limit, offset=offset)
