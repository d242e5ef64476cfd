"""`POST /admin/backtest` and `GET /admin/backtest/{id}`: the `breadcrumb backtest` numbers over HTTP.

The API only starts the work: a backtest is a Temporal workflow (`simulation/backtest_job.py`) on the
backtest task queue, served by `breadcrumb worker --queue backtest` (or by a journeys worker with
BREADCRUMB_WORKER_SERVES_BACKTESTS, as under `breadcrumb dev`). While it runs, its progress is the
workflow's query; its outcome is a `backtests` row, so any API process answers for any backtest.
While Temporal is unreachable a backtest is `queued` (the row keeps its job) and the next POST or
GET starts it, so the API answers without Temporal as ingest does. One backtest runs at a time
(another POST meanwhile is 409).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import get_engine, get_settings, require_admin
from dispatch.temporal import connect
from journeys.policy import Policy, PolicyError, load_policy, parse_duration, parse_policy
from simulation.backtest_job import Backtest as BacktestWorkflow
from simulation.backtest_job import BacktestJob, BacktestProgress, job_id
from store.db import reading, transaction
from store.models import Backtest, as_utc, iso, utcnow
from store.settings import Settings

log = logging.getLogger("breadcrumb.backtest")
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
QUERY_TIMEOUT = timedelta(seconds=5)  # no worker on the backtest queue: the answer says running, nothing done


class BacktestRequest(BaseModel):
    since: str = Field("30d", description="Simulate everyone identified in this window before now (30d, 12h…)")
    config: str | dict | None = Field(
        None,
        description="The new policy: a TOML path on the server, or the "
        "policy itself as JSON (the journeys.toml keys); default: the current one",
    )
    against: str | dict | None = Field(
        None, description="The policy to compare with (same forms); default: the current one"
    )
    limit: int | None = Field(None, ge=1, le=1_000_000, description="At most this many people (oldest identify first)")


def _policy(given: str | dict | None, settings: Settings, field_name: str) -> tuple[Policy, str]:
    try:
        if given is None:
            return settings.policy, str(settings.journeys).rsplit("/", 1)[-1]
        if isinstance(given, dict):
            return parse_policy(given, field_name), f"{field_name} (inline)"
        return load_policy(given), given.rsplit("/", 1)[-1]
    except PolicyError as error:
        raise HTTPException(400, str(error)) from None


async def _temporal(request: Request, settings: Settings) -> Client | None:
    """The API process's Temporal client, connected on first need; None while Temporal is unreachable."""
    state = request.app.state
    async with state.temporal_lock:
        if state.temporal is None:
            try:
                state.temporal = await connect(settings)
            except RuntimeError as error:
                log.warning("backtests wait: Temporal at %s is unreachable: %s", settings.temporal_address, error)
                return None
    return state.temporal


async def _launch(request: Request, settings: Settings, engine: Engine, row: Backtest) -> Backtest:
    """Start a queued backtest's workflow on the backtest task queue; the row says `running` once
    Temporal has it. While Temporal is unreachable it stays `queued`: the next POST or GET tries again."""
    client = await _temporal(request, settings)
    if client is None:
        return row
    try:
        await client.start_workflow(
            BacktestWorkflow.run,
            BacktestJob.model_validate(row.job),
            id=job_id(row.id),
            task_queue=settings.backtest_task_queue,
        )
    except WorkflowAlreadyStartedError:
        pass  # started by an earlier try whose answer was lost
    except RPCError as error:
        log.warning("backtest %s waits: Temporal did not start it: %s", row.id, error.message)
        return row
    return await run_in_threadpool(_started, engine, row.id) or row


async def _progress(client: Client | None, backtest_id: str) -> BacktestProgress | None:
    """A running backtest's progress — nothing done yet while no worker answers the query, or while
    Temporal does not answer at all; None when its workflow is not running (any more)."""
    if client is None:
        return BacktestProgress()
    handle = client.get_workflow_handle(job_id(backtest_id))
    try:
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return None
        return await handle.query(BacktestWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as error:
        return None if error.status == RPCStatusCode.NOT_FOUND else BacktestProgress()
    except WorkflowQueryFailedError:
        return BacktestProgress()


def _unfinished(engine: Engine) -> list[Backtest]:
    with Session(reading(engine)) as session:
        return list(session.exec(select(Backtest).where(col(Backtest.status).in_(("queued", "running")))).all())


def _row(engine: Engine, backtest_id: str) -> Backtest | None:
    with Session(reading(engine)) as session:
        return session.get(Backtest, backtest_id)


def _give_up(engine: Engine, backtest_id: str, error: str) -> None:
    """A backtest whose workflow ended without an outcome (terminated, timed out): failed, saying so."""
    with transaction(engine) as session:
        row = session.get(Backtest, backtest_id)
        if row is not None and row.status == "running":
            row.status, row.error, row.finished_at = "failed", error, utcnow()


def _created(engine: Engine, backtest_id: str, job: BacktestJob) -> Backtest:
    with transaction(engine) as session:
        row = Backtest(id=backtest_id, status="queued", created_at=job.until, job=job.model_dump(mode="json"))
        session.add(row)
    return row


def _started(engine: Engine, backtest_id: str) -> Backtest | None:
    with transaction(engine) as session:
        row = session.get(Backtest, backtest_id)
        if row is not None and row.status == "queued":
            row.status = "running"
    return row


def _as_json(row: Backtest, progress: BacktestProgress | None) -> dict[str, Any]:
    finished = as_utc(row.finished_at)
    elapsed = (finished or utcnow()) - as_utc(row.created_at)
    done, total = (
        (progress.done, progress.total)
        if progress is not None
        else (row.total or 0, row.total)
        if row.status == "done"
        else (0, None)
    )
    return {
        "id": row.id,
        "status": row.status,
        "created_at": iso(row.created_at),
        "progress": {"done": done, "total": total},
        "result": row.result,
        "error": row.error,
        "elapsed_seconds": round(elapsed.total_seconds(), 1),
    }


@router.post(
    "/backtest",
    status_code=202,
    summary="Start a backtest: simulate everyone identified in the window "
    "under two policies (on the backtest task queue)",
)
async def start_backtest(
    body: BacktestRequest,
    request: Request,
    settings: Settings = Depends(get_settings),
    engine: Engine = Depends(get_engine),
) -> JSONResponse:
    new, new_name = _policy(body.config, settings, "config")
    current, current_name = _policy(body.against, settings, "against")
    try:
        since = parse_duration(body.since)
    except ValueError as error:
        raise HTTPException(400, f"since: {error}") from None
    for row in await run_in_threadpool(_unfinished, engine):
        if row.status == "queued":
            row = await _launch(request, settings, engine, row)
        if row.status == "queued" or await _progress(await _temporal(request, settings), row.id) is not None:
            raise HTTPException(409, f"backtest {row.id} is still {row.status}; poll GET /admin/backtest/{row.id}")
        await run_in_threadpool(_give_up, engine, row.id, "its workflow ended without an outcome")
    backtest_id = uuid.uuid4().hex
    job = BacktestJob(
        backtest_id=backtest_id,
        new=new,
        current=current,
        new_name=new_name,
        current_name=current_name,
        since=since,
        until=utcnow(),
        limit=body.limit,
    )
    row = await _launch(request, settings, engine, await run_in_threadpool(_created, engine, backtest_id, job))
    return JSONResponse(
        {"id": backtest_id, "status": row.status, "poll": f"/admin/backtest/{backtest_id}"}, status_code=202
    )


@router.get("/backtest/{backtest_id}", summary="A backtest's progress and, when done, its result")
async def get_backtest(
    backtest_id: str, request: Request, settings: Settings = Depends(get_settings), engine: Engine = Depends(get_engine)
) -> dict:
    row = await run_in_threadpool(_row, engine, backtest_id)
    if row is None:
        raise HTTPException(404, "no such backtest")
    if row.status == "queued":
        row = await _launch(request, settings, engine, row)
    progress = None
    if row.status == "running":
        progress = await _progress(await _temporal(request, settings), backtest_id)
        if progress is None:  # finished meanwhile, or ended without an outcome
            row = await run_in_threadpool(_row, engine, backtest_id) or row
            if row.status == "running":
                await run_in_threadpool(_give_up, engine, backtest_id, "its workflow ended without an outcome")
                row = await run_in_threadpool(_row, engine, backtest_id) or row
    return _as_json(row, progress)
