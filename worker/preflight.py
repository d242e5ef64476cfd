"""Every configuration error found before anything starts, said in one line that names the variable
and the fix: `breadcrumb dev`, `breadcrumb api` and `breadcrumb worker` run these checks first, so a
bad setting never shows up as a traceback after the stack said it was ready."""

from __future__ import annotations

from pydantic import ValidationError

from journeys.policy import PolicyError
from store.settings import Settings

OUTBOX_HINT = ("set or fix the variable named, or unset BREADCRUMB_SMTP_URL and BREADCRUMB_SMS_WEBHOOK_URL to "
               "keep messages in the outbox (recorded, not sent)")


class ConfigurationError(Exception):
    """One line: which variable is wrong and what to do about it."""


def _settings_problem(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        problems.append(f"BREADCRUMB_{field.upper()}: {item['msg']}")
    return "; ".join(problems) + " (fix the environment variable or .env)"


def load_settings(**overrides) -> Settings:
    """Settings from the environment and the journey policy they name, or a ConfigurationError."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise ConfigurationError(_settings_problem(error)) from None
    try:
        settings.policy
    except PolicyError as error:
        raise ConfigurationError(f"BREADCRUMB_JOURNEYS: {error}") from None
    return settings


def check_payload_keys(settings: Settings) -> None:
    """Usable Temporal payload keys, or the explicit clear opt-out (docs/temporal-privacy.md)."""
    from dispatch.codec import PayloadKeyError, configured_keys

    try:
        configured_keys(settings.payload_keys, settings.allow_clear_payloads)
    except PayloadKeyError as error:
        raise ConfigurationError(str(error)) from None


def check_delivery(settings: Settings) -> None:
    """What the worker checks when it starts — templates render, delivery settings fit together —
    done up front, where the stack can still refuse to start."""
    from activities.channels import DeliveryConfigError, channels_from_settings
    from activities.render import Renderer, TemplateProblem

    steps = [(step.template, step.channel) for journey in settings.policy.journeys.values() for step in journey.steps]
    try:
        Renderer().check(steps)
    except TemplateProblem as error:
        raise ConfigurationError(f"BREADCRUMB_JOURNEYS ({settings.journeys}): {error}") from None
    try:
        channels_from_settings(settings)
    except DeliveryConfigError as error:
        raise ConfigurationError(f"{error} — {OUTBOX_HINT}") from None
