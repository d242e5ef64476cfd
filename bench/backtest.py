#!/usr/bin/env python3
"""Backtest benchmark: people simulated per second, against plain workflow runs on the same kind of server.

Run with `.venv/bin/python bench/backtest.py [--people 500] [--shards N] [--seed S]`.

1. Migrates a fresh SQLite database in a temporary folder and writes `--people` shoppers identified
   over the last 28 days through the real ingest core (`bench/shoppers.py`: browsing, carts, later
   returns, purchases before and after identifying, several timezones).
2. Runs `breadcrumb backtest`'s code three times over `--shards` worker processes (default: one per
   CPU), each with its own time-skipping test server:
   - a step change — `journeys.toml` against the same policy with a 4 h first cart-recovery delay:
     everyone is simulated under the current policy, and under the new one only the people who
     entered cart recovery (the others' outcome cannot change);
   - a send-time change — the frequency cap at 12 h instead of 20 h: under the new one only the
     people whose send-time questions get another answer;
   - the worst case — the hub's idle timeout at 1 d, which no recorded question covers: everyone
     under both policies.
   For each: wall time (everything included: processes, servers, waves), people per second,
   simulations run, and the CPU seconds of this process and its children (shards, test servers).
3. Runs as many plain workflows (one no-op activity each, started and awaited the same way, over the
   same number of processes, each on its own test server) as the worst case ran simulations,
   and prints the ratio: how many plain workflow runs one simulation costs.

Target: 500 people in under a minute on 2 cores. Results go to bench/results/backtest.json.
The machine's other load moves the figures a lot; the CPU seconds say what the work itself cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from temporalio import activity, workflow  # noqa: E402
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest  # noqa: E402

TARGET_SECONDS = 60.0


@activity.defn(name="bench_noop")
async def noop(value: str) -> str:
    return value


@workflow.defn(name="bench_plain")
class Plain:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity("bench_noop", value, start_to_close_timeout=timedelta(seconds=30))


def cpu_seconds() -> float:
    """User+system CPU of this process and of its exited children (shard processes, and through them
    their test servers)."""
    mine = os.times()
    return mine.user + mine.system + mine.children_user + mine.children_system


async def plain_runs_shard(count: int) -> float:
    """`count` plain workflow runs on a test server of this shard's own, as a simulation shard runs
    its people: started with time locked, then awaited with time skipping. Wall seconds, server
    start-up included (a simulation shard pays it too)."""
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from simulation.simulator import quiet_runtime, simulation_converter, start_test_server

    began = time.perf_counter()
    env = await start_test_server()
    try:
        client = await Client.connect(
            env.client.service_client.config.target_host,
            namespace="default",
            data_converter=simulation_converter(),
            runtime=quiet_runtime(),
        )
        queue = f"plain-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[Plain],
            activities=[noop],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=max(1000, 2 * count),
        ):
            gate = asyncio.Semaphore(64)

            async def start(index: int):
                async with gate:
                    return await client.start_workflow(
                        "bench_plain", str(index), id=f"plain-{queue}-{index}", task_queue=queue
                    )

            handles = await asyncio.gather(*(start(i) for i in range(count)))
            await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            try:
                await asyncio.gather(*(handle.result() for handle in handles))
            finally:
                await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
    finally:
        await env.shutdown()
    return time.perf_counter() - began


def _plain_process(count: int) -> float:
    return asyncio.run(plain_runs_shard(count))


async def plain_runs(count: int, shards: int) -> float:
    """Wall seconds for `count` plain workflow runs over `shards` processes, each with its own server."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    sizes = [count // shards + (1 if i < count % shards else 0) for i in range(shards)]
    began = time.perf_counter()
    with ProcessPoolExecutor(shards, mp_context=multiprocessing.get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _plain_process, size) for size in sizes))
    return time.perf_counter() - began


async def main(args) -> dict:
    from rich.console import Console

    from bench.shoppers import populate
    from journeys.policy import load_policy, parse_policy
    from store.db import make_engine
    from store.migrate import upgrade
    from simulation.simulator import Simulator, backtest
    from simulation.views import render_backtest

    console = Console()
    folder = tempfile.mkdtemp(prefix="breadcrumb-backtest-")
    engine = make_engine(f"sqlite:///{folder}/bench.db")
    upgrade(engine)
    current = load_policy(REPO_ROOT / "journeys.toml")
    began = time.perf_counter()
    populate(engine, current, args.people, seed=args.seed)
    console.print(f"{args.people} shoppers written through the ingest core in {time.perf_counter() - began:.1f} s")
    data = current.model_dump(mode="json")
    data["journeys"]["cart_recovery"]["steps"][0]["delay"] = "4h"
    new = parse_policy(data, "first cart step after 4 h")
    shards = args.shards or os.cpu_count() or 1
    cap_change = parse_policy(
        {**current.model_dump(mode="json"), "min_hours_between_messages": 12}, "frequency cap 12 h"
    )
    idle_change = parse_policy({**current.model_dump(mode="json"), "hub_idle_timeout": "1d"}, "hub idle timeout 1 d")
    report: dict = {"people": args.people, "cpus": os.cpu_count(), "target_seconds": TARGET_SECONDS}
    for key, policy, name in (
        ("step_change", new, "4h first cart step"),
        ("cap_change", cap_change, "cap 12 h"),
        ("everyone_twice", idle_change, "hub idle timeout 1 d"),
    ):
        cpu_before = cpu_seconds()
        async with Simulator(engine) as simulator:
            result = await backtest(
                engine,
                policy,
                current,
                timedelta(days=30),
                new_name=name,
                current_name="journeys.toml",
                shards=shards,
                simulator=simulator,
            )
        cpu = cpu_seconds() - cpu_before
        console.rule(f"{key.replace('_', ' ')}: {name}")
        render_backtest(console, result)
        elapsed = result["elapsed_seconds"]
        verdict = "PASS" if elapsed < TARGET_SECONDS else "BELOW TARGET"
        console.print(
            f"\n[bold]{result['people']} people[/] ({result['simulations']} simulations, {result['reused']} "
            f"reused, {result['shards']} worker process(es), {os.cpu_count()} CPUs): {elapsed:.1f} s → "
            f"[bold]{result['people_per_second']} people/s[/], {result['simulations_per_second']} "
            f"simulations/s, {cpu:.0f} CPU s  [{verdict}: target < {TARGET_SECONDS:.0f} s]\n"
        )
        report[key] = {
            "elapsed_seconds": elapsed,
            "simulations": result["simulations"],
            "reused": result["reused"],
            "people_per_second": result["people_per_second"],
            "cpu_seconds": round(cpu, 1),
            "verdict": verdict,
            "shards": result["shards"],
            "backtest": result,
        }
    engine.dispose()
    full = report["everyone_twice"]
    cpu_before = cpu_seconds()
    plain = await plain_runs(full["simulations"], full["shards"])
    cpu_plain = cpu_seconds() - cpu_before
    ratio = full["elapsed_seconds"] / plain
    console.print(
        f"plain workflow runs (1 no-op activity each), {full['simulations']} over {full['shards']} "
        f"process(es) with a test server each: {plain:.1f} s ({cpu_plain:.0f} CPU s) → "
        f"{full['simulations'] / plain:.1f} runs/s; one simulation costs [bold]{ratio:.1f}×[/] a plain run "
        f"({full['cpu_seconds'] / cpu_plain:.1f}× in CPU)"
    )
    try:
        load = os.getloadavg()
        console.print(f"load average (1/5/15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        load = None
    report.update(
        plain_seconds=round(plain, 2),
        plain_cpu_seconds=round(cpu_plain, 1),
        ratio_to_plain=round(ratio, 2),
        load_average=load,
    )
    out = REPO_ROOT / "bench" / "results" / "backtest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=500)
    parser.add_argument("--shards", type=int, default=None, help="worker processes (default: one per CPU)")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
