"""The timeline over real HTTP (the app served by uvicorn, SQLite and PostgreSQL): the JSON needs the
admin token, pages back through `older`, and the page opens with the token or a signed link that
names this person's page only and expires."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from api import report_link
from conftest import ADMIN_TOKEN, settings_for
from timeline_story import MILESTONES, tell

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def story(api, db):
    return tell(db.engine, settings_for(db.url))


def test_the_timeline_needs_the_admin_token(api, story):
    paths = [
        f"/admin/people/{story.person_id}/timeline",
        f"/admin/people/{story.person_id}/timeline/link",
        f"/admin/people/{story.person_id}/page",
    ]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {ADMIN_TOKEN}"}):
            response = api.http.get(path, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert "Mia" not in response.text and "mia@" not in response.text
        assert api.http.get(path, headers=BEARER).status_code == 200, path


def test_the_json_reads_in_time_order_and_pages_back(api, story):
    answer = api.admin(f"people/{story.person_id}/timeline").json()
    items = answer["items"]
    assert answer["person_id"] == story.person_id and answer["older"] is None
    assert [i["at"] for i in items] == sorted(i["at"] for i in items)
    assert {i["kind"] for i in items} == {k for k, _ in MILESTONES}
    assert set(items[0]) == {"at", "kind", "title", "detail", "device", "source", "ref"}
    purchase = next(i for i in items if i["kind"] == "purchase")
    assert purchase["detail"].endswith(f"after cart_recovery step 1 (message {story.message_id})")

    walked, before = [], None
    while True:
        params = {"limit": 5, **({"before": before} if before else {})}
        found = api.admin(f"people/{story.person_id}/timeline", **params).json()
        walked = found["items"] + walked
        before = found["older"]
        if before is None:
            break
    assert walked == items

    assert api.admin("people/nobody/timeline").status_code == 404
    for bad in ({"limit": 0}, {"limit": 1001}, {"before": "last tuesday"}):
        response = api.admin(f"people/{story.person_id}/timeline", **bad)
        assert response.status_code == 400, bad
        assert next(iter(bad)) in response.text  # the error names the parameter


def test_a_signed_link_opens_that_persons_page_only(api, story, served):
    link = api.admin(f"people/{story.person_id}/timeline/link", ttl=120).json()["url"]
    assert urlsplit(link).path == f"/admin/people/{story.person_id}/page"
    page = api.http.get(link)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"] and "<script" not in page.text
    assert "mia@example.com" in page.text and story.message_id in page.text

    params = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    others = [
        f"/admin/people/{story.ben_id}/page",  # another person's page
        f"/admin/people/{story.person_id}/timeline",  # the JSON
        "/admin/report",
        f"/admin/people/{story.person_id}",
    ]
    for path in others:
        assert api.http.get(path, params=params).status_code == 401, path
    expired = report_link.sign(ADMIN_TOKEN, served.url, ttl=1, now=0, path=f"/admin/people/{story.person_id}/page")
    response = api.http.get(expired)
    assert response.status_code == 401 and "expired" in response.text
    assert api.admin("people/nobody/timeline/link").status_code == 404
    assert api.http.get("/admin/people/nobody/page", headers=BEARER).status_code == 404
