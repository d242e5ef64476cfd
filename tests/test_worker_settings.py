"""The worker's task-queue settings of issue 16 reach the Temporal worker: under load the SDK's
defaults (0.2 shared-queue polls per sticky poll, a 10 s sticky timeout) left new hubs — every
identify's first decision — behind cached hubs' browsing wake-ups (bench/soak.py at 600 events/s)."""

from __future__ import annotations

from datetime import timedelta

from conftest import settings_for
from worker.worker import build_worker


async def test_the_worker_polls_and_waits_as_configured(env, db):
    defaults = build_worker(env.client, db.engine, settings_for(db.url)).config()
    assert defaults["nonsticky_to_sticky_poll_ratio"] == 1.0
    assert defaults["sticky_queue_schedule_to_start_timeout"] == timedelta(seconds=30)
    tuned = build_worker(
        env.client,
        db.engine,
        settings_for(db.url, task_queue="tuned", worker_nonsticky_poll_ratio=2.5, worker_sticky_timeout=12),
    ).config()
    assert tuned["nonsticky_to_sticky_poll_ratio"] == 2.5
    assert tuned["sticky_queue_schedule_to_start_timeout"] == timedelta(seconds=12)
