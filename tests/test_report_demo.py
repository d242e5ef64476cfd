"""The reports on a demo shop, end to end: shoppers from `bench/shoppers.py` browse and identify
through the real Segment API, the real outbox dispatcher starts their hubs, the real hub and
journeys run on Temporal's time-skipping server and send through the real activities, and some
shoppers then buy (through the API, as the shop's server would). `breadcrumb report` and
`/admin/report` must render it — charts with data points — with figures that agree with each
other and with the store. On SQLite and PostgreSQL; a few seconds each."""

from __future__ import annotations

import json
import random
import re
import sys
from datetime import datetime, timedelta

from typer.testing import CliRunner

from conftest import ADMIN_TOKEN, settings_for
from journey_harness import Harness
from store import reports
from store.ingest import Incoming
from store.settings import REPO_ROOT
from worker.cli import app
from worker.worker import build_worker

sys.path.insert(0, str(REPO_ROOT))
from bench.shoppers import shopper  # noqa: E402

SHOPPERS = 30
SERVER = {"library": {"name": "analytics-python", "version": "2.3.3"}}


def segment_call(message: Incoming) -> dict:
    """A shopper's message as the storefront's Segment library sends it."""
    call = {
        "type": message.type,
        "anonymousId": message.anonymous_id,
        "messageId": message.message_id,
        "timestamp": message.timestamp.isoformat(),
        "context": message.context,
    }
    if message.type == "identify":
        return {**call, "traits": message.properties}
    if message.type == "track":
        call["event"] = message.original_name
    return {**call, "properties": message.properties}


def order_call(index: int, anonymous_id: str, cart_id: str | None, when: datetime, revenue: float) -> dict:
    """The shop's server reports the order (analytics-python), for the shopper's device."""
    return {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": anonymous_id,
        "messageId": f"order-{index}",
        "timestamp": when.isoformat(),
        "context": SERVER,
        "properties": {"order_id": f"demo-order-{index}", "cart_id": cart_id, "revenue": revenue},
    }


async def drive_shop(api, harness: Harness, env) -> datetime:
    """Browse and identify; half a day later (every journey's first message is out, quiet hours
    included) every other person who got a message buys, and one in three of the control group;
    then a week or more for every journey to finish. Returns when the last one did."""
    rng = random.Random(20250301)
    start = await env.get_current_time()
    # One a minute, up to now; `now` = the identify moment keeps what came before it (the rest is ours).
    shoppers = [
        shopper(rng, i, start - timedelta(minutes=SHOPPERS - i), start - timedelta(minutes=SHOPPERS - i))
        for i in range(SHOPPERS)
    ]
    response = api.segment("batch", {"batch": [segment_call(m) for messages in shoppers for m in messages]})
    assert response.status_code == 200, response.text
    while await harness.dispatch():
        pass
    await harness.skip(timedelta(hours=12))
    # email → (index, device, cart id if they filled one)
    devices = {
        m.properties["email"]: (
            i,
            m.anonymous_id,
            next((e.properties["cart_id"] for e in messages if "cart_id" in e.properties), None),
        )
        for i, messages in enumerate(shoppers)
        for m in messages
        if m.type == "identify"
    }
    messaged = harness.rows(
        "SELECT DISTINCT i.value FROM messages m JOIN identifiers i ON i.person_id = m.person_id "
        "AND i.kind = 'email' WHERE m.status = 'sent' ORDER BY i.value"
    )
    control = harness.rows(
        "SELECT DISTINCT i.value FROM journey_runs r JOIN identifiers i ON i.person_id = r.person_id "
        "AND i.kind = 'email' WHERE r.route = 'control' ORDER BY i.value"
    )
    buyers = [email for (email,) in messaged[::2] + control[::3]]
    now = await env.get_current_time()
    orders = [order_call(*devices[email], now, round(rng.uniform(20, 180), 2)) for email in buyers]
    assert api.server("batch", {"batch": orders}).status_code == 200
    while await harness.dispatch():
        pass
    await harness.skip(timedelta(days=8))
    for _ in range(50):  # the journeys' last activities run in real time
        if not harness.scalar("SELECT count(*) FROM journey_runs WHERE status = 'running'"):
            return await env.get_current_time()
        await harness.skip(timedelta(hours=12))
    raise AssertionError("journeys still running after a month")


def svg(html: str, svg_id: str) -> str:
    match = re.search(rf'<svg id="{svg_id}".*?</svg>', html, re.S)
    assert match, f"no <svg id={svg_id}>"
    return match.group(0)


def check_consistent(s: dict, db) -> None:
    """Figures that must agree whatever the shop did."""
    c, r, rec, m, funnel = s["conversion"], s["revenue"], s["recovery"], s["messages"], s["funnel"]
    assert c["identified"] == SHOPPERS == c["people"] + c["prior_purchasers"]
    for key in ("people", "still_in_window", "converted_so_far", "measured", "converted", "prior_purchasers"):
        assert sum(row[key] for row in c["by_route"]) == c[key], key
    assert c["measured"] + c["still_in_window"] == c["people"]
    assert all(
        row["converted"] <= row["measured"] and row["converted_so_far"] <= row["still_in_window"]
        for row in c["by_route"]
    )
    counts = [stage["count"] for stage in funnel]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0, funnel
    assert funnel[1]["count"] == c["identified"] and funnel[3]["count"] <= c["converted"] + c["converted_so_far"]

    assert 0 < r["attributed_revenue"] <= r["revenue"] and 0 < r["attributed_orders"] <= r["orders"]
    assert round(sum(j["revenue"] for j in r["by_journey"]), 2) == r["attributed_revenue"]
    assert round(sum(d["revenue"] for d in r["daily"]), 2) == r["attributed_revenue"]
    assert (
        sum(st["orders"] for st in r["by_step"]) == sum(j["orders"] for j in r["by_journey"]) == r["attributed_orders"]
    )
    assert r["recipients"] == funnel[2]["count"]  # everyone messaged identified in the period (all time)

    assert m["sent"] == db.scalar("SELECT count(*) FROM messages WHERE status = 'sent'") > 0
    for outcome in ("sent", "failed", "pending", "skipped", "deferred"):
        assert sum(row["count"] for row in m["by_reason"] if row["outcome"] == outcome) == m[outcome]
    assert all(0 <= j["recovered"] <= j["messaged"] for j in rec["by_journey"])
    assert rec["people_messaged"] == r["recipients"] and rec["people_recovered"] > 0
    cart = next(j for j in rec["by_journey"] if j["journey"] == "cart_recovery")
    assert (s["cart_recovery"]["carts_messaged"], s["cart_recovery"]["carts_recovered"]) == (
        cart["messaged"],
        cart["recovered"],
    )


async def test_reports_on_a_demo_shop(db, api, env):
    settings = settings_for(db.url)
    policy = settings.policy.model_copy(update={"holdout_percent": 25})
    settings.__dict__["policy"] = policy
    harness = Harness(env.client, db.engine, settings, policy, env=env)
    async with build_worker(env.client, db.engine, settings):
        finished = await drive_shop(api, harness, env)

    routes = dict(db.rows("SELECT route, count(DISTINCT person_id) FROM journey_runs GROUP BY route"))
    assert routes.get("cart_recovery") and routes.get("control") and routes.get("welcome"), routes

    result = CliRunner().invoke(app, ["report", "--db", db.url, "--json", "--config", str(REPO_ROOT / "journeys.toml")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    check_consistent(summary, db)

    tables = CliRunner().invoke(app, ["report", "--db", db.url]).output
    conversion = next(line for line in tables.splitlines() if line.strip().startswith("first-purchase conversion"))
    assert f"{summary['conversion']['converted']} of {summary['conversion']['measured']} people" in conversion
    assert f"{summary['revenue']['attributed_revenue']:,.2f}" in tables
    # Read today, most people are inside their 14 days; read after them, everyone is measured.
    later = reports.summary(db.engine, policy, now=finished + timedelta(days=15))
    check_consistent(later, db)
    assert (
        later["conversion"]["still_in_window"] == 0 and later["conversion"]["measured"] == later["conversion"]["people"]
    )
    # The early buyers inside their window then count as converted; nobody else bought since.
    assert (
        later["conversion"]["converted"]
        == summary["conversion"]["converted"] + summary["conversion"]["converted_so_far"]
    )
    tracking = CliRunner().invoke(app, ["report", "tracking", "--db", db.url])
    assert tracking.exit_code == 0 and "Identify lateness" in tracking.output

    page = api.http.get("/admin/report", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert page.status_code == 200, page.text
    bars = re.findall(
        r'<rect class="bar" data-day="[^"]+" data-journey="[^"]+" data-value="([^"]+)"', svg(page.text, "revenue-chart")
    )
    assert bars and round(sum(float(v) for v in bars), 2) == summary["revenue"]["attributed_revenue"]
    stages = re.findall(r'<path class="stage" data-stage="(\w+)" data-value="(\d+)"', svg(page.text, "funnel-chart"))
    assert [(name, int(n)) for name, n in stages] == [(f["stage"], f["count"]) for f in summary["funnel"]]
    buckets = re.findall(r'<rect class="bar" data-bucket="[^"]+" data-value="(\d+)"', svg(page.text, "lateness-chart"))
    late = reports.tracking(db.engine, policy)["identify_lateness"]
    assert buckets and sum(map(int, buckets)) == late["with_anonymous_activity"] > 0
