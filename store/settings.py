"""One settings class for every Breadcrumb process, read from `BREADCRUMB_*` environment variables."""

from __future__ import annotations

import hashlib
import hmac
from functools import cached_property
from typing import Literal
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from journeys.links import LinkHosts
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
    write_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # public: they ship in the storefront
    # Secret keys of the shop's own servers: their calls are trusted (consent, new identifiers, merges,
    # source server). The Customer.io credentials are trusted the same way.
    server_write_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    identity_secret: str = ""  # HMAC-SHA256 key of `user_hash`, which makes a browser identify trusted
    # A client timestamp further ahead of the moment we received it than this is clamped to that moment.
    max_clock_skew: float = Field(default=300.0, ge=0)  # seconds
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
    # Links in messages.
    public_base_url: str = ""  # where this API is reachable from a mailbox; unsubscribe links live under it
    unsubscribe_secret: str = ""  # HMAC key of unsubscribe links (derived from ADMIN_TOKEN when unset)
    shop_name: str = "Our shop"
    shop_url: str = ""  # the storefront; relative product/cart links are joined to it
    # Hosts besides SHOP_URL's that links and images in messages may point to (`cdn.shop.example`,
    # `*.shop.example`); any other host is replaced by the shop's own link.
    link_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    shop_address: str = ""  # postal address for the email footer (CAN-SPAM / UK GDPR)
    currency: str = Field(default="USD", min_length=3, max_length=3)  # when events name no currency
    default_phone_region: str = "US"
    auto_migrate: bool = False
    dispatch: bool = True
    # Workflows a worker keeps in memory (Temporal's sticky cache); beyond it they are replayed from
    # history when they wake. Worker memory follows this, not the number of sleeping journeys.
    max_cached_workflows: int = Field(default=1000, ge=0)

    _split_write_keys = field_validator("write_keys", "server_write_keys", "link_hosts", mode="before")(_comma_list)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.journeys)

    @cached_property
    def message_link_hosts(self) -> LinkHosts:
        return LinkHosts.of(self.shop_url, self.link_hosts)

    @property
    def unsubscribe_key(self) -> bytes | None:
        """The key unsubscribe links are signed with: UNSUBSCRIBE_SECRET, else one derived from
        ADMIN_TOKEN (so a dev stack works out of the box), else None (links cannot be made)."""
        if self.unsubscribe_secret:
            return self.unsubscribe_secret.encode()
        if self.admin_token:
            return hmac.new(self.admin_token.encode(), b"breadcrumb-unsubscribe-v1", hashlib.sha256).digest()
        return None
