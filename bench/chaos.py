#!/usr/bin/env python3
"""Worker-crash chaos at full size: 200 identified shoppers through their journeys while the worker
is SIGKILLed at random moments and restarted, then: was every message sent exactly once?

    .venv/bin/python bench/chaos.py [--shoppers 200] [--kills 8] [--seed N] [--postgres URL] [--relay-delay S] [--kill-gap MIN MAX]

The same scenario as tests/test_faults.py (200 shoppers and 5 kills in CI; here as many kills as you
like), on the same real processes (tests/fault_stack.py): `temporal server start-dev`, `breadcrumb
api` with its outbox dispatcher and `breadcrumb worker` as subprocesses, SQLite (or a fresh
PostgreSQL database with --postgres), `examples/journeys.fast.toml`, email over SMTP to a recording
server in this process.

Prints `sent/expected, duplicates` (by idempotency key and by recipient + journey step), the SMTP
side (deliveries, and redeliveries under the same Message-ID — the window between the SMTP
transaction and the row saying "sent"), when the kills landed, how soon after each restart the
relay received mail again (a send cut off by the kill is retried once its 10 s heartbeat timeout
passes and its lease runs out), and how long the stack took to settle. Exit status 1 if a message is missing or duplicated. Results: bench/results/chaos.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from common import fresh_database  # noqa: E402
from fault_stack import Stack, shoppers, start_smtp, worker_chaos  # noqa: E402
from store.db import make_engine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=200)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of the worker (at least 5)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--postgres", metavar="URL", help="run on a fresh database on this PostgreSQL server")
    parser.add_argument("--settle", type=float, default=420, help="seconds to wait for the last messages")
    parser.add_argument(
        "--kill-gap",
        type=float,
        nargs=2,
        default=(0.3, 4.0),
        metavar=("MIN", "MAX"),
        help="seconds between a restart and the next SIGKILL, drawn from this range",
    )
    parser.add_argument(
        "--relay-delay",
        type=float,
        default=0.0,
        help="seconds the SMTP relay takes to answer 250 (so kills land mid-delivery)",
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)

    with (
        tempfile.TemporaryDirectory(prefix="breadcrumb-chaos-") as tmp,
        fresh_database(Path(tmp), args.postgres, prefix="breadcrumb_chaos") as database_url,
    ):
        workdir = Path(tmp)
        smtp = start_smtp(args.relay_delay)
        stack = Stack(workdir, database_url, smtp=smtp)
        engine = None
        try:
            started = time.monotonic()
            stack.start_temporal()
            stack.migrate()
            stack.start_api()
            stack.start_worker()
            engine = make_engine(database_url)
            print(
                f"stack up in {time.monotonic() - started:.1f}s; {args.shoppers} shoppers, {args.kills} SIGKILLs, "
                f"seed {seed}, {engine.dialect.name}",
                flush=True,
            )
            people = shoppers(args.shoppers)
            # Kills spread over the journeys' life: a gap of 0.3–4 s (--kill-gap) after each restart.
            report = asyncio.run(
                worker_chaos(
                    stack,
                    people,
                    kills=args.kills,
                    seed=seed,
                    engine=engine,
                    settle_timeout=args.settle,
                    concurrency=16,
                    gap=tuple(args.kill_gap),
                )
            )
        finally:
            stack.stop()
            smtp.stop()
            if engine is not None:
                engine.dispose()

    result = report.outcome
    ok = (
        not result.missing
        and not result.not_sent
        and result.duplicates_by_key == 0
        and result.duplicates_by_recipient_step == 0
        and result.delivered_keys == result.expected
    )
    print(
        f"sent/expected {result.sent}/{result.expected}, duplicates {result.duplicates_by_key + result.duplicates_by_recipient_step}"
    )
    print(result.line())
    print(
        f"SIGKILLs at {report.kills}s; shoppers driven in {report.drive_seconds}s; "
        f"every message sent {report.settle_seconds}s after the last restart"
    )
    waits = [w for w in report.resumed if w is not None]
    print(f"sends resumed {report.resumed}s after each restart (slowest {max(waits) if waits else '-'}s)")
    print(
        "sends cut off by each SIGKILL, and seconds from the restart until the last of them was sent: "
        + ", ".join(f"{n} in {s}s" if n else "none" for n, s in report.cut_off)
    )
    if result.missing:
        print(f"missing: {result.missing[:20]}")
    results = REPO_ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "chaos.json").write_text(
        json.dumps(
            {
                "shoppers": args.shoppers,
                "kills": report.kills,
                "seed": seed,
                "backend": engine.dialect.name,
                "expected": result.expected,
                "sent": result.sent,
                "duplicates_by_key": result.duplicates_by_key,
                "duplicates_by_recipient_step": result.duplicates_by_recipient_step,
                "missing": result.missing,
                "smtp_deliveries": result.deliveries,
                "smtp_messages": result.delivered_keys,
                "smtp_redeliveries": result.redeliveries,
                "drive_seconds": report.drive_seconds,
                "settle_seconds": report.settle_seconds,
                "resumed_seconds": report.resumed,
                "cut_off_sends": report.cut_off,
                "relay_delay": args.relay_delay,
            },
            indent=2,
        )
        + "\n"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
