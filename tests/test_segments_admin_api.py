"""`GET /admin/segments` and `GET /admin/segments/{name}/people` on the served app (SQLite and
PostgreSQL): people identified through the Segment API are counted in the segments of journeys.toml
at once (ingest keeps membership live), and a segment's members page by cursor."""

from __future__ import annotations

import httpx
import pytest

from conftest import ADMIN_TOKEN, WRITE_KEY, ServedApp, settings_for

SEGMENTS = """
[segments.gold]
trait = { key = "tier", equals = "gold" }

[segments.serum_browsers]
event = { name = "Product Viewed", at_least = 1, within = "7d", where = { category = "serum" } }

[segments.subscribed]
all = [{ reachable = "email" }, { not = { orders = { purchased = true } } }]
"""


@pytest.fixture
def shop(db, repo_root, tmp_path):
    journeys = tmp_path / "journeys.toml"
    text = (repo_root / "journeys.toml").read_text()
    journeys.write_text(text + SEGMENTS)
    with ServedApp(settings_for(db.url, journeys=journeys)) as app, httpx.Client(base_url=app.url, timeout=60) as http:
        yield http


def admin(http: httpx.Client, path: str, **params) -> httpx.Response:
    return http.get(f"/admin/{path}", params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def test_counts_and_pages_of_members(shop):
    batch = [
        {
            "type": "identify",
            "userId": f"u{i}",
            "traits": {"email": f"p{i}@example.com", "tier": "gold" if i < 5 else "silver"},
        }
        for i in range(7)
    ] + [{"type": "track", "userId": "u6", "event": "Product Viewed", "properties": {"category": "serum", "sku": "s1"}}]
    assert shop.post("/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, "")).status_code == 200

    listed = admin(shop, "segments").json()["segments"]
    assert [(s["name"], s["people"], s["time_based"]) for s in listed] == [
        ("gold", 5, False),
        ("serum_browsers", 1, True),
        ("subscribed", 7, False),
    ]
    assert listed[2]["definition"] == {"all": [{"reachable": "email"}, {"not": {"orders": {"purchased": True}}}]}

    pages, after = [], None
    while True:
        page = admin(shop, "segments/gold/people", limit=2, **({"after": after} if after else {})).json()
        pages.append(page["people"])
        after = page["next"]
        if after is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    people = [row["person_id"] for page in pages for row in page]
    assert people == sorted(people) and len(set(people)) == 5
    assert all(row["entered_at"] for page in pages for row in page)


def test_unknown_segment_and_missing_token(shop):
    response = admin(shop, "segments/nope/people")
    assert response.status_code == 404 and "no segment 'nope' in journeys.toml" in response.text
    assert shop.get("/admin/segments").status_code == 401
    response = admin(shop, "segments/gold/people", limit=0)
    assert response.status_code == 400 and "limit" in response.text
