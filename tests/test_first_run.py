"""A newcomer's first hour, checked: configuration errors refused before anything starts (one line
naming the variable), help without type noise, the demo readable at 80 columns and quiet on a wrong
key, the walkthrough config slow enough to follow by hand, `breadcrumb report` reading the dev
stack's settings, and the README's and the demo's events clean in the tracking-health report."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from conftest import ADMIN_TOKEN, PAYLOAD_KEYS, SERVER_KEY, WRITE_KEY, free_port
from journeys.policy import load_policy
from store.settings import REPO_ROOT
from worker.cli import app
from worker.demo import DEMO_WAIT, Demo, journeys_last, run_demo

BIN = Path(sys.executable).parent
README = REPO_ROOT / "README.md"
WALKTHROUGH = REPO_ROOT / "examples" / "journeys.walkthrough.toml"
FAST = REPO_ROOT / "examples" / "journeys.fast.toml"


def clean_environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env | settings


def breadcrumb(*args: str, cwd: Path, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "breadcrumb"), *args],
        cwd=cwd,
        env=clean_environment(**settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# configuration errors: before anything starts, in one line
# --------------------------------------------------------------------------------------------------


def test_dev_refuses_real_delivery_without_a_shop_url_before_starting_anything(tmp_path):
    result = breadcrumb(
        "dev",
        "--data-dir",
        str(tmp_path / "data"),
        "--api-port",
        str(free_port()),
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        cwd=tmp_path,
        BREADCRUMB_SMTP_URL="smtp://127.0.0.1:2525",
        BREADCRUMB_SMTP_FROM="Shop <hello@shop.example>",
    )
    assert result.returncode == 1
    said = lines(result)
    assert len(said) == 1, said
    assert "BREADCRUMB_SHOP_URL" in said[0] and "unset BREADCRUMB_SMTP_URL" in said[0], said[0]
    assert not (tmp_path / "data" / "temporal.db").exists(), "Temporal was started"
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "command, settings, variable",
    [
        ("worker", {"BREADCRUMB_SMTP_TIMEOUT": "-1"}, "BREADCRUMB_SMTP_TIMEOUT"),
        (
            "worker",
            {"BREADCRUMB_SMTP_URL": "http://mail.example", "BREADCRUMB_PAYLOAD_KEYS": PAYLOAD_KEYS},
            "BREADCRUMB_SMTP_URL",
        ),
        ("worker", {"BREADCRUMB_PAYLOAD_KEYS": "k1:c2hvcnQ="}, "BREADCRUMB_PAYLOAD_KEYS"),
        ("api", {"BREADCRUMB_JOURNEYS": "/nonexistent/journeys.toml"}, "BREADCRUMB_JOURNEYS"),
    ],
)
def test_api_and_worker_name_the_variable_in_one_line(tmp_path, command, settings, variable):
    result = breadcrumb(command, cwd=tmp_path, **settings)
    assert result.returncode == 1
    said = lines(result)
    assert len(said) == 1 and variable in said[0], said


def test_help_shows_no_bool_metavars():
    runner = CliRunner()
    for command in [[]] + [[name] for name in ("dev", "demo", "api", "worker", "report", "simulate", "backtest")]:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, result.output


# --------------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------------


def finished_demo(width: int) -> tuple[Demo, Console]:
    """A demo whose shoppers all got what their story expects (profiles as the admin API gives them)."""
    console = Console(width=width, record=True, file=io.StringIO())
    demo = Demo("http://127.0.0.1:1", "wk", "admin", seed=11, shoppers=7, console=console)
    for number, outcome in enumerate(demo.outcomes):
        persona = outcome.shopper.persona
        outcome.profile = {
            "anonymous_ids": ["laptop", "phone"][: 1 + number % 2],
            "events": [{}] * (5 + number),
            "journeys": [{"route": persona.route, "status": "completed"}],
            "messages": [{"status": "sent", "step": s} for s in range(1, persona.messages[0] + 1)],
        }
        outcome.done = True
    return demo, console


@pytest.mark.parametrize("width", [80, 100, 160])
def test_demo_table_is_readable_at_any_width(width):
    demo, console = finished_demo(width)
    console.print(demo.table())
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for outcome in demo.outcomes:  # nothing a reader needs is cut or broken across lines
        shopper = outcome.shopper
        for needle in (shopper.email, shopper.name, shopper.persona.expectation, shopper.persona.route):
            assert needle in text, f"{needle!r} is cut at {width} columns:\n{text}"
    assert "…" not in text.replace("deciding…", "")


def test_demo_with_a_wrong_write_key_says_so_without_warnings(served, tmp_path):
    for _ in range(2):  # the stray warning came from a race between shoppers: give it chances
        result = breadcrumb(
            "demo", "--api", served.url, "--write-key", "wrong", "--admin-token", ADMIN_TOKEN, cwd=tmp_path
        )
        assert result.returncode == 1
        assert "refused the write key" in result.stdout, result.stdout
        assert "Warning" not in result.stderr and "never awaited" not in result.stderr, result.stderr


def readme_calls() -> list[tuple[str, str, dict]]:
    """The Segment calls the README's walkthrough makes with curl, in order: the key they use ($WK the
    browser key, $SK the server key), the call, the body."""
    text = README.read_text()
    return [
        (key, kind, json.loads(body))
        for key, kind, body in re.findall(
            r"curl -u \"\$(WK|SK):\" \S+/v1/(page|track|identify)\s.*?-d '(\{.*?\})'", text, re.S
        )
    ]


def test_readme_and_demo_events_leave_the_tracking_report_clean(served, db):
    calls = readme_calls()
    assert [kind for _, kind, _ in calls] == ["page", "track", "identify", "track"], calls
    assert {body.get("event") for _, _, body in calls} >= {"Product Added", "Order Completed"}
    assert [used for used, _, body in calls if body.get("event") == "Order Completed"] == ["SK"]  # orders: the back end
    for key, kind, body in calls:
        response = httpx.post(
            f"{served.url}/v1/{kind}", json=body, auth=(SERVER_KEY if key == "SK" else WRITE_KEY, ""), timeout=30
        )
        assert response.status_code == 200, response.text
    played = run_demo(served.url, WRITE_KEY, None, 7, 11, 0, 4, None, Console(file=io.StringIO()))
    assert played == 0
    report = httpx.get(
        f"{served.url}/admin/reports/tracking", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    ).json()
    missing = report["missing_properties"]
    assert missing["events_checked"] > 20 and missing["by_event_property"] == [], missing


# --------------------------------------------------------------------------------------------------
# the walkthrough and the report
# --------------------------------------------------------------------------------------------------


def test_walkthrough_journeys_leave_time_to_buy_by_hand():
    policy = load_policy(WALKTHROUGH)
    first, second = policy.journeys["cart_recovery"].steps[:2]
    assert timedelta(minutes=1) <= first.delay <= timedelta(minutes=2), "the first message within the 5 minutes"
    assert second.delay >= timedelta(minutes=3), "time to read the first message, then buy before the second"
    assert not policy.quiet_hours.enabled, "a walkthrough in the evening must not wait for the morning"
    assert policy.min_time_between_messages < first.delay
    # the dev banner suggests the demo only on journeys it can wait out
    assert journeys_last(policy).total_seconds() > DEMO_WAIT / 2
    assert journeys_last(load_policy(FAST)).total_seconds() <= DEMO_WAIT / 2


def test_report_reads_the_dev_stacks_database_and_journeys(db, tmp_path, monkeypatch):
    from worker import stack_file

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stack_file.write(data_dir, db.url, WALKTHROUGH, "http://127.0.0.1:8123")
    monkeypatch.chdir(tmp_path)
    env = {"BREADCRUMB_ADMIN_TOKEN": "cli-admin-token", "BREADCRUMB_DATABASE_URL": None, "BREADCRUMB_JOURNEYS": None}
    result = CliRunner().invoke(app, ["report"], env=env)
    assert result.exit_code == 0, result.output
    assert f"Reading journeys {WALKTHROUGH} (data/stack.json)" in result.output, result.output
    assert "attribution window 1 h" in result.output  # the walkthrough's, not journeys.toml's 5 d
    link = CliRunner().invoke(app, ["report", "--open"], env={**env, "BREADCRUMB_PUBLIC_BASE_URL": ""})
    assert "http://127.0.0.1:8123/admin/report?" in link.output, link.output
    explicit = CliRunner().invoke(app, ["report", "--config", str(FAST), "--db", db.url], env=env)
    assert f"Reading journeys {FAST} (--config)" in explicit.output, explicit.output


def test_readme_links_resolve():
    """The README is read on the forge, outside the docs site (whose links `mkdocs build --strict` checks)."""
    text = README.read_text()
    local = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if not t.startswith(("http://", "https://"))]
    assert local, "the README links into docs/"
    assert [t for t in local if not (REPO_ROOT / t).exists()] == []
    assert len(text.splitlines()) <= 200
