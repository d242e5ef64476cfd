"""The journey policy file: validated at start-up, errors name the key."""

from datetime import timedelta
from pathlib import Path

import pytest

from journeys.policy import PolicyError, load_policy, parse_duration, parse_policy
from store.settings import REPO_ROOT


def test_shipped_configs_load():
    default = load_policy(REPO_ROOT / "journeys.toml")
    fast = load_policy(REPO_ROOT / "examples" / "journeys.fast.toml")
    assert [s.template for s in default.journeys["cart_recovery"].steps] == [
        "cart_recovery_1",
        "cart_recovery_2",
        "cart_recovery_3",
    ]
    assert all(step.delay <= timedelta(seconds=5) for j in fast.journeys.values() for step in j.steps)


@pytest.mark.parametrize(
    "text,key",
    [
        ("cart_min_vaule = 10", "cart_min_vaule"),
        ("cart_min_value = -1", "cart_min_value"),
        ('default_timezone = "Mars/Olympus"', "default_timezone"),
        ('[quiet_hours]\nstart = "25:00"', "quiet_hours.start"),
        ('[journeys.welcome]\nsteps = [{ delay = "soon", template = "welcome_1" }]', "journeys.welcome.steps.0.delay"),
        (
            '[journeys.welcome]\nsteps = [{ delay = "1h", template = "welcome_1", channel = "fax" }]',
            "journeys.welcome.steps.0.channel",
        ),
        ("[journeys.welcome]\nsteps = []", "journeys.welcome.steps"),
        ('[source_of_truth]\n"Order Completed" = "both"', "source_of_truth.Order Completed"),
    ],
)
def test_bad_values_fail_naming_the_key(tmp_path: Path, text: str, key: str):
    path = tmp_path / "journeys.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as failure:
        load_policy(path)
    assert key in str(failure.value) and str(path) in str(failure.value)


def test_missing_file_and_bad_toml_are_clear(tmp_path: Path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.toml")
    with pytest.raises(PolicyError, match="not readable \\(IsADirectoryError\\)"):
        load_policy(tmp_path)  # e.g. `"config": "."` in a POST /admin/backtest
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="not readable \\(UnicodeDecodeError\\)"):
        load_policy(binary)
    broken = tmp_path / "broken.toml"
    broken.write_text("cart_min_value = = 3")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(broken)


def test_durations_in_every_accepted_form():
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration(45) == timedelta(seconds=45)
    assert parse_duration("PT4H") == timedelta(hours=4)
    with pytest.raises(ValueError):
        parse_duration("-5m")


def test_aliases_in_policy_are_canonicalised():
    policy = parse_policy({"identify_events": ["Product Added"], "source_of_truth": {"Product Added": "server"}})
    assert policy.identify_events == ["Added to Cart"]
    assert policy.source_of_truth_for("Added to Cart") == "server"


def test_policy_round_trips_through_json_like_temporal_does():
    policy = load_policy(REPO_ROOT / "journeys.toml")
    assert type(policy).model_validate_json(policy.model_dump_json()) == policy
