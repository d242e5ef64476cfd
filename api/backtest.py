"""`POST /admin/backtest` and `GET /admin/backtest/{id}`: the `breadcrumb backtest` numbers over HTTP.

A job runs in a background thread of the API process, with its own event loop and its own
time-skipping test server, reading the store through the app's engine (never writing to it).
Jobs live in this process's memory: they are lost when the process restarts, and each API replica
knows only its own, so poll the replica you posted to. One job runs at a time per process
(another POST meanwhile is 409); the last `JOBS_KEPT` finished jobs are kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import get_engine, get_settings, require_admin
from journeys.policy import Policy, PolicyError, load_policy, parse_policy
from store.settings import Settings

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
JOBS_KEPT = 20


class BacktestRequest(BaseModel):
    since: str = Field("30d", description="Simulate everyone identified in this window before now (30d, 12h…)")
    config: str | dict | None = Field(None, description="The new policy: a TOML path on the server, or the "
                                                        "policy itself as JSON (the journeys.toml keys); default: the current one")
    against: str | dict | None = Field(None, description="The policy to compare with (same forms); default: the current one")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="At most this many people (oldest identify first)")


@dataclass
class Job:
    id: str
    status: str = "queued"  # queued | running | done | failed
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    done: int = 0
    total: int | None = None
    result: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "created_at": self.created_at,
                "progress": {"done": self.done, "total": self.total}, "result": self.result, "error": self.error,
                "elapsed_seconds": round(time.monotonic() - self.started, 1)}


class Jobs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: OrderedDict[str, Job] = OrderedDict()

    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.status in ("queued", "running")), None)

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        while len(self.jobs) > JOBS_KEPT:
            oldest = next(iter(self.jobs))
            if self.jobs[oldest].status in ("queued", "running"):
                break
            self.jobs.pop(oldest)


def _jobs(request: Request) -> Jobs:
    state = request.app.state
    if getattr(state, "backtest_jobs", None) is None:
        state.backtest_jobs = Jobs()
    return state.backtest_jobs


def _policy(given: str | dict | None, settings: Settings, field_name: str) -> tuple[Policy, str]:
    try:
        if given is None:
            return settings.policy, str(settings.journeys).rsplit("/", 1)[-1]
        if isinstance(given, dict):
            return parse_policy(given, field_name), f"{field_name} (inline)"
        return load_policy(given), given.rsplit("/", 1)[-1]
    except PolicyError as error:
        raise HTTPException(400, str(error)) from None


def _run(job: Job, engine, new: Policy, current: Policy, since, limit: int | None, names: tuple[str, str]) -> None:
    from simulation.simulator import backtest

    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total

    job.status = "running"
    try:
        job.result = asyncio.run(backtest(engine, new, current, since, limit=limit, new_name=names[0],
                                          current_name=names[1], progress=progress))
        job.status = "done"
    except Exception as exc:  # the job reports it; the API keeps serving
        job.error = f"{type(exc).__name__}: {exc}"
        job.status = "failed"


@router.post("/backtest", status_code=202, summary="Start a backtest: simulate everyone identified in the window "
                                                    "under two policies (runs in the background)")
def start_backtest(body: BacktestRequest, request: Request, settings: Settings = Depends(get_settings),
                   engine=Depends(get_engine)) -> JSONResponse:
    from simulation.simulator import SimulationError, parse_since

    new, new_name = _policy(body.config, settings, "config")
    current, current_name = _policy(body.against, settings, "against")
    try:
        since = parse_since(body.since)
    except SimulationError as error:
        raise HTTPException(400, str(error).replace("--since", "since")) from None
    jobs = _jobs(request)
    with jobs.lock:
        busy = jobs.running()
        if busy is not None:
            raise HTTPException(409, f"backtest {busy.id} is still running; poll GET /admin/backtest/{busy.id}")
        job = Job(id=uuid.uuid4().hex)
        jobs.add(job)
    threading.Thread(target=_run, args=(job, engine, new, current, since, body.limit, (new_name, current_name)),
                     name=f"backtest-{job.id[:8]}", daemon=True).start()
    return JSONResponse({"id": job.id, "status": job.status, "poll": f"/admin/backtest/{job.id}"}, status_code=202)


@router.get("/backtest/{job_id}", summary="A backtest's progress and, when done, its result")
def get_backtest(job_id: str, request: Request) -> dict:
    job = _jobs(request).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, "no such backtest in this API process (jobs live in memory)")
    return job.as_json()
