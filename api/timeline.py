"""A person's timeline (admin): `GET /admin/people/{id}/timeline` (JSON, Bearer token) and
`GET /admin/people/{id}/page` (the HTML page support staff read and share: Bearer token or a signed
link from `GET /admin/people/{id}/timeline/link`). `/admin/people/{id}` itself stays the JSON profile.
The rows come from store/timeline.py; the page, like the report, runs no script and fetches nothing."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from api import report_link
from api.admin import get_session
from api.deps import get_policy, get_settings, require_admin
from api.pages import render_page
from api.reports import PAGE_HEADERS, page_access
from journeys.policy import Policy
from store.models import Identifier, Person, as_utc, iso
from store.settings import Settings
from store.timeline import DEFAULT_LIMIT, MAX_LIMIT, Timeline, Window, timeline

router = APIRouter(prefix="/admin/people", tags=["admin"])
PAGE_PATH = "/admin/people/{person_id}/page"

BEFORE = Query(None, description="Only items before this moment (ISO 8601; the previous answer's `older`)")
LIMIT = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="The newest this many items before `before`")


def _timeline(session: Session, person_id: str, before: datetime | None, limit: int, policy: Policy) -> Timeline:
    if session.get(Person, person_id) is None:
        raise HTTPException(404, "no such person")
    window = Window(
        before=as_utc(before) if before else None, limit=limit, attribution_window=policy.attribution_window
    )
    return timeline(session, person_id, window)


@router.get(
    "/{person_id}/timeline",
    dependencies=[Depends(require_admin)],
    summary="A person's timeline: events from every device, identity decisions, segments, routing, "
    "guardrails, messages and purchases with their attribution, in time order",
)
def timeline_json(
    person_id: str,
    before: datetime | None = BEFORE,
    limit: int = LIMIT,
    session: Session = Depends(get_session),
    policy: Policy = Depends(get_policy),
) -> dict:
    return _timeline(session, person_id, before, limit, policy).as_json()


@router.get(
    "/{person_id}/timeline/link",
    dependencies=[Depends(require_admin)],
    summary="A signed, short-lived link to the person's timeline page, to share without the token",
)
def timeline_link(
    person_id: str,
    request: Request,
    ttl: int = Query(report_link.DEFAULT_TTL, ge=1, le=report_link.MAX_TTL, description="Seconds it stays valid"),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
) -> dict:
    if session.get(Person, person_id) is None:
        raise HTTPException(404, "no such person")
    return {"url": _page_link(settings, request, person_id, ttl=ttl)}


def _page_link(
    settings: Settings, request: Request, person_id: str, ttl: int, before: str | None = None, limit: int | None = None
) -> str:
    base = settings.public_base_url or str(request.base_url)
    path = PAGE_PATH.format(person_id=person_id)
    return report_link.sign(settings.admin_token, base, ttl=ttl, path=path, before=before, limit=limit)


@router.get(
    "/{person_id}/page",
    dependencies=[Depends(page_access)],
    response_class=HTMLResponse,
    summary="The person's timeline page (HTML, works offline)",
)
def timeline_page(
    person_id: str,
    request: Request,
    before: datetime | None = BEFORE,
    limit: int = LIMIT,
    session: Session = Depends(get_session),
    policy: Policy = Depends(get_policy),
    settings: Settings = Depends(get_settings),
) -> HTMLResponse:
    found = _timeline(session, person_id, before, limit, policy)
    older = (
        _page_link(settings, request, person_id, ttl=report_link.DEFAULT_TTL, before=iso(found.older), limit=limit)
        if found.older
        else None
    )
    html = render_page(
        "person_timeline.html.j2",
        t=found,
        who=_identifiers(session, person_id),
        devices=device_labels(found),
        older=older,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _identifiers(session: Session, person_id: str) -> dict[str, list[str]]:
    known: dict[str, list[str]] = {}
    for kind, value in session.exec(
        select(col(Identifier.kind), col(Identifier.value))
        .where(col(Identifier.person_id) == person_id)
        .order_by(col(Identifier.id))
    ).all():
        known.setdefault(kind, []).append(value)
    return known


def device_labels(found: Timeline) -> dict[str, str]:
    """`device 1`, `device 2`… in the order the page first shows each anonymous id: easier to follow
    than the ids, which stay in the line's tooltip."""
    labels: dict[str, str] = {}
    for item in found.items:
        if item.device and item.device not in labels:
            labels[item.device] = f"device {len(labels) + 1}"
    return labels
