"""One settings class for every Breadcrumb process, read from `BREADCRUMB_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from typing import Literal
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing import Annotated

from journeys.links import LinkHosts
from journeys.policy import Duration, Policy, load_policy

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOPIFY_HOSTS = "*.myshopify.com"
SHOPIFY_SECRET_MIN = 16  # Shopify's secrets are 32+ characters; a short one is a placeholder


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BREADCRUMB_", extra="ignore")

    database_url: str = "sqlite:///./data/breadcrumb.db"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # Secure connections (docs/deployment.md#temporal-cloud-or-your-own-cluster): TLS with the system's
    # CAs or TEMPORAL_TLS_CA, mTLS with a client certificate and key, Temporal Cloud's API key (over TLS).
    temporal_tls: bool = False
    temporal_tls_ca: str = ""  # PEM file of the CA that signed the server's certificate; empty: the system's
    temporal_tls_server_name: str = ""  # the name to verify the server's certificate against, if not the host's
    temporal_tls_cert: str = ""  # PEM client certificate (mTLS), with TEMPORAL_TLS_KEY
    temporal_tls_key: str = ""  # PEM private key of TEMPORAL_TLS_CERT
    temporal_api_key: str = ""  # Temporal Cloud API key; needs TEMPORAL_TLS
    # Seconds a process waits for Temporal to answer a new connection before it says why it could not.
    temporal_connect_timeout: float = Field(default=10.0, gt=0)
    task_queue: str = "breadcrumb"
    backtest_task_queue: str = "backtest"  # backtests' queue: `breadcrumb worker --queue backtest` serves it
    worker_serves_backtests: bool = False  # the journeys worker serves the backtest queue too (on in `breadcrumb dev`)
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
    # HMAC keys of unsubscribe links, newest first: links are signed with the first, any of them
    # verifies (rotate by putting a new secret in front). Required for real SMTP/SMS delivery.
    unsubscribe_secret: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Pepper of the suppression list's hashes (docs/privacy.md). Changing it forgets every suppression.
    suppression_pepper: str = "breadcrumb-suppression-v1"
    shop_name: str = "Our shop"
    shop_url: str = ""  # the storefront; relative product/cart links are joined to it
    # Hosts besides SHOP_URL's that links and images in messages may point to (`cdn.shop.example`,
    # `*.shop.example`); any other host is replaced by the shop's own link.
    link_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Shopify webhooks (docs/shopify-topics.md): signing secrets, comma list; any one verifies (rotation).
    # While set, `*.myshopify.com` counts as a link host (the shop's `abandoned_checkout_url`).
    shopify_webhook_secret: Annotated[list[str], NoDecode] = Field(default_factory=list)
    shop_address: str = ""  # postal address for the email footer (CAN-SPAM / UK GDPR)
    currency: str = Field(default="USD", min_length=3, max_length=3)  # when events name no currency
    default_phone_region: str = "US"
    auto_migrate: bool = False
    dispatch: bool = True
    # Workflows a worker keeps in memory (Temporal's sticky cache); beyond it they are replayed from
    # history when they wake. Worker memory follows this, not the number of sleeping journeys.
    max_cached_workflows: int = Field(default=1000, ge=0)
    # Temporal payload encryption (docs/temporal-privacy.md): `id:base64key` comma list, newest first.
    payload_keys: str = ""
    # The explicit opt-out: without keys, worker and API start anyway and Temporal holds payloads in clear.
    allow_clear_payloads: bool = False
    # Origins of the Temporal UI allowed to call /codec/decode from the browser (CORS).
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8233", "http://localhost:8233"]
    )

    # Outbox (docs/operations.md): a claim's lease, failed deliveries before a row is dead-lettered,
    # and how long delivered rows are kept.
    outbox_lease_seconds: float = Field(default=60.0, gt=0)
    outbox_max_attempts: int = Field(default=10, ge=1)
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    # Signals the dispatcher sends at once (people in parallel; each person's in order).
    dispatch_concurrency: int = Field(default=32, ge=1, le=1024)
    # Threads of an API process that store front-door calls (tracking, Customer.io, Shopify webhooks).
    # Few on purpose: 32 clients each on a thread of their own spent their time handing the GIL
    # around (a single track's p99 tripled, bench/track_load.py); admin and report routes keep the
    # default pool, so a slow report never holds up ingest. On PostgreSQL also how many groups of
    # waiting tracking calls are stored at once (api/ingest_queue.py; SQLite: one, its one writer).
    ingest_threads: int = Field(default=4, ge=1, le=64)
    # Workflow-task polls a worker sends to the shared task queue (new hubs and journeys: every
    # identify's first decision) for each one it sends to its own sticky queue (cached hubs woken by
    # browsing, timers, signals). The SDK's 0.2 left identifies behind a backlog of browsing wake-ups
    # at 600 events/s: p99 11 s against 0.9 s at 1.0 (bench/soak.py).
    worker_nonsticky_poll_ratio: float = Field(default=1.0, gt=0, le=10)
    # Seconds a cached workflow's task waits on its worker's sticky queue before Temporal hands it to
    # any worker, which replays the whole history. The SDK's 10 s spilled a saturated worker's
    # browsing wake-ups, replays and all, onto the shared queue in front of new identifies (PostgreSQL
    # at 600 events/s: identify p99 12.9 s, at 30 s 1.6 s). The price: after a worker crash its
    # cached hubs' next tasks wait this long (a graceful stop hands them over at once).
    worker_sticky_timeout: float = Field(default=30.0, ge=1, le=600)
    # A person's browsing wakes their hub at most once per this many seconds (0: every claim); the
    # default matches the policy's default `hub_debounce`, the hub's own gathering of browsing.
    dispatch_activity_window: float = Field(default=2.0, ge=0, le=60)
    # Requests per API key per minute on each front door, counted per API process (replica).
    # 0 turns a limit off.
    rate_limit_browser: int = Field(default=30000, ge=0)  # /v1/* per write key (every shopper of the shop shares it)
    rate_limit_server: int = Field(default=60000, ge=0)  # /v1/* per server key, /api/v1/* per Customer.io site id
    metrics_enabled: bool = True  # GET /metrics
    demo_store_enabled: bool = True  # the demo storefront under /demo; turn off in production
    # Events older than this (by when they occurred: 400d, 90d…) are deleted by `breadcrumb maintenance`; off when unset.
    event_retention: Duration | None = None

    _split_lists = field_validator(
        "write_keys",
        "server_write_keys",
        "link_hosts",
        "unsubscribe_secret",
        "codec_cors_origins",
        "shopify_webhook_secret",
        mode="before",
    )(_comma_list)

    @field_validator("event_retention", mode="before")
    @classmethod
    def _retention_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off") else value

    @model_validator(mode="after")
    def _grace_outlasts_a_delivery(self) -> Settings:
        if self.worker_shutdown_grace <= self.delivery_deadline:
            raise ValueError(
                f"BREADCRUMB_WORKER_SHUTDOWN_GRACE ({self.worker_shutdown_grace:g}s) must be longer than "
                f"BREADCRUMB_DELIVERY_DEADLINE ({self.delivery_deadline:g}s): a SIGTERM would cut a send short"
            )
        return self

    @field_validator("shopify_webhook_secret")
    @classmethod
    def _shopify_secrets_are_secrets(cls, secrets: list[str]) -> list[str]:
        if any(len(secret) < SHOPIFY_SECRET_MIN for secret in secrets):
            raise ValueError(
                f"each secret must be at least {SHOPIFY_SECRET_MIN} characters: paste the signing secret "
                "Shopify shows (Settings → Notifications → Webhooks, or the app's API secret key)"
            )
        return secrets

    @model_validator(mode="after")
    def _shopify_links(self) -> Settings:
        """Shopify's recovery links live on the shop's myshopify.com domain."""
        if self.shopify_webhook_secret and SHOPIFY_HOSTS not in self.link_hosts:
            self.link_hosts = [*self.link_hosts, SHOPIFY_HOSTS]
        return self

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.journeys)

    @cached_property
    def message_link_hosts(self) -> LinkHosts:
        return LinkHosts.of(self.shop_url, self.link_hosts)

    @property
    def unsubscribe_key(self) -> bytes | None:
        """The key new unsubscribe links are signed with (the newest secret), None when unset."""
        return self.unsubscribe_secret[0].encode() if self.unsubscribe_secret else None

    @property
    def unsubscribe_keys(self) -> list[bytes]:
        """Every key a link may have been signed with, newest first (rotation keeps old links working)."""
        return [secret.encode() for secret in self.unsubscribe_secret]
