"""What a newcomer runs first, run the way they run it: `breadcrumb dev` as a subprocess (free
ports, a temporary working directory and database, `examples/journeys.fast.toml`), `breadcrumb demo`
against it as another subprocess (and stopped with Ctrl-C), the demo storefront in headless Chromium
(the hub it starts checked in the stack's Temporal; the anonymous id shared across two *.localhost
subdomains), and Ctrl-C (SIGINT) — after which no process the stack started may be left.

The dev stack's generated keys are read from its banner, as a person would copy them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionDescription

from browser import Chromium, chromium_binary
from conftest import free_port
from store.settings import REPO_ROOT, Settings
from worker.demo import plan
from dispatch.temporal import connect
from workflows import search

FAST = REPO_ROOT / "examples" / "journeys.fast.toml"
BIN = Path(sys.executable).parent
SEED, SHOPPERS = 11, 7

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------------------------------------------
# processes, seen through /proc
# --------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process, None when it is gone (zombies count as gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
    return None if state in ("Z", "X") else (state, ppid, pgid)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        info = _stat(pid)
        if info:
            children.setdefault(info[1], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive_in_groups(groups: set[int]) -> set[int]:
    return {pid for pid in _all_pids() if (info := _stat(pid)) and info[2] in groups}


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------------
# the stack
# --------------------------------------------------------------------------------------------------


@dataclass
class DevStack:
    process: subprocess.Popen
    api: str
    workdir: Path
    temporal_port: int
    lines: list[str] = field(default_factory=list)
    write_key: str = ""
    admin_token: str = ""
    payload_keys: str = ""
    children: set[int] = field(default_factory=set)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def admin(self, path: str, **params) -> httpx.Response:
        return httpx.get(
            f"{self.api}/admin/{path}",
            params=params,
            timeout=10,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    def person(self, **query) -> dict | None:
        response = self.admin("people", **query)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()


def _environment() -> dict[str, str]:
    """The caller's environment without any BREADCRUMB_* setting, so the stack makes its own keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def start_stack(workdir: Path, extra: list[str] = ()) -> DevStack:
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            str(BIN / "breadcrumb"),
            "dev",
            "--config",
            str(FAST),
            "--db",
            f"sqlite:///{workdir / 'breadcrumb.db'}",
            "--data-dir",
            str(workdir / "data"),
            "--api-port",
            str(api_port),
            "--temporal-port",
            str(temporal_port),
            "--ui-port",
            str(ui_port),
            *extra,
        ],
        cwd=workdir,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    stack = DevStack(process, f"http://127.0.0.1:{api_port}", workdir, temporal_port)

    def read() -> None:
        for line in process.stdout:
            stack.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 90
    while "Codec login" not in stack.output:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"breadcrumb dev did not come up:\n{stack.output[-4000:]}")
        time.sleep(0.1)
    time.sleep(0.2)  # the rest of the banner
    stack.write_key = re.search(r"Write key\s+(\S+)", stack.output).group(1)
    stack.admin_token = re.search(r"Admin token\s+(\S+)", stack.output).group(1)
    stack.payload_keys = re.search(r"Payload keys\s+(\S+)", stack.output).group(1)
    assert httpx.get(f"{stack.api}/healthz", timeout=5).json() == {"status": "ok"}
    stack.children = descendants(process.pid)
    return stack


def kill_leftovers(stack: DevStack) -> None:
    """Test hygiene only (a failed test must not leak processes); the assertions come first."""
    for pid in stack.children | {stack.process.pid}:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if stack.process.poll() is None:
        stack.process.kill()
    stack.process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = time.monotonic()
    dev = start_stack(tmp_path_factory.mktemp("devstack"))
    print(f"\nbreadcrumb dev up in {time.monotonic() - started:.1f}s at {dev.api}")
    try:
        yield dev
    finally:
        kill_leftovers(dev)


# --------------------------------------------------------------------------------------------------
# the tests (in this order: the last one stops the stack)
# --------------------------------------------------------------------------------------------------


def test_banner_says_where_everything_is(stack):
    out = stack.output
    for needle in (
        "API docs",
        "/docs",
        "Temporal UI",
        "Demo store",
        f"/demo/store?writeKey={stack.write_key}",
        "breadcrumb demo",
    ):
        assert needle in out, f"banner lacks {needle!r}:\n{out[-3000:]}"
    assert stack.write_key.startswith("wk_dev_") and stack.admin_token.startswith("admin_dev_")
    assert re.search(r"Email links\s+" + re.escape(stack.api), out), "message links follow --api-port"
    # The banner waits for the worker's ready line, so all three have spoken before it (this was flaky
    # while the banner came as soon as the API answered, with the worker still importing).
    banner = next(i for i, line in enumerate(stack.lines) if "Breadcrumb dev stack" in line)
    for prefix in ("temporal |", "worker |", "api |"):
        assert any(line.lstrip().startswith(prefix) for line in stack.lines[:banner]), f"no output prefixed {prefix!r}"
    # The commands to paste are exact for this stack: its Temporal port, the venv's bin on PATH.
    assert f"temporal workflow list --address 127.0.0.1:{stack.temporal_port} --query" in out, out[-3000:]
    assert f"export PATH={BIN}:$PATH" in out
    assert json.loads((stack.workdir / "data" / "stack.json").read_text())["journeys"] == str(FAST)
    names = {_command_line(pid) for pid in stack.children}
    assert any("temporal server start-dev" in n for n in names), names
    assert any("worker.cli worker" in n for n in names) and any("worker.cli api" in n for n in names), names
    assert (stack.workdir / "data" / "temporal.db").exists()
    # Payloads are encrypted with a development key kept in the data dir; the UI decodes through the API.
    assert (stack.workdir / "data" / "payload-keys").read_text().strip() == stack.payload_keys
    assert any(f"--ui-codec-endpoint {stack.api}/codec" in n for n in names), names
    login = re.search(r"Codec login\s+(\S+)", out).group(1)
    with httpx.Client(timeout=10) as browser:
        assert browser.get(login).status_code == 200
        assert browser.post(f"{stack.api}/codec/decode", json={"payloads": []}).json() == {"payloads": []}
    assert httpx.get(f"{stack.api}/docs", timeout=5).status_code == 200


def test_demo_plays_and_every_shopper_gets_their_messages(stack, tmp_path):
    result_file = tmp_path / "demo.json"
    env = _environment() | {"BREADCRUMB_WRITE_KEYS": stack.write_key, "BREADCRUMB_ADMIN_TOKEN": stack.admin_token}
    started = time.monotonic()
    demo = subprocess.run(
        [
            str(BIN / "breadcrumb"),
            "demo",
            "--api",
            stack.api,
            "--shoppers",
            str(SHOPPERS),
            "--seed",
            str(SEED),
            "--wait",
            "75",
            "--json",
            str(result_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    print(f"\nbreadcrumb demo ({SHOPPERS} shoppers) took {elapsed:.1f}s")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert elapsed < 60, f"a full demo on the fast config should finish in under a minute, took {elapsed:.0f}s"
    assert "Breadcrumb demo" in demo.stdout and "Messages sent" in demo.stdout, demo.stdout[-3000:]
    report = json.loads(result_file.read_text())
    assert report["seed"] == SEED and len(report["shoppers"]) == SHOPPERS

    # Independently of the demo's own report: what the admin API says about each planned shopper.
    for shopper in plan(SEED, SHOPPERS):
        persona = shopper.persona
        person = stack.person(email=shopper.email)
        assert person is not None, f"{shopper.email} ({persona.key}) was never merged into a person"
        routes = [j["route"] for j in person["journeys"]]
        assert routes and persona.accepts(routes[-1]), f"{persona.key}: routes {routes}, expected {persona.route}"
        sent = [m for m in stack.admin("messages", person_id=person["person_id"]).json() if m["status"] == "sent"]
        low, high = persona.messages
        assert low <= len(sent) <= high, f"{persona.key}: {len(sent)} messages sent, expected {low}–{high}: {sent}"
        if sent:
            assert {m["journey"] for m in sent} == {persona.route}
            assert all(m["recipient"] == shopper.email for m in sent)
            assert [m["step"] for m in sent] == sorted({m["step"] for m in sent}), "each step once, in order"
        purchased = any(e["name"] == "Order Completed" for e in person["events"])
        assert purchased == (persona.buys != "never"), f"{persona.key}: purchase {purchased}"
        devices = {e["anonymous_id"] for e in person["events"] if e["anonymous_id"]}
        used = {c.body["anonymousId"] for c in shopper.calls}
        assert devices == used, f"{persona.key}: events of devices {used} should all be merged, got {devices}"
        assert set(person["anonymous_ids"]) >= used
        if persona.key == "two_devices":
            assert len(used) == 2
        summary = next(s for s in report["shoppers"] if s["email"] == shopper.email)
        assert summary["as_expected"], summary

    # Message links point at this stack's API port (never the default 8000), and they work.
    sent = [m for m in stack.admin("messages").json() if m["status"] == "sent"]
    message = stack.admin(f"messages/{sent[0]['message_id']}").json()
    assert message["unsubscribe_url"].startswith(f"{stack.api}/u/"), message["unsubscribe_url"]
    assert message["unsubscribe_url"] in message["text"]
    assert httpx.get(message["unsubscribe_url"], timeout=10).status_code == 200


def test_ctrl_c_stops_the_demo_with_the_table_so_far(stack):
    """Ctrl-C while the demo waits for the journeys: the table of what there is, exit status 130."""
    seed = 9  # one `checkout` shopper: three messages 2 s, 3 s and 3 s apart, so still running at Ctrl-C
    (shopper,) = plan(seed, 1)
    env = _environment() | {"BREADCRUMB_WRITE_KEYS": stack.write_key, "BREADCRUMB_ADMIN_TOKEN": stack.admin_token}
    demo = subprocess.Popen(
        [str(BIN / "breadcrumb"), "demo", "--api", stack.api, "--shoppers", "1", "--seed", str(seed), "--wait", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ((person := stack.person(email=shopper.email)) and len(person["events"]) == len(shopper.calls)):
            assert demo.poll() is None and time.monotonic() < deadline, "the demo did not play its shopper"
            time.sleep(0.2)
        time.sleep(0.5)  # the last call's answer is back: the demo is waiting for the journey
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, out[-3000:]
    assert f"Breadcrumb demo — seed {seed}" in out and shopper.email in out, out[-3000:]
    assert "Interrupted" in out and "Traceback" not in out, out[-3000:]


def _store_url(stack: DevStack, path: str = "") -> str:
    return f"{stack.api}/demo/store{path}?writeKey={stack.write_key}"


def _need_chromium() -> None:
    if chromium_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI always runs this")


def _describe(stack: DevStack, workflow_id: str) -> WorkflowExecutionDescription:
    """What the dev stack's Temporal says about a workflow, as the Temporal UI would show it."""

    async def describe() -> WorkflowExecutionDescription:
        client = await connect(
            Settings(temporal_address=f"127.0.0.1:{stack.temporal_port}", payload_keys=stack.payload_keys)
        )
        return await client.get_workflow_handle(workflow_id).describe()

    return asyncio.run(describe())


def test_demo_store_in_a_real_browser(stack):
    _need_chromium()
    email = "browser.shopper@example.com"
    with Chromium() as browser:
        browser.goto(_store_url(stack))
        home_id = browser.wait_for("window.breadcrumb && breadcrumb.anonymousId()", what="breadcrumb.js")
        cookie = browser.evaluate("document.cookie")
        assert f"bc_anonymous_id={home_id}" in cookie
        assert browser.evaluate("localStorage.getItem('bc.anonymousId')") == home_id
        assert stack.admin_token not in browser.evaluate("document.documentElement.outerHTML")

        # Page two: the first product, from the home page's grid.
        browser.click_and_wait_for_load("a.product-link[data-sku='SER-NIGHT-30']")
        assert browser.wait_for("window.breadcrumb && breadcrumb.anonymousId()") == home_id, "same id on every page"
        browser.click("#add-to-cart")
        browser.wait_for("document.body.getAttribute('data-added') === '1'", what="Added to Cart sent")
        assert browser.evaluate("document.getElementById('cart-count').textContent") == "1"

        # Page three: a second product, through its collection page; the email modal opens by itself.
        browser.click_and_wait_for_load("a[href*='/collections/moisturisers']")
        browser.click_and_wait_for_load("a.product-link[data-sku='MOI-BARR-50']")
        assert browser.wait_for("window.breadcrumb && breadcrumb.anonymousId()") == home_id
        browser.click("#add-to-cart")
        browser.wait_for("document.body.getAttribute('data-added') === '1'", what="second Added to Cart sent")
        if browser.evaluate("document.getElementById('email-modal').hidden"):
            browser.click("#offer-button")
        browser.type("#email-input", email)
        browser.click("#email-submit")
        browser.wait_for("document.body.getAttribute('data-email-captured') === 'true'", what="identify sent")
        browser.wait_for("breadcrumb.flush().then(() => !localStorage.getItem('bc.queue'))", what="queue drained")
        browser_errors = [line for line in browser.console if line.startswith("exception")]
        assert not browser_errors, browser_errors

    # The person: every anonymous event of this browser merged into it, then the hub routed it.
    deadline = time.monotonic() + 30
    person = None
    while time.monotonic() < deadline:
        person = stack.person(email=email)
        if person and person["journeys"]:
            break
        time.sleep(0.3)
    assert person is not None, "the email capture did not create a person"
    assert person["anonymous_ids"] == [home_id]
    events = person["events"]
    assert {e["anonymous_id"] for e in events} == {home_id}
    pages = [e["properties"].get("path") for e in events if e["name"] == "Page Viewed"]
    assert (
        "/demo/store" in pages
        and "/demo/store/products/SER-NIGHT-30" in pages
        and "/demo/store/products/MOI-BARR-50" in pages
    ), pages
    viewed = [e["properties"]["sku"] for e in events if e["name"] == "Product Viewed"]
    assert viewed == ["SER-NIGHT-30", "MOI-BARR-50"]
    assert any(e["name"] == "Collection Viewed" for e in events)
    carts = [e["properties"] for e in events if e["name"] == "Added to Cart"]
    assert [c["sku"] for c in carts] == ["SER-NIGHT-30", "MOI-BARR-50"]
    assert len({c["cart_id"] for c in carts}) == 1 and all(c["price"] > 0 for c in carts)
    assert any(e["name"] == "Email Captured" for e in events)
    for event in events:
        assert len([e for e in events if e.get("message_id") == event.get("message_id")]) == 1, "no duplicates"
    assert person["journeys"], "the hub routed the person"
    journey = person["journeys"][0]
    assert journey["route"] == "cart_recovery", person["journeys"]  # 64 + 42 ≥ 50

    # The hub is a workflow in Temporal, findable by its search attributes, and it started the journey.
    hub = _describe(stack, f"hub-{person['person_id']}")
    assert hub.workflow_type == "hub"
    assert hub.typed_search_attributes.get(search.PERSON_ID) == person["person_id"]
    assert hub.typed_search_attributes.get(search.ROUTE) == "cart_recovery"
    child = _describe(stack, journey["workflow_id"])
    assert child.workflow_type == "cart_recovery" and child.parent_id == hub.id


def test_the_anonymous_id_is_shared_across_subdomains(stack):
    """The snippet's cookie domain: the shop on a.shop.localhost and b.shop.localhost (Chromium
    resolves *.localhost to this machine) is one shopper. localStorage is per origin, so on b only the
    cookie can carry a's id. Without a cookie domain, or with one the browser refuses (a top-level
    `.localhost`, like `.com`), each subdomain keeps its own id in a host-only cookie."""
    _need_chromium()
    port = stack.api.rsplit(":", 1)[1]

    def ids(cookie_domain: str | None, then=None) -> tuple[str, str]:
        query = f"?writeKey={stack.write_key}" + (f"&cookieDomain={cookie_domain}" if cookie_domain else "")
        with Chromium() as browser:
            browser.goto(f"http://a.shop.localhost:{port}/demo/store{query}")
            first = browser.wait_for("window.breadcrumb && breadcrumb.anonymousId()", what="breadcrumb.js on a")
            browser.goto(f"http://b.shop.localhost:{port}/demo/store/products/SER-NIGHT-30{query}")
            second = browser.wait_for("window.breadcrumb && breadcrumb.anonymousId()", what="breadcrumb.js on b")
            if then:
                then(browser)
        return first, second

    email = "two.subdomains@example.com"

    def identify(browser: Chromium) -> None:
        browser.evaluate(f"breadcrumb.identify({{email: {json.dumps(email)}}})")
        browser.wait_for("breadcrumb.flush().then(() => !localStorage.getItem('bc.queue'))", what="queue drained")

    on_a, on_b = ids(".shop.localhost", then=identify)
    assert on_a == on_b, "the cookie on .shop.localhost carries the id from a. to b."
    separate = ids(None)
    assert separate[0] != separate[1], "without a cookie domain each subdomain has its own id"
    refused = ids(".localhost")
    assert refused[0] and refused[0] != refused[1], "a refused cookie domain falls back to a host-only cookie"

    person = stack.person(email=email)
    assert person is not None and person["anonymous_ids"] == [on_a]
    hosts = {httpx.URL(e["properties"]["url"]).host for e in person["events"] if e["name"] == "Page Viewed"}
    assert hosts == {"a.shop.localhost", "b.shop.localhost"}, hosts


def test_sigint_stops_every_child(stack):
    children = descendants(stack.process.pid)
    assert len(children) >= 3, [_command_line(p) for p in children]
    groups = {info[2] for pid in children if (info := _stat(pid))}
    stack.process.send_signal(signal.SIGINT)
    try:
        code = stack.process.wait(timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"breadcrumb dev did not exit after SIGINT:\n{stack.output[-3000:]}")
    time.sleep(0.3)
    survivors = {pid for pid in children if _stat(pid)} | alive_in_groups(groups)
    assert not survivors, f"orphans after Ctrl-C: {[_command_line(p) for p in survivors]}"
    assert code == 0, stack.output[-3000:]
    assert "all stopped" in stack.output


def test_a_crashed_child_stops_the_whole_stack(tmp_path):
    dev = start_stack(tmp_path)
    try:
        worker = next(pid for pid in dev.children if "worker.cli worker" in _command_line(pid))
        groups = {info[2] for pid in dev.children if (info := _stat(pid))}
        os.kill(worker, signal.SIGKILL)
        code = dev.process.wait(timeout=45)
        time.sleep(0.3)
        assert code == 1, dev.output[-3000:]
        assert "worker (status -9) exited; stopping the stack" in dev.output
        survivors = {pid for pid in dev.children if _stat(pid)} | alive_in_groups(groups)
        assert not survivors, f"left running: {[_command_line(p) for p in survivors]}"
    finally:
        kill_leftovers(dev)


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                str(BIN / "breadcrumb"),
                "dev",
                "--api-port",
                str(port),
                "--temporal-port",
                str(free_port()),
                "--ui-port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "data"),
                "--db",
                f"sqlite:///{tmp_path / 'x.db'}",
            ],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stdout and "--api-port" in result.stdout
    assert not (tmp_path / "data" / "temporal.db").exists(), "nothing started"


def test_killing_breadcrumb_dev_itself_takes_its_children_along(tmp_path):
    """SIGKILL cannot be handled; the kernel's parent-death signal (PR_SET_PDEATHSIG) stops the children."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    process = subprocess.Popen(
        [
            str(BIN / "breadcrumb"),
            "dev",
            "--config",
            str(FAST),
            "--db",
            f"sqlite:///{tmp_path / 'b.db'}",
            "--data-dir",
            str(tmp_path / "data"),
            "--api-port",
            str(free_port()),
            "--temporal-port",
            str(free_port()),
            "--ui-port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            children = descendants(process.pid)
            names = " | ".join(_command_line(pid) for pid in children)
            if "start-dev" in names and "worker.cli worker" in names and "worker.cli api" in names:
                break
            assert process.poll() is None, "breadcrumb dev exited before starting its children"
            time.sleep(0.2)
        else:
            pytest.fail("breadcrumb dev did not start its three children")
        groups = {info[2] for pid in children if (info := _stat(pid))}
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while ({pid for pid in children if _stat(pid)} | alive_in_groups(groups)) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = {pid for pid in children if _stat(pid)} | alive_in_groups(groups)
        assert not survivors, f"orphans after SIGKILL: {[_command_line(p) for p in survivors]}"
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if process.poll() is None:
            process.kill()


def test_the_temporal_dev_server_keeps_its_state_where_asked(tmp_path, capsys):
    """`wal` (the default: the file in WAL mode, surviving restarts — tests/test_faults.py restarts the
    server on it under traffic), `file` (the server's own journal), `memory`; anything else is refused
    before anything starts."""
    from worker.devstack import DevStack, StackError, temporal_store_args

    database = tmp_path / "temporal.db"
    assert temporal_store_args(database) == [
        "--db-filename",
        str(database),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]
    assert temporal_store_args(database, "file") == ["--db-filename", str(database)]
    assert temporal_store_args(database, "memory") == []
    with pytest.raises(StackError):
        DevStack(data_dir=tmp_path / "data", temporal_store="disk")
    assert "temporal store 'disk': choose one of wal, file, memory" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()
