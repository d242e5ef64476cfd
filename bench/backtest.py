#!/usr/bin/env python3
"""Backtest benchmark: people simulated per second, against plain workflow runs on the same server.

Run with `.venv/bin/python bench/backtest.py [--people 500] [--shards N] [--seed S]`.

1. Migrates a fresh SQLite database in a temporary folder and writes `--people` shoppers identified
   over the last 28 days through the real ingest core (`bench/shoppers.py`: browsing, carts, later
   returns, purchases before and after identifying, several timezones).
2. Starts one time-skipping test server and runs `breadcrumb backtest`'s code on it: everyone under
   `journeys.toml` and under the same policy with a 4 h first cart-recovery delay, both at once, over
   `--shards` worker processes (default: one per CPU). Prints the wall time, people per second
   (each person simulated under both policies) and simulations per second, and the CPU time of this
   process, its worker processes and the test server.
3. On the same server, runs as many plain workflows (one no-op activity each, started and awaited
   the same way, over the same number of processes) as there were simulations, and prints the
   ratio: how many plain workflow runs one simulation costs.

Target: 500 people in under a minute on 2 cores. Results go to bench/results/backtest.json.
The machine's other load moves the figures a lot; the CPU seconds say what the work itself cost.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
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


def cpu_seconds() -> dict[str, float]:
    """User+system CPU of this process and of each child process (worker shards, the test server)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    mine = os.times()
    found = {"bench process": mine.user + mine.system,
             "worker processes (exited)": mine.children_user + mine.children_system}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            raw = open(path).read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[1]) == me:
            found[f"{name} {path.split('/')[2]}"] = (int(fields[11]) + int(fields[12])) / tick
    return found


async def plain_runs_shard(target: str, namespace: str, count: int, ready, progress) -> None:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from worker.simulate import quiet_runtime

    client = await Client.connect(target, namespace=namespace, data_converter=pydantic_data_converter,
                                  runtime=quiet_runtime())
    queue = f"plain-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Plain], activities=[noop],
                      workflow_runner=UnsandboxedWorkflowRunner(), max_cached_workflows=max(1000, 2 * count)):
        gate = asyncio.Semaphore(64)

        async def start(index: int):
            async with gate:
                return await client.start_workflow("bench_plain", str(index), id=f"plain-{queue}-{index}",
                                                   task_queue=queue)

        handles = await asyncio.gather(*(start(i) for i in range(count)))
        await ready()

        async def finish(handle) -> None:
            await handle.result()
            progress(1)

        await asyncio.gather(*(finish(h) for h in handles))


def _plain_process(target: str, namespace: str, count: int, messages, go) -> None:
    import traceback

    async def main() -> None:
        async def ready() -> None:
            messages.put(("ready", None))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)

        await plain_runs_shard(target, namespace, count, ready, lambda _: None)

    try:
        asyncio.run(main())
        messages.put(("done", None))
    except BaseException:  # noqa: BLE001
        messages.put(("error", traceback.format_exc()))


async def plain_runs(simulator, count: int, shards: int) -> float:
    """Wall seconds for `count` plain workflow runs on the simulator's server, over `shards` processes."""
    import multiprocessing

    env = simulator.env
    target = env.client.service_client.config.target_host
    service = env.client.test_service
    began = time.perf_counter()
    if shards <= 1:
        async def unlock() -> None:
            await service.unlock_time_skipping(UnlockTimeSkippingRequest())

        try:
            await plain_runs_shard(target, "default", count, unlock, lambda _: None)
        finally:
            await service.lock_time_skipping(LockTimeSkippingRequest())
        return time.perf_counter() - began
    context = multiprocessing.get_context("spawn")
    messages, go = context.Queue(), context.Event()
    sizes = [count // shards + (1 if i < count % shards else 0) for i in range(shards)]
    processes = [context.Process(target=_plain_process, args=(target, "default", size, messages, go), daemon=True)
                 for size in sizes]
    for process in processes:
        process.start()
    loop = asyncio.get_running_loop()
    ready = done = 0
    try:
        while done < shards:
            kind, payload = await loop.run_in_executor(None, messages.get)
            if kind == "error":
                raise RuntimeError(payload)
            if kind == "ready":
                ready += 1
                if ready == shards:
                    await service.unlock_time_skipping(UnlockTimeSkippingRequest())
                    go.set()
            else:
                done += 1
    finally:
        await service.lock_time_skipping(LockTimeSkippingRequest())
        for process in processes:
            process.join(timeout=10)
    return time.perf_counter() - began


async def main(args) -> dict:
    from rich.console import Console

    from bench.shoppers import populate
    from journeys.policy import load_policy, parse_policy
    from store.db import make_engine
    from store.migrate import upgrade
    from worker.simulate import Simulator, backtest
    from worker.simulate_view import render_backtest

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
    async with Simulator(engine) as simulator:
        cpu_before = cpu_seconds()
        result = await backtest(engine, new, current, timedelta(days=30), new_name="4h first cart step",
                                current_name="journeys.toml", shards=shards, simulator=simulator)
        cpu_sim = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_seconds().items()}
        simulations = 2 * result["people"]
        cpu_before = cpu_seconds()
        plain = await plain_runs(simulator, simulations, result["shards"])
        cpu_plain = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_seconds().items()}
    engine.dispose()
    render_backtest(console, result)
    elapsed = result["elapsed_seconds"]
    ratio = elapsed / plain if plain else None
    verdict = "PASS" if elapsed < TARGET_SECONDS else "BELOW TARGET"
    console.print(f"\n[bold]{result['people']} people[/] ({simulations} simulations, {result['shards']} worker "
                  f"process(es), {os.cpu_count()} CPUs): {elapsed:.1f} s → [bold]{result['people_per_second']} "
                  f"people/s[/], {result['simulations_per_second']} simulations/s  [{verdict}: target < "
                  f"{TARGET_SECONDS:.0f} s]")
    console.print(f"plain workflow runs (1 no-op activity each), same count, same server: {plain:.1f} s → "
                  f"{simulations / plain:.1f} runs/s; one simulation costs [bold]{ratio:.1f}×[/] a plain run")
    console.print(f"CPU seconds during the backtest: {cpu_sim}")
    console.print(f"CPU seconds during the plain runs: {cpu_plain}")
    try:
        load = os.getloadavg()
        console.print(f"load average (1/5/15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        load = None
    report = {"people": result["people"], "simulations": simulations, "shards": result["shards"],
              "elapsed_seconds": elapsed, "people_per_second": result["people_per_second"],
              "simulations_per_second": result["simulations_per_second"], "plain_seconds": round(plain, 2),
              "ratio_to_plain": round(ratio, 2) if ratio else None, "target_seconds": TARGET_SECONDS,
              "verdict": verdict, "cpu_seconds_backtest": cpu_sim, "cpu_seconds_plain": cpu_plain,
              "load_average": load, "cpus": os.cpu_count(), "backtest": result}
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
