"""Message experiments, the pure part: variants in journeys.toml, the deterministic split, the
Bayesian comparison checked against hand computation, and the auto-winner rule."""

import json
import math
from collections import Counter

import pytest

from activities.render import Renderer, TemplateProblem, sample_contexts
from journeys.experiments import Arm, AutoWinner, Variant, assign, compare, decide, probability_best
from journeys.policy import Policy, PolicyError, parse_policy

A_B = [Variant(template="cart_recovery_1", weight=50), Variant(template="cart_recovery_1b", weight=50)]


def test_the_same_person_always_gets_the_same_variant_and_the_split_follows_the_weights():
    people = [f"person-{i}" for i in range(4000)]
    first = [assign(A_B, p, "cart_recovery", 1).label for p in people]
    assert first == [assign(A_B, p, "cart_recovery", 1).label for p in people]
    halves = Counter(first)
    assert 1850 < halves["cart_recovery_1"] < 2150, halves
    skewed = [Variant(template="a", weight=9), Variant(template="b", weight=1)]
    tenth = Counter(assign(skewed, p, "welcome", 2).label for p in people)
    assert 300 < tenth["b"] < 500, tenth
    # Another step of the same journey is an independent draw: not the same halves again.
    other_step = [assign(A_B, p, "cart_recovery", 2).label for p in people]
    assert 0.4 < sum(a == b for a, b in zip(first, other_step, strict=True)) / len(people) < 0.6


def test_figures_match_a_hand_computation():
    # A: four recipients credited 0, 0, 50, 30; B: five credited 0, 0, 0, 0, 10.
    a = Arm("A", recipients=4, conversions=2, revenue=80.0, revenue_squares=50**2 + 30**2)
    b = Arm("B", recipients=5, conversions=1, revenue=10.0, revenue_squares=100.0)
    fa, fb = compare([a, b])
    # A: mean 20, sample variance (3400 - 80²/4) / 3 = 600, standard error √(600/4) = √150.
    assert fa.revenue_per_recipient == 20.0 and fa.conversion_rate == 0.5
    assert fa.interval == pytest.approx((0.0, 20 + 1.959964 * math.sqrt(150)), abs=1e-4)
    # B: mean 2, variance (100 - 10²/5) / 4 = 20, standard error √(20/5) = 2.
    assert fb.interval == pytest.approx((0.0, 2 + 1.959964 * 2), abs=1e-4)
    # P(A beats B) = Φ((20 - 2) / √(150 + 4)).
    expected = 0.5 * (1 + math.erf(18 / math.sqrt(154) / math.sqrt(2)))
    assert fa.probability_best == pytest.approx(expected, abs=1e-6)
    assert fb.probability_best == pytest.approx(1 - expected, abs=1e-6)


def test_a_variant_without_orders_borrows_the_pooled_spread():
    a = Arm("A", recipients=3, conversions=0, revenue=0.0, revenue_squares=0.0)
    b = Arm("B", recipients=3, conversions=1, revenue=30.0, revenue_squares=900.0)
    fa, fb = compare([a, b])
    # Pooled over six recipients (0,0,0,0,0,30): (900 - 30²/6) / 5 = 150; A's se √(150/3), B's own √(300/3).
    expected = 0.5 * (1 + math.erf((10 - 0) / math.sqrt(150 / 3 + 300 / 3) / math.sqrt(2)))
    assert fb.probability_best == pytest.approx(expected, abs=1e-6)
    assert fa.probability_best is not None and 0 < fa.probability_best < 0.5


def test_three_variants_probabilities_add_up_to_one_and_rank_by_mean():
    chances = probability_best([(10.0, 2.0), (12.0, 2.0), (9.0, 1.0)])
    assert sum(chances) == pytest.approx(1.0, abs=1e-6)
    assert chances[1] > chances[0] > chances[2]


def test_no_probability_below_two_recipients():
    figures = compare([Arm("A", 1, 1, 5.0, 25.0), Arm("B", 10, 0, 0.0, 0.0)])
    assert [f.probability_best for f in figures] == [None, None]
    assert figures[0].interval is None


def test_auto_winner_waits_for_the_recipients_and_the_probability():
    rule = AutoWinner(min_recipients=5, probability=0.9)
    strong = compare([Arm("A", 5, 3, 300.0, 30000.0), Arm("B", 5, 0, 0.0, 0.0)])
    assert strong[0].probability_best is not None and strong[0].probability_best > 0.9
    assert decide(strong, rule) == "A"
    too_few = compare([Arm("A", 5, 3, 300.0, 30000.0), Arm("B", 4, 0, 0.0, 0.0)])
    assert decide(too_few, rule) is None
    unsure = compare([Arm("A", 50, 3, 150.0, 7500.0), Arm("B", 50, 2, 100.0, 5000.0)])
    assert decide(unsure, rule) is None


def _policy(step: str) -> Policy:
    return parse_policy({"journeys": {**_defaults(), "cart_recovery": {"steps": [json.loads(step)]}}})


def _defaults() -> dict:
    return {name: j.model_dump(mode="json") for name, j in Policy().journeys.items()}


def test_a_step_with_variants_loads_and_travels_as_json():
    policy = _policy(
        '{"delay": "1h", "variants": [{"template": "cart_recovery_1", "weight": 50},'
        ' {"template": "cart_recovery_1", "subject": "Still thinking it over?", "name": "new_subject", "weight": 50}],'
        ' "auto_winner": {"min_recipients": 200, "probability": 0.95}}'
    )
    step = policy.journeys["cart_recovery"].steps[0]
    assert step.label == "cart_recovery_1 | new_subject"
    assert {("cart_recovery_1", "email", None), ("cart_recovery_1", "email", "Still thinking it over?")} <= set(
        policy.step_templates()
    )
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize(
    "step,problem",
    [
        ('{"delay": "1h"}', "either `template` or `variants`"),
        (
            '{"delay": "1h", "template": "a", "variants": [{"template": "a", "weight": 1}, {"template": "b", "weight": 1}]}',
            "either `template` or `variants`",
        ),
        ('{"delay": "1h", "variants": [{"template": "a", "weight": 1}]}', "at least two variants"),
        (
            '{"delay": "1h", "variants": [{"template": "a", "weight": 1}, {"template": "a", "weight": 1}]}',
            "names must be unique",
        ),
        (
            '{"delay": "1h", "variants": [{"template": "a", "weight": 0}, {"template": "b", "weight": 1}]}',
            "journeys.cart_recovery.steps.0.variants.0.weight",
        ),
        ('{"delay": "1h", "template": "a", "auto_winner": {"min_recipients": 10}}', "auto_winner needs `variants`"),
        (
            '{"delay": "1h", "variants": [{"template": "%s", "weight": 1}, {"template": "b", "weight": 1}]}'
            % ("t" * 65),
            "at most 64 characters",
        ),
        (
            '{"delay": "1h", "variants": [{"template": "a", "weight": 1}, {"template": "b", "weight": 1}],'
            ' "auto_winner": {"min_recipients": 10, "metric": "clicks"}}',
            "auto_winner.metric",
        ),
    ],
)
def test_bad_variants_fail_naming_the_key(step: str, problem: str):
    with pytest.raises(PolicyError, match="journeys.cart_recovery.steps.0") as error:
        _policy(step)
    assert problem in str(error.value)


def test_a_variant_subject_is_rendered_at_start_up_and_a_typo_in_it_stops_the_worker():
    policy = _policy(
        '{"delay": "1h", "variants": [{"template": "cart_recovery_1", "weight": 1},'
        ' {"template": "cart_recovery_1", "name": "typo", "subject": "Hi {{ frist_name }}", "weight": 1}]}'
    )
    with pytest.raises(TemplateProblem, match=r"frist_name.*variant subject 'Hi \{\{ frist_name \}\}'"):
        Renderer().check(policy.step_templates())
    good = _policy(
        '{"delay": "1h", "variants": [{"template": "cart_recovery_1", "weight": 1},'
        ' {"template": "cart_recovery_1", "name": "short", "subject": "{{ first_name or \'Hi\' }}, still there?", "weight": 1}]}'
    )
    Renderer().check(good.step_templates())
    sample = {**sample_contexts("cart_recovery_1")[0], "first_name": "Ada"}
    assert Renderer().render("cart_recovery_1", "email", sample, subject="{{ first_name }}, still there?").subject == (
        "Ada, still there?"
    )
