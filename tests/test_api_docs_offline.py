"""`/docs` (Swagger UI) and `/redoc` work on a machine without internet: headless Chromium, with
every host name but 127.0.0.1 made unresolvable, renders each page from the served app and the DOM
lists the API's operations — and no request the page made left 127.0.0.1."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from browser import Chromium, chromium_binary
from conftest import ServedApp, settings_for

pytestmark = pytest.mark.skipif(
    chromium_binary() is None, reason="chromium is not installed (.ci/run installs it with apt-get)"
)
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)
ARTEFACTS = Path(tempfile.gettempdir()) / "breadcrumb-test-artefacts"


@pytest.fixture(scope="module")
def app():
    with tempfile.TemporaryDirectory() as folder, ServedApp(settings_for(f"sqlite:///{folder}/docs.db")) as served:
        yield served


def requested(browser: Chromium) -> list[str]:
    return [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]


def left_the_machine(browser: Chromium, origin: str) -> list[str]:
    """http(s) requests to anywhere but `origin` that were not refused by the page's CSP before
    they were sent (data: and blob: URLs never leave the browser)."""
    refused = {
        e["params"]["requestId"]
        for e in browser.events
        if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"
    }
    return [
        e["params"]["request"]["url"]
        for e in browser.events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["requestId"] not in refused
        and e["params"]["request"]["url"].startswith(("http:", "https:"))
        and not e["params"]["request"]["url"].startswith(origin)
    ]


def screenshot(browser: Chromium, name: str) -> None:
    """Kept for a person to look at; the assertions are on the DOM."""
    import base64

    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / name).write_bytes(base64.b64decode(browser.send("Page.captureScreenshot")["data"]))


def test_swagger_ui_renders_offline(app):
    with Chromium(flags=OFFLINE) as browser:
        browser.goto(f"{app.url}/docs")
        paths = browser.wait_for(
            "(() => { const found = [...document.querySelectorAll('.opblock-summary-path')]"
            ".map(e => e.getAttribute('data-path')); return found.length > 30 ? found : null; })()",
            what="Swagger UI listing the operations",
        )
        screenshot(browser, "docs-swagger-offline.png")
        urls, outside = requested(browser), left_the_machine(browser, app.url)
    assert {"/v1/identify", "/v1/batch", "/api/v1/customers/{customer_id}", "/admin/people"} <= set(paths), paths
    assert outside == []
    assert f"{app.url}/openapi.json" in urls and any("/docs/assets/swagger-ui-bundle.js" in u for u in urls)


def test_redoc_renders_offline(app):
    with Chromium(flags=OFFLINE) as browser:
        browser.goto(f"{app.url}/redoc")
        count = browser.wait_for(
            "(() => { const n = document.querySelectorAll('[data-section-id^=\"operation/\"]').length;"
            " return n > 30 ? n : 0; })()",
            what="ReDoc listing the operations",
        )
        text = browser.evaluate("document.body.innerText")
        screenshot(browser, "docs-redoc-offline.png")
        urls, outside = requested(browser), left_the_machine(browser, app.url)
    assert count > 30 and "/v1/identify" in text
    assert outside == []
    assert f"{app.url}/openapi.json" in urls and any("/docs/assets/redoc.standalone.js" in u for u in urls)
