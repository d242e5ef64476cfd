"""Many processes, one truth: two `breadcrumb api` processes (each with its outbox dispatcher) and two
`breadcrumb worker` processes against one PostgreSQL database and one Temporal dev server, under
mixed load through both APIs — a shopper's browsing through one API, the identify through the other,
browsing again once known, purchases — with one worker SIGKILLed mid-run and never restarted.

Nothing may happen twice: no message row or relay delivery twice for a (person, journey, step), one
Message-ID per message at the SMTP relay, one journey per person, one conversion per purchase; and
every identify is routed (its hub exists and has decided). PostgreSQL only: SQLite is one machine's
database by design.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import bindparam, text

from conftest import POSTGRES_URL, WRITE_KEY, fresh_database
from dispatch.temporal import connect
from fault_stack import (
    Stack,
    browse_batch,
    identify_message,
    known_browsing,
    outcome,
    sending,
    shoppers,
    start_smtp,
    wait_until,
)
from store.db import make_engine
from store.settings import Settings
from workflows.hub import hub_id
from workflows.models import HubState

SHOPPERS = 30
# A send cut off by the SIGKILL is retried once its heartbeat times out (10 s) and its lease runs out
# (the delivery deadline plus a margin): a short deadline keeps the test short.
DELIVERY_DEADLINE = "5"
EMAILS = bindparam("emails", expanding=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not POSTGRES_URL:
        pytest.skip("BREADCRUMB_TEST_POSTGRES_URL is not set (CI sets it): several processes share PostgreSQL")
    workdir = tmp_path_factory.mktemp("many")
    smtp = start_smtp()
    extra = {"BREADCRUMB_DELIVERY_DEADLINE": DELIVERY_DEADLINE}
    with fresh_database("postgres", workdir, "breadcrumb_many") as url:
        first = Stack(workdir / "a", url, smtp=smtp, extra_env=extra)
        second = Stack(workdir / "b", url, smtp=smtp, extra_env=extra, temporal_port=first.temporal_port)
        try:
            first.start_temporal()
            first.migrate()
            for stack in (first, second):  # one thread: children die with the thread that forked them
                stack.start_api()
                stack.start_worker()
            yield first, second
        finally:
            second.stop()
            first.stop()
            smtp.stop()


def _order(s) -> dict:
    return {
        "type": "track",
        "anonymousId": s.anonymous_id,
        "messageId": f"order-{s.tag}",
        "event": "Order Completed",
        "properties": {"order_id": f"o-{s.tag}", "cart_id": s.cart_id, "revenue": 64.0},
    }


async def _post(http: httpx.AsyncClient, batch: list[dict]) -> None:
    """Like a storefront: the same messageIds again until the API answers 200."""
    answer = "no answer"
    for attempt in range(30):
        try:
            response = await http.post("/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""))
            if response.status_code == 200:
                return
            answer = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as error:
            answer = repr(error)
        await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError(f"{http.base_url}/v1/batch never answered 200 ({answer}): {batch[0]['messageId']}")


@pytest.mark.timeout(300)
async def test_two_apis_two_workers_one_killed_nothing_twice(cluster):
    first, second = cluster
    people = shoppers(SHOPPERS, f"many{uuid.uuid4().hex[:4]}")
    emails = [s.email for s in people]
    buyers = [s for s in people if s.route == "cart_recovery"][::2]
    rng = random.Random()
    gate = asyncio.Semaphore(8)

    async def shop(s, apis) -> None:
        one, other = rng.sample(apis, 2)
        async with gate:
            await _post(one, browse_batch(s))  # anonymous, through one API
            await _post(other, [identify_message(s)])  # identified through the other
            await _post(rng.choice(apis), known_browsing(s))  # a known person browsing: hub signals
            if s in buyers:
                await _post(rng.choice(apis), [_order(s)])

    engine = make_engine(first.database_url)
    killed_mid_send: list[str] = []
    started = time.monotonic()
    try:
        async with (
            httpx.AsyncClient(base_url=first.api_url, timeout=30) as a,
            httpx.AsyncClient(base_url=second.api_url, timeout=30) as b,
        ):
            shopping = [asyncio.create_task(shop(s, [a, b])) for s in people]
            await asyncio.sleep(2.0)  # mid-run: shoppers identifying, journeys starting
            await asyncio.to_thread(second.worker.kill)
            killed_mid_send = await asyncio.to_thread(sending, engine)
            await asyncio.gather(*shopping)
        driven = time.monotonic() - started
        assert not second.worker.alive() and first.worker.alive()

        with engine.connect() as conn:
            ids = dict(
                conn.execute(
                    text(
                        "SELECT value, person_id FROM identifiers WHERE kind = 'email' AND value IN :emails"
                    ).bindparams(EMAILS),
                    {"emails": emails},
                ).all()
            )
        assert len(ids) == SHOPPERS, "an identify was not stored"

        # Every identify routed: its hub exists and has decided (queried by the one worker left).
        temporal = await connect(Settings(temporal_address=first.temporal_address))

        async def undecided() -> list[str]:
            left = []
            for s in people:
                try:
                    state = await temporal.get_workflow_handle(hub_id(ids[s.email])).query(
                        "state", result_type=HubState
                    )
                except Exception:
                    left.append(s.tag)
                    continue
                if not state.decisions or (s in buyers and state.conversions < 1):
                    left.append(s.tag)
            return left

        deadline = time.monotonic() + 90
        while left := await undecided():
            assert time.monotonic() < deadline, f"hubs that never decided (or missed a purchase): {left[:10]}"
            await asyncio.sleep(0.5)

        # Every message of the shoppers who did not buy is sent (buyers' cart journeys stop at the purchase).
        finishers = [s for s in people if s not in buyers]

        def settled() -> bool:
            result = outcome(engine, finishers, first.smtp.mailbox)
            return not result.missing and not result.not_sent

        wait_until(settled, 120, "every message of the shoppers who did not buy to be sent")
        await asyncio.sleep(2)  # a duplicate would land now
        settled_after = time.monotonic() - started
    finally:
        engine.dispose()

    engine = make_engine(first.database_url)
    try:
        result = outcome(engine, people, first.smtp.mailbox)
        with engine.connect() as conn:
            conversions = Counter(
                conn.execute(text("SELECT person_id FROM journey_log WHERE kind = 'conversion'")).scalars()
            )
            runs = conn.execute(
                text(
                    "SELECT person_id, route, reason, started_at, ended_at FROM journey_runs "
                    "WHERE route IN ('cart_recovery', 'browse_recovery', 'welcome')"
                )
            ).all()
            outbox = conn.execute(text("SELECT person_id, kind, dispatched_at FROM outbox")).all()
            sent_rows = conn.execute(
                text("SELECT count(*) FROM messages WHERE status = 'sent' AND recipient IN :emails").bindparams(EMAILS),
                {"emails": emails},
            ).scalar()
    finally:
        engine.dispose()
    print(
        f"\n2 APIs + 2 workers (one SIGKILLed at 2 s, {len(killed_mid_send)} sends cut off): {result.line()}; "
        f"driven in {driven:.1f}s, settled after {settled_after:.1f}s; "
        f"{sum(n > 1 for n in result.journeys_per_person.values())} people with a second journey after the first"
    )

    ours = set(ids.values())
    assert all(row.dispatched_at for row in outbox if row.person_id in ours), "an outbox row was never dispatched"
    assert result.duplicates_by_key == 0 and result.duplicates_by_recipient_step == 0, result.line()
    # At the relay: one Message-ID per message, and every message row delivered.
    assert set(result.message_ids_per_key.values()) == {1}, result.message_ids_per_key.most_common(3)
    assert result.delivered_keys == sent_rows, f"{result.delivered_keys} delivered, {sent_rows} rows say sent"
    # A second delivery of the same message (same Message-ID) only for a send the SIGKILL cut off.
    assert result.redeliveries <= len(killed_mid_send), result.line()
    # One journey per (person, route). A second journey of another route once the first has ended is the
    # policy at work (a hub re-routing on browsing it had not decided on yet), not a double effect.
    routes = Counter((run.person_id, run.route) for run in runs)
    assert set(routes.values()) == {1}, [run for run in runs if routes[(run.person_id, run.route)] > 1]
    assert all(conversions[ids[s.email]] == 1 for s in buyers), "a purchase counted other than once"
