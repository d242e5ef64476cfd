#!/usr/bin/env python3
"""Shopify webhooks accepted per second against `/v1/track` carrying the same content.

Run with `.venv/bin/python bench/shopify_webhooks.py [--calls N] [--postgres URL]`.

For each backend (SQLite always; PostgreSQL with `--postgres URL`, in a database created and dropped
here) the script migrates a fresh database, starts the API as its own uvicorn process (one worker,
no dispatcher) and sends, sequentially with httpx, N signed `checkouts/create` webhooks (a new
shopper each: a Shopify-shaped checkout with two line items, customer and note attributes) and N
`POST /v1/track` calls with a server key carrying the same checkout as a `Checkout Started` event
(same cart, items, value, email — also an identify moment). The two kinds alternate in blocks of 20
so both see the same machine; bodies and signatures are prepared before the clock starts. The
webhook does more per call — verify the HMAC, write the inbox row, apply, mark it applied — so the
ratio webhook/track says what that costs. Results are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
import orjson  # noqa: E402

import shopify_payloads as shopify  # noqa: E402
from bench.common import ApiProcess, fresh_database  # noqa: E402
from integrations.shopify.mapping import lines, money  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402

SERVER_KEY = "sk_bench_shopify"
BLOCK = 20


def prepared(calls: int) -> tuple[list[tuple[bytes, dict]], list[bytes]]:
    """Webhook bodies with their headers, and the equivalent /v1/track bodies, one shopper each."""
    webhooks, tracks = [], []
    for i in range(calls):
        tag = uuid.uuid4().hex[:12]
        email = f"shopper.{tag}@example.com"
        checkout = shopify.checkout(
            token=f"tok{tag}",
            cart_token=f"cart{tag}",
            anonymous_id=f"anon-{tag}",
            email=email,
            customer={**shopify.CUSTOMER, "id": 10_000 + i, "email": email},
        )
        body = orjson.dumps(checkout)
        webhooks.append((body, shopify.headers("checkouts/create", body)))
        tracks.append(
            orjson.dumps(
                {
                    "type": "track",
                    "event": "Checkout Started",
                    "anonymousId": f"anon-t-{tag}",
                    "userId": str(20_000 + i),
                    "messageId": f"t-{tag}",
                    "properties": {
                        "cart_id": f"tcart{tag}",
                        "checkout_token": f"ttok{tag}",
                        "value": money(checkout["total_price"]),
                        "currency": "USD",
                        "products": lines(checkout),
                        "email": f"t.{email}",
                        "checkout_url": checkout["abandoned_checkout_url"],
                    },
                }
            )
        )
    return webhooks, tracks


def run(backend: str, postgres: str | None, calls: int, workdir: Path) -> dict:
    webhooks, tracks = prepared(calls)
    with fresh_database(workdir, postgres, prefix="breadcrumb_shopify_bench") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        settings = {
            "server_write_keys": SERVER_KEY,
            "shopify_webhook_secret": shopify.SECRET,
            "dispatch": "false",
            "shop_url": "https://glow.example",
            "rate_limit_server": "0",
            "metrics_enabled": "true",
        }
        with ApiProcess(url, workdir / f"api-{backend}.log", **settings) as api, httpx.Client(base_url=api.url) as http:
            times: dict[str, list[float]] = {"webhook": [], "track": []}
            warm_body, warm_headers = prepared(1)[0][0]
            http.post("/shopify/webhooks", content=warm_body, headers=warm_headers).raise_for_status()
            for start in range(0, calls, BLOCK):
                for body, headers in webhooks[start : start + BLOCK]:
                    began = time.perf_counter()
                    response = http.post("/shopify/webhooks", content=body, headers=headers)
                    times["webhook"].append(time.perf_counter() - began)
                    assert response.status_code == 200, response.text
                for body in tracks[start : start + BLOCK]:
                    began = time.perf_counter()
                    response = http.post(
                        "/v1/track", content=body, auth=(SERVER_KEY, ""), headers={"Content-Type": "application/json"}
                    )
                    times["track"].append(time.perf_counter() - began)
                    assert response.status_code == 200, response.text
    result = {"backend": backend, "calls": calls}
    for kind, spent in times.items():
        result[kind] = {
            "per_s": len(spent) / sum(spent),
            "p50_ms": statistics.median(spent) * 1000,
            "p99_ms": sorted(spent)[int(len(spent) * 0.99) - 1] * 1000,
        }
    result["ratio"] = result["webhook"]["per_s"] / result["track"]["per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="webhooks (and as many /v1/track calls) per backend")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database is created on it)")
    args = parser.parse_args()
    backends = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        for backend, postgres in backends:
            r = run(backend, postgres, args.calls, Path(tmp))
            print(
                f"{backend}: {r['calls']} calls each — webhooks {r['webhook']['per_s']:.0f}/s "
                f"(p50 {r['webhook']['p50_ms']:.1f} ms, p99 {r['webhook']['p99_ms']:.1f} ms), /v1/track "
                f"{r['track']['per_s']:.0f}/s (p50 {r['track']['p50_ms']:.1f} ms, p99 {r['track']['p99_ms']:.1f} ms)"
                f" → webhook/track {r['ratio']:.2f}×"
            )


if __name__ == "__main__":
    main()
