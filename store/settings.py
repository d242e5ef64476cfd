"""One settings class for every Breadcrumb process, read from `BREADCRUMB_*` environment variables."""

from __future__ import annotations

import hashlib
import hmac
from functools import cached_property
from typing import Literal
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from journeys.policy import Policy, load_policy

REPO_ROOT = Path(__file__).resolve().parent.parent


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BREADCRUMB_", extra="ignore")

    database_url: str = "sqlite:///./data/breadcrumb.db"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "breadcrumb"
    write_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cio_site_id: str = ""
    cio_api_key: str = ""
    admin_token: str = ""
    journeys: Path = REPO_ROOT / "journeys.toml"
    # Delivery. Without SMTP_URL / SMS_WEBHOOK_URL those channels fall back to `outbox` (stored, not sent).
    smtp_url: str = ""  # smtp://user:pass@host:587 (STARTTLS per SMTP_STARTTLS) or smtps://… (implicit TLS)
    smtp_starttls: Literal["auto", "always", "never"] = "auto"  # auto: upgrade when the server offers it
    smtp_ca_file: str = ""  # PEM CA bundle to trust for the relay's certificate (a private CA); empty: the system's
    smtp_from: str = ""  # "Glow Skincare <hello@glow.example>"; required with SMTP_URL
    smtp_reply_to: str = ""
    smtp_timeout: float = Field(default=30.0, gt=0)  # seconds per SMTP conversation
    sms_webhook_url: str = ""  # POST {"to", "body"} with an Idempotency-Key header
    sms_webhook_token: str = ""  # sent as "Authorization: Bearer …" when set
    sms_timeout: float = Field(default=10.0, gt=0)
    # One delivery (an SMTP conversation, an SMS webhook call) ends within this many seconds, however
    # slow the relay: waiting out a dead attempt's lease and then delivering must fit in the send
    # activity's start-to-close (workflows/journey.py SEND_CALL, 2 minutes), hence the bound.
    delivery_deadline: float = Field(default=20.0, gt=0, le=50)
    # On SIGTERM the worker stops taking tasks and lets running ones finish for this long before it
    # cancels them; longer than one delivery, so a deploy never interrupts a send. The orchestrator's
    # own grace (docker `stop_grace_period`, Kubernetes `terminationGracePeriodSeconds`) must be longer.
    worker_shutdown_grace: float = Field(default=30.0, gt=0)
    # Links in messages.
    public_base_url: str = ""  # where this API is reachable from a mailbox; unsubscribe links live under it
    unsubscribe_secret: str = ""  # HMAC key of unsubscribe links (derived from ADMIN_TOKEN when unset)
    shop_name: str = "Our shop"
    shop_url: str = ""  # the storefront; relative product/cart links are joined to it
    shop_address: str = ""  # postal address for the email footer (CAN-SPAM / UK GDPR)
    currency: str = Field(default="USD", min_length=3, max_length=3)  # when events name no currency
    default_phone_region: str = "US"
    auto_migrate: bool = False
    dispatch: bool = True
    # Workflows a worker keeps in memory (Temporal's sticky cache); beyond it they are replayed from
    # history when they wake. Worker memory follows this, not the number of sleeping journeys.
    max_cached_workflows: int = Field(default=1000, ge=0)

    _split_write_keys = field_validator("write_keys", mode="before")(_comma_list)

    @model_validator(mode="after")
    def _grace_outlasts_a_delivery(self) -> "Settings":
        if self.worker_shutdown_grace <= self.delivery_deadline:
            raise ValueError(f"BREADCRUMB_WORKER_SHUTDOWN_GRACE ({self.worker_shutdown_grace:g}s) must be longer than "
                             f"BREADCRUMB_DELIVERY_DEADLINE ({self.delivery_deadline:g}s): a SIGTERM would cut a send short")
        return self

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.journeys)

    @property
    def unsubscribe_key(self) -> bytes | None:
        """The key unsubscribe links are signed with: UNSUBSCRIBE_SECRET, else one derived from
        ADMIN_TOKEN (so a dev stack works out of the box), else None (links cannot be made)."""
        if self.unsubscribe_secret:
            return self.unsubscribe_secret.encode()
        if self.admin_token:
            return hmac.new(self.admin_token.encode(), b"breadcrumb-unsubscribe-v1", hashlib.sha256).digest()
        return None
