"""Report endpoints and the report page over real HTTP, on SQLite and PostgreSQL: Bearer auth,
signed links, figures, charts with data points, escaping."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from api import report_link
from conftest import ADMIN_TOKEN, WRITE_KEY
from report_history import SINCE, UNTIL, at, march

PERIOD = {"since": SINCE, "until": UNTIL}


@pytest.fixture
def history(db):
    h = march()
    # Something user-provided that must come out escaped: a journey name, a failure reason.
    h.message("G", "<script>alert('j')</script>", 1, at(9, 10, 30))
    h.message("H", "cart_recovery", 3, at(9, 13), status="failed", reason="<img src=x onerror=alert(1)> bounced")
    h.insert(db.engine)
    return h


def bearer(token: str = ADMIN_TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_summary_and_tracking_json(api, history):
    r = api.http.get("/admin/reports/summary", params=PERIOD, headers=bearer())
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["conversion"]["people"], s["conversion"]["converted"], s["conversion"]["rate"]) == (14, 7, 0.5)
    assert s["settings"]["conversion_days"] == 14
    # G's last touch is now the extra message (9 March 10:30, after the cart message of 8 March and
    # before the order at 11:00), so G's 200 moves from cart recovery to that journey.
    journeys = {j["journey"]: j for j in s["revenue"]["by_journey"]}
    assert journeys["<script>alert('j')</script>"]["revenue"] == 200.0
    assert journeys["cart_recovery"]["revenue"] == 260.0
    assert s["cart_recovery"]["rate"] == round(4 / 6, 4)
    # Recovery per journey (tests/test_reports.py), and the extra journey: G ordered 30 min after it.
    recovery = {j["journey"]: (j["messaged"], j["recovered"]) for j in s["recovery"]["by_journey"]}
    assert recovery == {
        "cart_recovery": (6, 4),
        "browse_recovery": (2, 1),
        "welcome": (3, 2),
        "<script>alert('j')</script>": (1, 1),
    }
    shorter = api.http.get("/admin/reports/summary", params={**PERIOD, "days": 3}, headers=bearer()).json()
    assert shorter["conversion"]["converted"] == 6 and shorter["settings"]["conversion_days"] == 3

    t = api.http.get("/admin/reports/tracking", params=PERIOD, headers=bearer())
    assert t.status_code == 200, t.text
    late = t.json()["identify_lateness"]
    assert (late["median_seconds"], late["share_at_checkout_or_purchase"]) == (2700.0, 0.2)


def test_report_routes_need_the_admin_token(api, history):
    for path in ("/admin/reports/summary", "/admin/reports/tracking", "/admin/report"):
        for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {ADMIN_TOKEN}"}, bearer(WRITE_KEY)):
            response = api.http.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    assert api.http.get("/admin/report", headers=bearer()).status_code == 200


def test_bad_period_and_days_are_400(api, history):
    for params in ({"since": "yesterday"}, {"since": "2025-03-10", "until": "2025-03-01"}, {"days": 0}, {"days": 400}):
        response = api.http.get("/admin/reports/summary", params=params, headers=bearer())
        assert response.status_code == 400, (params, response.text)


def svg(html: str, svg_id: str) -> str:
    match = re.search(rf'<svg id="{svg_id}".*?</svg>', html, re.S)
    assert match, f"no <svg id={svg_id}>"
    return match.group(0)


def test_page_renders_figures_and_charts_with_data_points(api, history):
    response = api.http.get("/admin/report", params=PERIOD, headers=bearer())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # nothing runs, nothing is fetched
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert "<script" not in html and "<img" not in html and "<link" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html

    revenue = svg(html, "revenue-chart")
    bars = re.findall(r'<rect class="bar" data-day="([^"]+)" data-journey="([^"]+)" data-value="([^"]+)"', revenue)
    # One bar segment per (day, journey) with attributed revenue: 2, 3, 5, 7 March cart/browse,
    # and 9 March: the <script> journey (G's 200) and welcome (I's 25).
    assert len(bars) == 6
    assert ("2025-03-09", "&lt;script&gt;alert(&#x27;j&#x27;)&lt;/script&gt;", "200.00") in bars
    assert ("2025-03-03", "cart_recovery", "120.00") in bars
    assert f'data-points="{len(bars)}"' in revenue

    funnel = svg(html, "funnel-chart")
    stages = re.findall(r'<path class="stage" data-stage="(\w+)" data-value="(\d+)" d="M[^"]+Z"', funnel)
    assert stages == [("anonymous", "19"), ("identified", "15"), ("messaged", "9"), ("purchased", "6")]

    lateness = svg(html, "lateness-chart")
    buckets = re.findall(r'<rect class="bar" data-bucket="([^"]+)" data-value="(\d+)"', lateness)
    assert buckets == [("1–10 min", "1"), ("10–60 min", "2"), ("1–6 h", "1"), ("1–3 d", "1"), ("3–7 d", "1")]
    assert "median 45 min · p90 2.0 d" in lateness

    recovery = re.search(r'<section id="recovery">.*?</section>', html, re.S).group(0)
    rows = [re.sub(r"<[^>]+>", " ", row).split() for row in re.findall(r"<tr><td.*?</tr>", recovery, re.S)]
    assert ["cart_recovery", "6", "carts", "4", "66.7%"] in rows and [
        "browse_recovery",
        "2",
        "people",
        "1",
        "50.0%",
    ] in rows
    conversion = re.search(r'<section id="conversion">.*?</section>', html, re.S).group(0)
    rows = [re.sub(r"<[^>]+>", " ", row).split() for row in re.findall(r"<tr>.*?</tr>", conversion, re.S)]
    # people, in window, bought so far, measured, converted, rate, already customers
    assert ["control", "3", "0", "0", "3", "1", "33.3%", "0"] in rows

    # Figures, and user-provided text escaped wherever it appears.
    # Conversion, cart recovery, revenue per recipient (525 / 10 people; cart recovery 260 / 6), lift, lateness.
    for figure in ("50.0%", "66.7%", "52.50", "43.33", "+33.3 pts", "45 min"):
        assert figure in html, figure
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt; bounced" in html
    assert (
        html.count("&lt;script&gt;alert(&#39;j&#39;)&lt;/script&gt;")
        + html.count("&lt;script&gt;alert(&#x27;j&#x27;)&lt;/script&gt;")
        >= 3
    )  # tables, chart legend, bar


def test_signed_link_opens_the_page_only_while_valid(api, history, served):
    link = report_link.sign(ADMIN_TOKEN, served.url, ttl=60, **PERIOD)
    parts = urlsplit(link)
    assert parts.path == "/admin/report"
    params = dict(parse_qsl(parts.query))
    assert set(params) == {"since", "until", "expires", "sig"}
    ok = api.http.get(f"{parts.path}?{parts.query}")
    assert ok.status_code == 200 and "Breadcrumb report" in ok.text

    def get(changed: dict) -> int:
        return api.http.get(f"/admin/report?{urlencode({**params, **changed})}").status_code

    assert get({"since": "2025-01-01"}) == 401  # the period is signed too
    assert get({"expires": str(int(params["expires"]) + 3600)}) == 401
    assert get({"sig": "0" * 64}) == 401
    assert get({"days": "3"}) == 401  # an added parameter breaks it as well
    expired = report_link.sign(ADMIN_TOKEN, served.url, ttl=60, now=time.time() - 120, **PERIOD)
    response = api.http.get(expired.removeprefix(served.url))
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    other_token = report_link.sign("another-token", served.url, ttl=60)
    assert api.http.get(other_token.removeprefix(served.url)).status_code == 401
    # A signed link is for the page, never the JSON.
    assert api.http.get(f"/admin/reports/summary?{parts.query}").status_code == 401


def test_page_on_an_empty_store(api, db):
    html = api.http.get("/admin/report", headers=bearer()).text
    assert "No attributed revenue in this period" in html
    assert 'id="revenue-chart"' in html and 'data-points="0"' in html
    assert "all time" in html


def test_link_signing_rules():
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        report_link.sign("", "http://x")
    with pytest.raises(ValueError, match="ttl"):
        report_link.sign("t", "http://x", ttl=0)
    link = report_link.sign("t", "http://x/", ttl=30, now=1000, since="2025-03-01", until=None)
    params = dict(parse_qsl(urlsplit(link).query))
    assert params["expires"] == "1030" and "until" not in params
    report_link.verify("t", params, now=1029)
    with pytest.raises(report_link.BadLink, match="expired"):
        report_link.verify("t", params, now=1031)
    with pytest.raises(report_link.BadLink, match="signature"):
        report_link.verify("u", params, now=1000)
