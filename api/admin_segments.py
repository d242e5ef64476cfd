"""Admin view of segments (Bearer `BREADCRUMB_ADMIN_TOKEN`): how many people are in each
`[segments.NAME]` of journeys.toml now, and a segment's members, a page at a time (docs/segments.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlmodel import Session

from api.admin import get_session
from api.deps import get_policy, require_admin
from journeys.policy import Policy
from store import segments

router = APIRouter(prefix="/admin/segments", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("", summary="Every segment of journeys.toml with how many people are in it now")
def list_segments(session: Session = Depends(get_session), policy: Policy = Depends(get_policy)) -> dict:
    counted = segments.counts(session, policy.segments)
    used_by = {
        name: [journey for journey, rules in policy.journeys.items() if name in (*rules.only_if, *rules.unless)]
        for name in policy.segments
    }
    return {
        "segments": [
            {
                "name": name,
                "people": counted[name],
                "time_based": segment.is_time_based(),
                "journeys": used_by[name],
                "definition": segment.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
            for name, segment in policy.segments.items()
        ]
    }


@router.get("/{name}/people", summary="A segment's members now, by person id; `next` is the cursor of the next page")
def segment_people(
    name: str,
    after: str | None = Query(None, max_length=36, description="the `next` of the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session),
    policy: Policy = Depends(get_policy),
) -> dict:
    if name not in policy.segments:
        raise HTTPException(404, f"no segment {name!r} in journeys.toml")
    page = segments.people_in(session, name, after, limit + 1)
    return {
        "segment": name,
        "people": page[:limit],
        "next": page[limit - 1]["person_id"] if len(page) > limit else None,
    }
