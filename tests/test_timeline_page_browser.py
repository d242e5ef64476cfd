"""The timeline page in a real browser: headless Chromium opens a signed link to Mia's page (a shopper
merged from two devices, with segments and message variants in the store) and the rows it shows are
every kind of line, in the order they happened, each event with its device; the page's own link to
older items opens the page before it."""

from __future__ import annotations

import json

import pytest

from api import report_link
from browser import Chromium, chromium_binary
from conftest import ADMIN_TOKEN, BACKENDS, ServedApp, settings_for
from timeline_story import MILESTONES, migrated_store, tell

pytestmark = pytest.mark.skipif(
    chromium_binary() is None, reason="chromium is not installed (.ci/run installs it with apt-get)"
)

ROWS = """Array.from(document.querySelectorAll('#timeline tr.item')).map(r => ({
  kind: r.dataset.kind, at: r.dataset.at, title: r.querySelector('.title').textContent,
  detail: r.querySelector('.detail').textContent, device: r.querySelector('.device').textContent.trim(),
  shown: r.getBoundingClientRect().height > 0}))"""


def lines(rows: list[dict]) -> list[tuple[str, str, str]]:
    """What a row says, without the device label (numbered per page)."""
    return [(row["at"], row["kind"], row["title"]) for row in rows]


def in_order(rows: list[dict], milestones: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pending = list(milestones)
    for row in rows:
        if pending and row["kind"] == pending[0][0] and pending[0][1] in row["title"]:
            pending.pop(0)
    return pending


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_timeline_page_shows_a_merged_shoppers_story_in_order(backend, tmp_path):
    with migrated_store(backend, tmp_path) as (engine, url):
        settings = settings_for(url)
        story = tell(engine, settings)
        with ServedApp(settings) as served, Chromium() as browser:
            path = f"/admin/people/{story.person_id}/page"
            browser.goto(report_link.sign(ADMIN_TOKEN, served.url, ttl=300, path=path))
            assert browser.evaluate("document.querySelector('h1').textContent") == "Why did they get this?"
            rows = browser.evaluate(ROWS)

            assert in_order(rows, MILESTONES) == [], json.dumps(rows, indent=1)
            assert all(row["shown"] for row in rows)
            assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
            devices = [(row["title"], row["device"]) for row in rows if row["kind"] == "event"]
            assert devices[:2] == [
                ("Product Viewed", "device 1"),
                ("Added to Cart (sent as Product Added)", "device 1"),
            ]
            assert ("Product Viewed", "device 2") in devices and ("Order Completed", "") not in devices
            purchase = next(row for row in rows if row["kind"] == "purchase")
            assert purchase["device"] == "shop server" and "after cart_recovery step 1" in purchase["detail"]
            message = next(row for row in rows if row["kind"] == "message")
            assert message["detail"] == "sent · variant B"
            guardrails = [row["detail"] for row in rows if row["kind"] == "guardrail"]
            assert guardrails == [
                "quiet hours 21:00-08:00",
                "min_hours_between_messages: step 2 (cart_recovery_2) not sent",
            ]

            # A short page links to the older items, signed afresh: the browser follows it.
            browser.goto(report_link.sign(ADMIN_TOKEN, served.url, ttl=300, path=path, limit=6))
            newest = lines(browser.evaluate(ROWS))
            assert newest == lines(rows)[-6:]
            browser.click_and_wait_for_load("#older")
            older = lines(browser.evaluate(ROWS))
            earlier = lines(rows)[:-6]
            expected = earlier[-6:]
            if len(earlier) > 6 and earlier[-7][0] == expected[0][0]:
                # Never one instant split between pages (identifiers attached together share theirs).
                expected = [line for line in expected if line[0] != expected[0][0]]
            assert older == expected
