"""The experiment report on a hand-built shop, on SQLite and PostgreSQL, through the real HTTP API
and on the report page; every figure below is worked out by hand from `two_variants()`."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta


from api.experiment_chart import experiment_chart
from journeys.experiments import AutoWinner, Variant
from journeys.policy import Policy
from report_history import History, at
from store.experiments import Checks, decide_winner, variant_for
from store.models import ExperimentDecision
from store.reports.experiments import experiments

A, B = "cart_recovery_1", "cart_recovery_1b"


def two_variants() -> History:
    """cart_recovery step 1 split between A and B in March 2025 (attribution window 5 days).

    A: A1 orders 50; A2 orders 30 then 20 (one recipient, 50); A3 never orders; A4 orders 100 ten
    days later (outside the window: not credited). Recipients 4, conversions 2, per-recipient
    revenue 50, 50, 0, 0.
    B: B1 orders 40; B2 also got step 2 (no variant) before ordering 70, so the last touch is step 2
    and B gets nothing; B3's message failed (not a recipient); B4 and B5 never order. Recipients 4
    (B1, B2, B4, B5), conversions 1, per-recipient revenue 40, 0, 0, 0.
    """
    h = History()
    for name in ("A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4", "B5"):
        h.person(name, at(1, 8))
        h.message(
            name,
            "cart_recovery",
            1,
            at(1, 10),
            status="failed" if name == "B3" else "sent",
            variant={"A": A, "B": B}[name[0]],
        )
    h.order("A1", at(2, 10), "o-A1", revenue=50)
    h.order("A2", at(2, 11), "o-A2a", revenue=30)
    h.order("A2", at(3, 11), "o-A2b", revenue=20)
    h.order("A4", at(11, 10), "o-A4", revenue=100)
    h.order("B1", at(2, 12), "o-B1", revenue=40)
    h.message("B2", "cart_recovery", 2, at(2, 10))
    h.order("B2", at(3, 10), "o-B2", revenue=70)
    return h


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_experiment_figures_by_hand(db):
    two_variants().insert(db.engine)
    [experiment] = experiments(db.engine, Policy())["experiments"]
    assert (experiment["journey"], experiment["step"], experiment["configured"]) == ("cart_recovery", 1, False)
    a, b = experiment["variants"]
    # A: mean 100/4 = 25; variance (50² + 50² - 100²/4) / 3 = 2500/3; se √(2500/3 / 4).
    se_a = math.sqrt(2500 / 3 / 4)
    assert (a["variant"], a["recipients"], a["conversions"], a["revenue"]) == (A, 4, 2, 100.0)
    assert a["revenue_per_recipient"] == 25.0 and a["conversion_rate"] == 0.5
    assert a["interval"] == [0.0, round(25 + 1.959964 * se_a, 4)]
    # B: mean 40/4 = 10; variance (40² - 40²/4) / 3 = 400; se √(400/4) = 10.
    assert (b["variant"], b["recipients"], b["conversions"], b["revenue"]) == (B, 4, 1, 40.0)
    assert b["revenue_per_recipient"] == 10.0 and b["interval"] == [0.0, round(10 + 1.959964 * 10, 4)]
    # P(A beats B) = Φ((25 - 10) / √(se_a² + 10²)).
    assert a["probability_best"] == round(phi(15 / math.sqrt(se_a**2 + 100)), 4)
    assert b["probability_best"] == round(1 - phi(15 / math.sqrt(se_a**2 + 100)), 4)
    assert experiment["decision"] is None


def test_a_configured_experiment_lists_its_variants_in_order_even_before_any_send(db):
    policy = Policy.model_validate(
        {
            "journeys": {
                **{n: j.model_dump(mode="json") for n, j in Policy().journeys.items()},
                "welcome": {
                    "steps": [
                        {
                            "delay": "5m",
                            "variants": [
                                {"template": "welcome_1", "weight": 1},
                                {"template": "welcome_2", "weight": 3},
                            ],
                            "auto_winner": {"min_recipients": 100},
                        }
                    ]
                },
            }
        }
    )
    [experiment] = experiments(db.engine, policy)["experiments"]
    assert [v["variant"] for v in experiment["variants"]] == ["welcome_1", "welcome_2"]
    assert [v["recipients"] for v in experiment["variants"]] == [0, 0]
    assert experiment["auto_winner"] == {"metric": "revenue_per_recipient", "min_recipients": 100, "probability": 0.95}
    assert 'data-points="0"' in experiment_chart(experiment)


def test_experiment_endpoint_and_report_page_show_figures_decision_and_chart(db, api):
    two_variants().insert(db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            ExperimentDecision.__table__.insert().values(
                journey="cart_recovery",
                step=1,
                winner=A,
                figures=[{"variant": A, "recipients": 4, "revenue_per_recipient": 25.0, "probability_best": 0.8}],
                decided_at=at(4, 9),
            )
        )
    assert api.http.get("/admin/reports/experiments").status_code == 401
    response = api.admin("reports/experiments", since="2025-03-01", until="2025-03-31")
    assert response.status_code == 200, response.text
    [experiment] = response.json()["experiments"]
    assert [(v["variant"], v["recipients"], v["conversions"]) for v in experiment["variants"]] == [(A, 4, 2), (B, 4, 1)]
    assert experiment["decision"]["winner"] == A and experiment["decision"]["decided_at"].startswith("2025-03-04T09:00")
    # April only: nothing sent, nothing credited.
    april = api.admin("reports/experiments", since="2025-04-01", until="2025-04-30").json()
    assert april["experiments"] == []

    message_id = db.scalar("SELECT id FROM messages WHERE variant = :v LIMIT 1", v=B)
    assert api.admin(f"messages/{message_id}").json()["variant"] == B

    page = api.admin("report", since="2025-03-01", until="2025-03-31")
    assert page.status_code == 200
    html = page.text
    chart = re.search(r'<svg id="experiment-chart-cart_recovery-1".*?</svg>', html, re.S).group(0)
    bars = dict(re.findall(r'<rect class="bar" data-variant="([^"]+)" data-value="([^"]+)"', chart))
    assert bars == {A: "25.0000", B: "10.0000"}
    assert len(re.findall(r'<path class="interval"', chart)) == 2
    assert "Auto-winner: cart_recovery_1" in html and "2025-03-04 09:00:00" in html


def test_auto_winner_is_decided_once_on_the_reports_figures_and_then_read(db):
    """On `two_variants()`: P(A best) = Φ(15 / √(2500/12 + 100)) ≈ 0.80 with 4 recipients each."""
    two_variants().insert(db.engine)
    variants = [Variant(template=A, weight=1), Variant(template=B, weight=1)]
    window, now = timedelta(days=5), at(20)

    def winner(**rule) -> str | None:
        with db.engine.begin() as conn:
            return decide_winner(conn, "cart_recovery", 1, variants, AutoWinner(**rule), window, now)

    assert winner(min_recipients=5, probability=0.75) is None  # 4 recipients each: too few
    assert winner(min_recipients=4, probability=0.9) is None  # 0.80 is not sure enough
    with db.engine.begin() as conn:  # a send between a worker's checks only reads: nothing decided yet
        rule = AutoWinner(min_recipients=4, probability=0.75)
        assert decide_winner(conn, "cart_recovery", 1, variants, rule, window, now, compute=False) is None
    assert db.scalar("SELECT count(*) FROM experiment_decisions") == 0
    assert winner(min_recipients=4, probability=0.75) == A
    [experiment] = experiments(db.engine, Policy())["experiments"]
    assert experiment["decision"]["figures"] == experiment["variants"]  # nothing sent since
    assert experiment["decision"]["decided_at"].startswith("2025-03-20T00:00")
    # Recorded: read back whatever the rule now says, and every person gets the winner.
    assert winner(min_recipients=1000, probability=0.99) == A
    with db.engine.begin() as conn:
        chosen = {
            variant_for(conn, f"p{i}", "cart_recovery", 1, variants, AutoWinner(min_recipients=4), window, now).label
            for i in range(20)
        }
    assert chosen == {A}
    assert db.scalar("SELECT count(*) FROM experiment_decisions") == 1


def test_a_worker_computes_an_experiments_figures_at_most_once_a_minute(monkeypatch):
    checks = Checks()
    assert checks.due("cart_recovery", 1) and checks.due("welcome", 1)
    assert not checks.due("cart_recovery", 1)  # within the minute
    clock = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: clock + 61)
    assert checks.due("cart_recovery", 1)


def test_breadcrumb_report_experiments_prints_the_figures(db, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from worker.cli import app

    monkeypatch.chdir(tmp_path)  # away from a dev stack's ./data
    two_variants().insert(db.engine)
    result = CliRunner().invoke(
        app, ["report", "experiments", "--db", db.url, "--since", "2025-03-01", "--until", "2025-03-31"]
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip().startswith("cart_")}
    chance = f"{round(phi(15 / math.sqrt(2500 / 12 + 100)), 4) * 100:.1f}%"  # the JSON figure, as a percentage
    assert rows[A] == [
        A,
        "4",
        "2",
        "50.0%",
        "100.00",
        "25.00",
        "0.00",
        "–",
        f"{25 + 1.959964 * math.sqrt(2500 / 12):.2f}",
        chance,
    ]
    assert rows[B][:6] == [B, "4", "1", "25.0%", "40.00", "10.00"]
