"""The Temporal worker process: hub + journey workflows and the store activities; backtests on their own queue."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import timedelta

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from activities.channels import Channel, channels_from_settings
from activities.render import Renderer
from activities.segment_activities import SegmentActivities
from activities.store_activities import StoreActivities
from simulation.backtest_activities import BacktestActivities
from simulation.backtest_job import Backtest
from store.settings import Settings
from workflows.registry import ALL_WORKFLOWS
from workflows.segment_refresh import SEGMENT_REFRESH_ID

log = logging.getLogger("breadcrumb.worker")
READY = "worker polling for hub and journey tasks"  # `breadcrumb dev` waits for this line before its banner
BACKTEST_READY = "worker polling for backtest tasks"


def build_worker(
    client: Client,
    engine: Engine,
    settings: Settings,
    channels: dict[str, Channel] | None = None,
    activity_threads: int = 16,
    max_cached_workflows: int | None = None,
    also: tuple[list, list] = ([], []),
) -> Worker:
    """The worker with channels from settings (SMTP, SMS webhook, else outbox); `channels` overrides
    them by name (tests); `also` adds (workflows, activities) to the same worker (a benchmark's baseline). Templates and delivery settings are checked here: a missing template or
    variable, or an SMTP URL without a From address, stops start-up with a message saying which."""
    renderer = Renderer(link_hosts=settings.link_hosts)
    renderer.check(settings.policy.step_templates())
    configured = channels_from_settings(settings)
    for name, channel in configured.items():
        log.info("channel %s: %s", name, type(channel).__name__)
    activities = StoreActivities(
        engine, channels={**configured, **(channels or {})}, renderer=renderer, settings=settings
    )
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[*ALL_WORKFLOWS, *also[0]],
        activities=[*activities.all(), *SegmentActivities(engine, settings).all(), *also[1]],
        activity_executor=ThreadPoolExecutor(max_workers=activity_threads),
        max_concurrent_activities=activity_threads,
        max_cached_workflows=settings.max_cached_workflows if max_cached_workflows is None else max_cached_workflows,
        nonsticky_to_sticky_poll_ratio=settings.worker_nonsticky_poll_ratio,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.worker_sticky_timeout),
        # SIGTERM (a deploy) lets running sends finish instead of cancelling them mid-delivery.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace),
    )


async def start_segment_refresh(client: Client, settings: Settings) -> None:
    """Start the scheduled segment refresh unless it already runs (every worker asks; one runs)."""
    await client.start_workflow(
        "segment_refresh",
        id=SEGMENT_REFRESH_ID,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="re-judges the segments with a window, every segment_refresh of journeys.toml",
    )


def build_backtest_worker(client: Client, engine: Engine, settings: Settings) -> Worker:
    """The worker of the backtest task queue: the backtest workflow and its simulation activity, one
    backtest at a time (it runs a shard process per CPU of its own)."""
    return Worker(
        client,
        task_queue=settings.backtest_task_queue,
        workflows=[Backtest],
        activities=BacktestActivities(engine).all(),
        max_concurrent_activities=1,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace),
    )


def workers_for(queue: str | None, client: Client, engine: Engine, settings: Settings) -> tuple[list[Worker], str]:
    """The workers `breadcrumb worker --queue …` runs, and the line it logs once they poll: the
    backtest queue alone, or the journeys queue (the default; with the backtest queue too under
    BREADCRUMB_WORKER_SERVES_BACKTESTS)."""
    if queue == settings.backtest_task_queue:
        return [build_backtest_worker(client, engine, settings)], BACKTEST_READY
    workers = [build_worker(client, engine, settings)]
    if settings.worker_serves_backtests:
        workers.append(build_backtest_worker(client, engine, settings))
    return workers, READY


async def run_until_signalled(*workers: Worker, ready: str = READY) -> None:
    """Run until SIGINT/SIGTERM, then let in-flight tasks finish (graceful shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        log.info(ready)
        await stop.wait()
        log.info("shutting down the worker")
