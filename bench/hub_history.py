#!/usr/bin/env python3
"""The hub's Temporal history for a shopper with 10, 1 000 and 10 000 stored events.

Run with `.venv/bin/python bench/hub_history.py [--counts 10,1000,10000] [--views 20] [--postgres URL]`.

For each size, a person with that many events over the last 60 days (mostly product views and cart
events, each with the storefront's usual properties and an email among them) is written straight to
a fresh database. Then, on Temporal's time-skipping test server (temporal-test-server, never
downloaded) with the product worker: the hub is started as the dispatcher starts it (`identified`),
routes, and receives a burst of `--views` activity signals (a browsing session), gathered by its
debounce. Printed per size: what `load_person` returns now (projected, bytes) against the full
history it used to return, and the hub's history (events, bytes, largest event) once it settled.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, UTC
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from sqlalchemy import Engine  # noqa: E402
from sqlmodel import Session  # noqa: E402

from store.models import Event, Person  # noqa: E402

EVENT_NAMES = ["Product Viewed"] * 6 + ["Added to Cart", "Removed from Cart", "Collection Viewed", "Checkout Started"]


def heavy_shopper(engine: Engine, count: int, now: datetime, person_id: str | None = None) -> str:
    """A person with `count` events spread over the 60 days before `now`, each carrying what a
    storefront sends (a product's name, image, price, a `products` list; an email too)."""
    person_id = person_id or f"heavy-{count}"
    with Session(engine) as session:
        session.add(Person(id=person_id, identified_at=now, created_at=now, updated_at=now))
        session.add_all(
            Event(
                message_id=f"{person_id}-{i}",
                type="track",
                name=EVENT_NAMES[i % len(EVENT_NAMES)],
                original_name=EVENT_NAMES[i % len(EVENT_NAMES)],
                person_id=person_id,
                cart_id=f"c{i // 50}",
                timestamp=now - timedelta(minutes=(count - i) * 60 * 24 * 60 // count),
                received_at=now,
                properties={
                    "sku": f"SKU-{i % 300}",
                    "name": "Night cream",
                    "price": 12.5,
                    "quantity": 1,
                    "email": "heavy@example.com",
                    "image_url": "https://cdn.example/x.png",
                    "products": [{"sku": "SKU-1", "price": 12.5, "quantity": 1}],
                },
            )
            for i in range(count)
        )
        session.commit()
    return person_id


async def measure(database_url: str, counts: list[int], views: int) -> list[dict]:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from activities.store_activities import StoreActivities, person_history
    from store.db import make_engine
    from store.migrate import upgrade
    from store.settings import Settings
    from dispatch.temporal import register_search_attributes
    from worker.worker import build_worker
    from workflows.hub import hub_id
    from workflows.models import HubInput, HubSignal, PersonContext, PersonLookup

    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(database_url=database_url, journeys=REPO_ROOT / "journeys.toml", dispatch=False)
    store = StoreActivities(engine, settings=settings)
    server = shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=server, data_converter=pydantic_data_converter
    )
    rows = []
    try:
        await register_search_attributes(env.client)
        async with build_worker(env.client, engine, settings):
            for count in counts:
                now = datetime.now(UTC)
                person = heavy_shopper(engine, count, now)
                projected = store.load_person(PersonLookup(person_id=person, at=now)).model_dump_json()
                with Session(engine) as session:
                    full = PersonContext(history=person_history(session, session.get(Person, person), now))
                handle = await env.client.start_workflow(
                    "hub",
                    HubInput(person_id=person, policy=settings.policy),
                    id=hub_id(person),
                    task_queue=settings.task_queue,
                    start_signal="identified",
                    start_signal_args=[HubSignal()],
                )
                await settle(handle)
                for _ in range(views):
                    await handle.signal("activity", HubSignal(event="Product Viewed"))
                await settle(handle)
                history = await handle.fetch_history()
                rows.append(
                    dict(
                        events_stored=count,
                        load_person_bytes=len(projected),
                        full_history_bytes=len(full.model_dump_json()),
                        hub_events=len(history.events),
                        hub_bytes=sum(e.ByteSize() for e in history.events),
                        largest_event=max(e.ByteSize() for e in history.events),
                    )
                )
    finally:
        await env.shutdown()
    return rows


async def settle(handle) -> None:
    """Until the hub has decided on every wake-up it was sent (its `busy` query)."""
    while await handle.query("busy", result_type=bool):
        await asyncio.sleep(0.05)


def main() -> None:
    from common import fresh_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,1000,10000")
    parser.add_argument("--views", type=int, default=20, help="activity signals sent after the first decision")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database is made on it)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as workdir, fresh_database(Path(workdir), args.postgres) as url:
        rows = asyncio.run(measure(url, counts, args.views))
    print(
        f"{'events':>8} {'load_person B':>14} {'full history B':>15} {'hub events':>11} {'hub bytes':>10} "
        f"{'largest event B':>16}"
    )
    for row in rows:
        print(
            f"{row['events_stored']:>8} {row['load_person_bytes']:>14} {row['full_history_bytes']:>15} "
            f"{row['hub_events']:>11} {row['hub_bytes']:>10} {row['largest_event']:>16}"
        )


if __name__ == "__main__":
    main()
