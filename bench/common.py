"""What every benchmark needs: a fresh database, a free port, and the API as its own uvicorn process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import httpx

from temporalio.converter import DataConverter

from store.db import scratch_database
from dispatch.codec import PayloadKeys, data_converter

REPO_ROOT = Path(__file__).resolve().parent.parent
# One payload key per bench run: the API it starts and every client and worker here encrypt with it,
# as in production (`bench_converter()`).
BENCH_PAYLOAD_KEYS = PayloadKeys.generate("bench").render()


def bench_converter() -> DataConverter:
    return data_converter(PayloadKeys.parse(BENCH_PAYLOAD_KEYS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_database(workdir: Path, postgres_url: str | None, prefix: str = "breadcrumb_bench") -> Iterator[str]:
    """A SQLite file in `workdir`, or a new PostgreSQL database on `postgres_url`'s server (dropped after)."""
    if not postgres_url:
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    with scratch_database(postgres_url, prefix) as url:
        yield url


class ApiProcess:
    """`uvicorn --factory api.app:create_app`, one worker, configured by BREADCRUMB_* variables."""

    def __init__(self, database_url: str, log: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.env = {
            **os.environ,
            "BREADCRUMB_DATABASE_URL": database_url,
            "BREADCRUMB_AUTO_MIGRATE": "false",
            "BREADCRUMB_PAYLOAD_KEYS": BENCH_PAYLOAD_KEYS,
            **{f"BREADCRUMB_{key.upper()}": value for key, value in settings.items()},
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ApiProcess:
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                os.environ.get("BENCH_API_WORKERS", "1"),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /healthz in 60 s:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
