"""`breadcrumb report` through typer's CliRunner, reading the store directly (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from typer.testing import CliRunner

from api import report_link
from report_history import SINCE, UNTIL, march
from worker.cli import app

runner = CliRunner()
ENV = {"BREADCRUMB_ADMIN_TOKEN": "cli-admin-token"}


@pytest.fixture(autouse=True)
def away_from_a_dev_stack(tmp_path, monkeypatch):
    """The report reads ./data/stack.json of a `breadcrumb dev` run in this checkout: not here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(db):
    march().insert(db.engine)
    return db


def run(*args: str):
    result = runner.invoke(app, ["report", *args], env=ENV)
    return result


def test_summary_tables(store):
    result = run("--db", store.url, "--since", SINCE, "--until", UNTIL)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Breadcrumb journey report · 2025-03-01 00:00 → 2025-04-01 00:00" in out
    # The headline figures, worked out by hand in tests/test_reports.py.
    row = {
        label: next(l for l in out.splitlines() if l.strip().startswith(label))
        for label in (
            "first-purchase conversion",
            "attributed revenue",
            "revenue per recipient",
            "cart recovery rate",
            "lift vs holdout",
            "control",
            "unrouted",
        )
    }
    assert "50.0%" in row["first-purchase conversion"] and "7 of 14 people" in row["first-purchase conversion"]
    assert "525.00" in row["attributed revenue"] and "6 of 10 orders (765.00)" in row["attributed revenue"]
    assert "52.50" in row["revenue per recipient"]
    assert "66.7%" in row["cart recovery rate"] and "4 of 6 carts" in row["cart recovery rate"]
    assert "+33.3 pts" in row["lift vs holdout"]
    # route, people, still in window, bought so far, measured, converted, rate, already customers
    assert row["control"].split() == ["control", "3", "0", "0", "3", "1", "33.3%", "0"]
    assert row["unrouted"].split() == ["unrouted", "1", "0", "0", "1", "0", "0.0%", "0"]
    per_journey = [l.split() for l in out.splitlines() if l.strip().startswith(("cart_recovery ", "welcome "))]
    assert ["cart_recovery", "6", "4", "460.00", "76.67"] in per_journey  # by journey
    assert ["cart_recovery", "1", "6", "3", "340.00", "56.67"] in per_journey  # by step
    assert ["cart_recovery", "6", "carts", "4", "66.7%", "3"] in per_journey  # recovery
    assert ["welcome", "3", "people", "2", "66.7%"] in per_journey
    assert "60.0%" in next(l for l in out.splitlines() if l.strip().startswith("recovery rate, all journeys"))
    assert "Messages: 13 sent · 1 failed · 0 pending · 10 skipped · 3 deferred" in out
    assert "SMTP 550 mailbox unavailable" in out and "out of stock" in out


def test_tracking_tables(store):
    result = run("tracking", "--db", store.url, "--since", SINCE, "--until", UNTIL)
    assert result.exit_code == 0, result.output
    out = result.output
    line = next(l for l in out.splitlines() if "identify lateness, median" in l)
    assert "45 min" in line and "p90 2.0 d" in line and "6 of 15 people" in line
    assert "20.0%" in next(l for l in out.splitlines() if "checkout or purchase" in l)
    assert next(l for l in out.splitlines() if "duplicate pairs caught" in l).split()[-1] == "2"
    assert next(l for l in out.splitlines() if "links off the shop" in l).split()[-1] == "0"
    assert ["Order", "Completed", "value", "3", "12", "25.0%"] in [l.split() for l in out.splitlines()]


def test_json_output(store):
    result = run("tracking", "--db", store.url, "--since", SINCE, "--until", UNTIL, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["identify_lateness"]["median_seconds"] == 2700.0
    summary = json.loads(run("--db", store.url, "--since", SINCE, "--until", UNTIL, "--days", "3", "--json").output)
    assert summary["conversion"]["converted"] == 6 and summary["settings"]["conversion_days"] == 3


def test_exact_gives_the_same_report_as_the_rollups(store):
    def summary(*extra: str) -> dict:
        result = run("--db", store.url, "--since", SINCE, "--until", UNTIL, "--json", *extra)
        assert result.exit_code == 0, result.output
        return {k: v for k, v in json.loads(result.output).items() if k != "generated_at"}

    fast = summary()
    assert store.scalar("SELECT count(*) FROM report_rollups") > 0
    assert summary("--exact") == fast and fast["revenue"]["attributed_orders"] > 0


def test_open_prints_a_signed_link(db):
    result = run("--open", "http://127.0.0.1:8000/", "--since", SINCE, "--ttl", "120")
    assert result.exit_code == 0, result.output
    link = next(l for l in result.output.splitlines() if l.startswith("http"))
    parts = urlsplit(link)
    assert (parts.netloc, parts.path) == ("127.0.0.1:8000", "/admin/report")
    params = dict(parse_qsl(parts.query))
    assert params["since"] == SINCE
    report_link.verify(ENV["BREADCRUMB_ADMIN_TOKEN"], params)
    assert "valid for 2 min" in result.output


def test_open_without_a_url_uses_the_public_base_url(db):
    result = runner.invoke(
        app,
        ["report", "--open", "--until", UNTIL],
        env={**ENV, "BREADCRUMB_PUBLIC_BASE_URL": "https://crumbs.example/"},
    )
    assert result.exit_code == 0, result.output
    link = next(l for l in result.output.splitlines() if l.startswith("http"))
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "crumbs.example", "/admin/report")
    report_link.verify(ENV["BREADCRUMB_ADMIN_TOKEN"], dict(parse_qsl(parts.query)))
    last = runner.invoke(app, ["report", "tracking", "--open"], env={**ENV, "BREADCRUMB_PUBLIC_BASE_URL": ""})
    assert last.exit_code == 0 and "http://127.0.0.1:8000/admin/report?" in last.output  # the dev server's address
    wrong = run("--open", "summary")
    assert wrong.exit_code == 2 and "'summary' is not a URL" in wrong.output


def test_config_sets_the_attribution_window(store, repo_root):
    fast = run(
        "--db",
        store.url,
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--config",
        str(repo_root / "examples" / "journeys.fast.toml"),
        "--json",
    )
    assert fast.exit_code == 0, fast.output
    data = json.loads(fast.output)
    window = data["settings"]["attribution_window_hours"]
    assert window < 120 and data["revenue"]["attributed_orders"] < 6  # a shorter window credits fewer orders
    missing = run("--db", store.url, "--config", "/nonexistent.toml")
    assert missing.exit_code == 2 and "not found" in missing.output


def test_errors_are_clear(db):
    bad = runner.invoke(app, ["report", "--open", "http://x"], env={"BREADCRUMB_ADMIN_TOKEN": ""})
    assert bad.exit_code == 2 and "ADMIN_TOKEN" in bad.output
    assert run("sideways", "--db", db.url).exit_code == 2
    wrong = run("--db", db.url, "--since", "last tuesday")
    assert wrong.exit_code == 2 and "not a date" in wrong.output
