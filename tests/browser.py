"""A tiny Chrome DevTools Protocol client for tests: Debian's headless Chromium, one page, over a
websocket. Enough to navigate, click, type and evaluate JavaScript — no Playwright, no downloads.

    with Chromium() as browser:
        browser.goto("http://127.0.0.1:8000/demo/store?writeKey=…")
        browser.click_and_wait_for_load("a.product-link")
        browser.evaluate("breadcrumb.anonymousId()")
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(AssertionError):
    pass


class Chromium:
    def __init__(self, binary: str | None = None, timeout: float = 20.0, flags: tuple[str, ...] = ()) -> None:
        self.binary = binary or chromium_binary()
        self.flags = flags  # beside FLAGS, e.g. a --host-resolver-rules that cuts the page off the internet
        if not self.binary:
            raise BrowserError("chromium is not installed (apt-get install -y chromium)")
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="breadcrumb-chromium-"))
        self.process: subprocess.Popen | None = None
        self.ws = None
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.console: list[str] = []

    # -- life --------------------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        self.process = subprocess.Popen(
            [self.binary, *FLAGS, *self.flags, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with status {self.process.returncode} at start")
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split("\n")[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = next(t for t in targets if t.get("type") == "page")
        self._connection = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout)
        self.ws = self._connection.__enter__()
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.ws is not None:
                self._connection.__exit__(None, None, None)
        finally:
            if self.process is not None and self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                    self.process.wait(timeout=5)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------------

    def _receive(self, timeout: float) -> dict:
        message = json.loads(self.ws.recv(timeout=timeout))
        if message.get("method") == "Runtime.consoleAPICalled":
            args = message["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif message.get("method") == "Runtime.exceptionThrown":
            details = message["params"]["exceptionDetails"]
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        return message

    def send(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(max(0.01, deadline - time.monotonic()))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for index, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no {method} within {timeout or self.timeout:.0f} s; console: {self.console[-5:]}")
            try:
                message = self._receive(remaining)
            except TimeoutError:
                continue
            if "method" in message:
                self.events.append(message)

    # -- what a test does ---------------------------------------------------------------------------

    def evaluate(self, expression: str, await_promise: bool = True):
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=await_promise, returnByValue=True, userGesture=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(
                f"{expression[:80]!r} threw: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def click(self, selector: str) -> None:
        found = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) return false; el.scrollIntoView(); el.click(); return true; }})()"
        )
        if not found:
            raise BrowserError(f"nothing matches {selector}")

    def click_and_wait_for_load(self, selector: str) -> None:
        self.events.clear()
        self.click(selector)
        self.wait_for_event("Page.loadEventFired")

    def type(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def wait_for(self, expression: str, timeout: float | None = None, what: str | None = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what or expression}; console: {self.console[-5:]}")
            time.sleep(0.1)
