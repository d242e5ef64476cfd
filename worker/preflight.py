"""Every configuration error found before anything starts, said in one line that names the variable
and the fix: `breadcrumb dev`, `breadcrumb api` and `breadcrumb worker` run these checks first, so a
bad setting never shows up as a traceback after the stack said it was ready."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from journeys.policy import PolicyError
from store.settings import Settings

OUTBOX_HINT = (
    "set or fix the variable named, or unset BREADCRUMB_SMTP_URL and BREADCRUMB_SMS_WEBHOOK_URL to "
    "keep messages in the outbox (recorded, not sent)"
)


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
        _ = settings.policy  # loaded (and validated) on first access
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


def check_temporal_connection(settings: Settings) -> None:
    """The TLS files exist and are readable PEM, and the settings fit together (a certificate with its
    key, an API key over TLS): said here, rather than as a handshake error of the first connection."""
    files = {
        "TEMPORAL_TLS_CA": settings.temporal_tls_ca,
        "TEMPORAL_TLS_CERT": settings.temporal_tls_cert,
        "TEMPORAL_TLS_KEY": settings.temporal_tls_key,
    }
    tls_named = [f"BREADCRUMB_{name}" for name, path in files.items() if path]
    if settings.temporal_tls_server_name:
        tls_named.append("BREADCRUMB_TEMPORAL_TLS_SERVER_NAME")
    if settings.temporal_api_key:
        tls_named.append("BREADCRUMB_TEMPORAL_API_KEY")
    if tls_named and not settings.temporal_tls:
        raise ConfigurationError(
            f"{', '.join(tls_named)} set but BREADCRUMB_TEMPORAL_TLS is off — set "
            "BREADCRUMB_TEMPORAL_TLS=true (Temporal Cloud and any API key need TLS: "
            "the key would otherwise travel in clear)"
        )
    if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
        have, lack = ("CERT", "KEY") if settings.temporal_tls_cert else ("KEY", "CERT")
        raise ConfigurationError(
            f"BREADCRUMB_TEMPORAL_TLS_{lack}: missing — mTLS needs both a client certificate and "
            f"its private key; set it next to BREADCRUMB_TEMPORAL_TLS_{have}, or unset both"
        )
    for name, path in files.items():
        if path:
            _check_pem(f"BREADCRUMB_{name}", path)


def _check_pem(variable: str, path: str) -> None:
    file = Path(path).expanduser()
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{variable}: {path} does not exist — set it to the PEM file's path") from None
    except OSError as error:
        raise ConfigurationError(
            f"{variable}: {path} cannot be read ({error.strerror}) — let the user running Breadcrumb read it"
        ) from None
    if b"-----BEGIN " not in text:
        raise ConfigurationError(
            f"{variable}: {path} is not a PEM file (no -----BEGIN line) — export the certificate or key in PEM format"
        ) from None


def check_delivery(settings: Settings) -> None:
    """What the worker checks when it starts — templates render, delivery settings fit together —
    done up front, where the stack can still refuse to start."""
    from activities.channels import DeliveryConfigError, channels_from_settings
    from activities.render import Renderer, TemplateProblem

    try:
        Renderer().check(settings.policy.step_templates())
    except TemplateProblem as error:
        raise ConfigurationError(f"BREADCRUMB_JOURNEYS ({settings.journeys}): {error}") from None
    try:
        channels_from_settings(settings)
    except DeliveryConfigError as error:
        raise ConfigurationError(f"{error} — {OUTBOX_HINT}") from None
