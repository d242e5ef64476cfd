"""Admin read side (Bearer `BREADCRUMB_ADMIN_TOKEN`): people, messages, quarantine."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import get_engine, get_settings, require_admin
from store import queries
from store.identity import find_person
from store.settings import Settings

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def get_session(engine: Engine = Depends(get_engine)):
    with Session(engine) as session:
        yield session


@router.get("/people", summary="Find a person by email, user id, phone or anonymous id")
def find_people(email: str | None = None, user_id: str | None = None, anonymous_id: str | None = None,
                phone: str | None = None, session: Session = Depends(get_session),
                settings: Settings = Depends(get_settings)) -> dict:
    if not (email or user_id or anonymous_id or phone):
        raise HTTPException(400, "give one of email, user_id, phone or anonymous_id")
    person_id = find_person(session, email=email, user_id=user_id, anonymous_id=anonymous_id, phone=phone,
                            phone_region=settings.default_phone_region)
    return _profile_or_404(session, person_id)


@router.get("/people/{person_id}", summary="A person's merged profile, events, journeys and messages")
def get_person(person_id: str, session: Session = Depends(get_session)) -> dict:
    return _profile_or_404(session, person_id)


def _profile_or_404(session: Session, person_id: str | None) -> dict:
    found = queries.profile(session, person_id) if person_id else None
    if found is None:
        raise HTTPException(404, "no such person")
    return found


@router.get("/messages", summary="Messages journeys decided to send")
def list_messages(person_id: str | None = None, limit: int = Query(500, ge=1, le=5000),
                  session: Session = Depends(get_session)) -> list[dict]:
    return queries.messages_of(session, person_id, limit)


@router.get("/rejected", summary="Quarantined input with the reason it was refused")
def list_rejected(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                  session: Session = Depends(get_session)) -> list[dict]:
    return queries.rejected(session, limit, offset)
