"""Backtests on their own task queue (issue 16): `POST /admin/backtest` only starts a workflow on the
backtest queue; a real worker of that queue (what `breadcrumb worker --queue backtest` runs) does the
simulation on a real Temporal dev server; `GET /admin/backtest/{id}` reads the workflow's progress
query while it runs and the stored outcome once it is done."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
from temporalio.testing import WorkflowEnvironment

from conftest import ADMIN_TOKEN, CONVERTER, ServedApp, free_port, settings_for, venv_binary
from simulation.backtest_job import BacktestProgress, job_id
from store.settings import REPO_ROOT
from worker.worker import BACKTEST_READY, workers_for

sys.path.insert(0, str(REPO_ROOT))
from bench.shoppers import populate  # noqa: E402
from test_simulate import policy  # noqa: E402


async def test_a_backtest_runs_on_the_backtest_queue_and_the_api_reads_its_progress(db):
    populate(db.engine, policy(), 12, days=10, seed=5)
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"), data_converter=CONVERTER
    ) as env:
        settings = settings_for(db.url, temporal_address=env.client.service_client.config.target_host)
        with ServedApp(settings) as served:
            async with httpx.AsyncClient(
                base_url=served.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as http:
                assert (await http.post("/admin/backtest", json={}, headers={"Authorization": ""})).status_code == 401
                bad = await http.post("/admin/backtest", json={"config": {"cart_min_value": -1}})
                assert bad.status_code == 400 and "cart_min_value" in bad.text
                assert (await http.post("/admin/backtest", json={"since": "soon"})).status_code == 400
                started = await http.post(
                    "/admin/backtest",
                    json={"since": "30d", "limit": 10, "config": policy("4h").model_dump(mode="json")},
                )
                assert started.status_code == 202, started.text
                backtest = started.json()["id"]
                # Nothing serves the queue yet: the workflow waits, the API runs nothing itself, and a
                # second backtest is refused while the first one has not finished.
                description = await env.client.get_workflow_handle(job_id(backtest)).describe()
                assert description.task_queue == settings.backtest_task_queue
                again = await http.post("/admin/backtest", json={})
                assert again.status_code == 409 and backtest in again.text

                workers, ready = workers_for(settings.backtest_task_queue, env.client, db.engine, settings)
                assert ready == BACKTEST_READY and len(workers) == 1
                seen: list[dict] = []
                async with workers[0]:
                    deadline = time.monotonic() + 120
                    while True:
                        body = (await http.get(f"/admin/backtest/{backtest}")).json()
                        seen.append(body["progress"])
                        if body["status"] != "running" or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.2)
                    query = await env.client.get_workflow_handle(job_id(backtest)).query("progress")
                assert body["status"] == "done", body
                assert body["progress"] == {"done": 20, "total": 20}
                assert BacktestProgress.model_validate(query).status == "done"
                assert all(a["done"] <= b["done"] for a, b in zip(seen, seen[1:], strict=False)), seen
                assert body["result"]["people"] == 10 and set(body["result"]["policies"]) == {"current", "new"}
                assert body["error"] is None and body["elapsed_seconds"] > 0
                assert (await http.get("/admin/backtest/nope")).status_code == 404
                # A backtest whose workflow ends without an outcome (terminated) reads as failed.
                lost = (await http.post("/admin/backtest", json={"since": "1d"})).json()["id"]
                await env.client.get_workflow_handle(job_id(lost)).terminate("operator")
                body = (await http.get(f"/admin/backtest/{lost}")).json()
                assert (body["status"], body["error"]) == ("failed", "its workflow ended without an outcome")
    assert db.scalar("SELECT count(*) FROM messages") == 0
    assert db.scalar("SELECT count(*) FROM backtests WHERE status = 'done'") == 1


def test_without_temporal_a_backtest_waits_queued_and_the_api_still_answers(db):
    """Like ingest, the API answers while Temporal is down: the backtest waits `queued` with its job
    stored, and the next POST or GET starts it."""
    settings = settings_for(db.url, temporal_address=f"127.0.0.1:{free_port()}")  # nothing listens there
    with ServedApp(settings) as served:
        http = httpx.Client(base_url=served.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        started = http.post("/admin/backtest", json={"since": "7d", "limit": 5})
        assert started.status_code == 202 and started.json()["status"] == "queued", started.text
        backtest = started.json()["id"]
        body = http.get(f"/admin/backtest/{backtest}").json()
        assert (body["status"], body["progress"], body["result"]) == ("queued", {"done": 0, "total": None}, None)
        again = http.post("/admin/backtest", json={})
        assert again.status_code == 409 and "still queued" in again.text
    job = db.scalar(f"SELECT job FROM backtests WHERE id = '{backtest}'")
    assert (json.loads(job) if isinstance(job, str) else job)["limit"] == 5


def test_worker_refuses_an_unknown_queue_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--queue", "nope"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "breadcrumb worker: --queue nope: serve breadcrumb (hubs and journeys) or backtest (backtests)"
    )
