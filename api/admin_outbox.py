"""Admin view of the outbox (Bearer `BREADCRUMB_ADMIN_TOKEN`): its backlog, the dead-lettered rows
with their last error, and the retry of one (docs/operations.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from api.deps import get_engine, require_admin
from store import outbox

router = APIRouter(prefix="/admin/outbox", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("", summary="Outbox backlog and dead-lettered rows with their error")
async def list_outbox(limit: int = Query(100, ge=1, le=1000), engine: Engine = Depends(get_engine)) -> dict:
    pending, lag = await run_in_threadpool(outbox.backlog, engine)
    dead = await run_in_threadpool(outbox.dead_letters, engine, limit)
    return {
        "pending": pending,
        "lag_seconds": round(lag, 3),
        "dead_letters": [
            {
                "id": row.id,
                "kind": row.kind,
                "person_id": row.person_id,
                "attempts": row.attempts,
                "error": row.last_error,
                "created_at": row.created_at,
                "dead_at": row.dead_at,
            }
            for row in dead
        ],
    }


@router.post("/{row_id}/retry", summary="Send a dead-lettered row again (attempts start from zero)")
async def retry_row(row_id: int, engine: Engine = Depends(get_engine)) -> dict:
    if not await run_in_threadpool(outbox.retry, engine, row_id):
        raise HTTPException(404, "no dead-lettered outbox row with this id")
    return {"id": row_id, "status": "queued"}
