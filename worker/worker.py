"""The Temporal worker process: hub + journey workflows and the store activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.channels import Channel, channels_from_settings
from activities.render import Renderer
from activities.store_activities import StoreActivities
from store.settings import Settings
from workflows import ALL_WORKFLOWS

log = logging.getLogger("breadcrumb.worker")
READY = "worker polling for hub and journey tasks"  # `breadcrumb dev` waits for this line before its banner


def build_worker(client: Client, engine: Engine, settings: Settings, channels: dict[str, Channel] | None = None,
                 activity_threads: int = 16, max_cached_workflows: int | None = None,
                 also: tuple[list, list] = ([], [])) -> Worker:
    """The worker with channels from settings (SMTP, SMS webhook, else outbox); `channels` overrides
    them by name (tests); `also` adds (workflows, activities) to the same worker (a benchmark's baseline). Templates and delivery settings are checked here: a missing template or
    variable, or an SMTP URL without a From address, stops start-up with a message saying which."""
    renderer = Renderer(link_hosts=settings.link_hosts)
    renderer.check([(step.template, step.channel) for journey in settings.policy.journeys.values()
                    for step in journey.steps])
    configured = channels_from_settings(settings)
    for name, channel in configured.items():
        log.info("channel %s: %s", name, type(channel).__name__)
    activities = StoreActivities(engine, channels={**configured, **(channels or {})}, renderer=renderer,
                                 settings=settings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[*ALL_WORKFLOWS, *also[0]],
        activities=[*activities.all(), *also[1]],
        activity_executor=ThreadPoolExecutor(max_workers=activity_threads),
        max_concurrent_activities=activity_threads,
        max_cached_workflows=settings.max_cached_workflows if max_cached_workflows is None else max_cached_workflows,
        # SIGTERM (a deploy) lets running sends finish instead of cancelling them mid-delivery.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace),
    )


async def run_until_signalled(worker: Worker) -> None:
    """Run until SIGINT/SIGTERM, then let in-flight tasks finish (graceful shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        log.info(READY)
        await stop.wait()
        log.info("shutting down the worker")
