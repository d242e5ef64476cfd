"""Front-door ingest runs on the API's own small pool (`BREADCRUMB_INGEST_THREADS`, issue 16): at most
that many calls store at once — 32 clients each on a thread spent their time handing the GIL
around — and the admin and health routes keep the default pool, so ingest queued behind its pool
never holds them up (nor a slow report ingest)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from api.app import create_app
from conftest import WRITE_KEY, settings_for


def track_body() -> dict:
    return {
        "writeKey": WRITE_KEY,
        "event": "Product Viewed",
        "anonymousId": f"anon-{uuid.uuid4().hex[:8]}",
        "messageId": uuid.uuid4().hex,
        "properties": {"product_id": "P-1"},
    }


def test_ingest_waits_for_its_pool_and_health_does_not(database):
    with TestClient(create_app(settings_for(database.url, auto_migrate=True, ingest_threads=1))) as client:
        limiter = client.app.state.ingest_limiter
        assert limiter.total_tokens == 1
        holder = object()
        client.portal.call(limiter.acquire_on_behalf_of, holder)  # the pool's one thread is busy
        with ThreadPoolExecutor(1) as pool:
            tracked = pool.submit(client.post, "/v1/track", json=track_body())
            deadline = time.monotonic() + 10
            while limiter.statistics().tasks_waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert limiter.statistics().tasks_waiting == 1, "the track never queued for the ingest pool"
            assert client.get("/healthz").status_code == 200  # the default pool answers meanwhile
            assert not tracked.done(), "the track was stored without a token of the ingest pool"
            client.portal.call(limiter.release_on_behalf_of, holder)
            response = tracked.result(timeout=30)
        assert response.status_code == 200 and response.headers["X-Breadcrumb-Stored"] == "1"
