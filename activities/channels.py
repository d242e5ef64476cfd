"""Delivery channels behind one small interface, chosen per journey step:

- `email` — SMTP through aiosmtplib (`BREADCRUMB_SMTP_URL`); multipart/alternative text + HTML,
  `List-Unsubscribe` with one-click POST, a Message-ID derived from the idempotency key;
- `sms` — an HTTP webhook (`BREADCRUMB_SMS_WEBHOOK_URL`) receiving `{"to", "body"}` with an
  `Idempotency-Key` header;
- `outbox` — no delivery: the message stays in the store (the default for `breadcrumb dev`, and
  what `email`/`sms` fall back to when their URL is not set).

A channel either returns (delivered) or raises. `PermanentDeliveryError` (`permanent = True`) means
retrying cannot help — the mailbox does not exist, the webhook refused the request — and the send
activity marks the message `failed` with the reason. Anything else is transient (connection
refused, timeouts, 4xx SMTP replies, 5xx webhook replies): the activity raises and Temporal
retries it with backoff; the message row and its idempotency key stay the same, so a retry never
writes or delivers a second message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

from store.models import Message, as_utc

log = logging.getLogger("breadcrumb.delivery")


class Channel(Protocol):
    def deliver(self, message: Message) -> None:
        """Deliver once; the message's idempotency key travels with it so a downstream can dedupe."""


class DeliveryError(Exception):
    permanent = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientDeliveryError(DeliveryError):
    """Worth retrying: the activity retry policy tries again with backoff."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: the message is marked `failed` with this reason."""

    permanent = True


class DeliveryConfigError(ValueError):
    """A delivery setting that cannot work; the message names the BREADCRUMB_ variable."""


class OutboxChannel:
    def deliver(self, message: Message) -> None:
        log.info(
            "outbox delivery %s step %s of %s (%s)", message.id, message.step, message.journey, message.idempotency_key
        )


# --- email -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # implicit TLS (smtps://, usually port 465)
    start_tls: bool | None = None  # None: upgrade when the server offers STARTTLS
    timeout: float = 30.0  # per SMTP reply
    ca_file: str | None = None  # trust these CAs for the relay's certificate instead of the system's
    deadline: float = 20.0  # the whole conversation, however many replies are slow

    @classmethod
    def from_url(
        cls, url: str, starttls: str = "auto", timeout: float = 30.0, ca_file: str = "", deadline: float = 20.0
    ) -> SmtpConfig:
        """`smtp://user:pass@host:port` or `smtps://…`; user and password may be percent-encoded."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise DeliveryConfigError(
                f"BREADCRUMB_SMTP_URL must start with smtp:// or smtps://, not {parts.scheme!r}://"
            )
        if not parts.hostname:
            raise DeliveryConfigError("BREADCRUMB_SMTP_URL has no host (smtp://user:pass@host:port)")
        if ca_file and not Path(ca_file).is_file():
            raise DeliveryConfigError(f"BREADCRUMB_SMTP_CA_FILE {ca_file!r} is not a readable file")
        try:
            port = parts.port
        except ValueError:
            raise DeliveryConfigError("BREADCRUMB_SMTP_URL has an invalid port") from None
        use_tls = parts.scheme == "smtps"
        if use_tls and starttls == "always":
            raise DeliveryConfigError("BREADCRUMB_SMTP_STARTTLS=always cannot be combined with smtps:// (implicit TLS)")
        return cls(
            hostname=parts.hostname,
            port=port or (465 if use_tls else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=False if use_tls else {"auto": None, "always": True, "never": False}[starttls],
            timeout=min(timeout, deadline),
            ca_file=ca_file or None,
            deadline=deadline,
        )


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The same idempotency key always gives the same Message-ID, so a mail system that dedupes on
    it (and anyone reading logs) sees a retried delivery as the same message."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"<{digest}.breadcrumb@{domain}>"


def _check_address(value: str, variable: str) -> str:
    name, address = parseaddr(value)
    if "@" not in address or len(getaddresses([value])) != 1:
        raise DeliveryConfigError(f"{variable} must be one address like 'Shop <hello@shop.example>', not {value!r}")
    return value


class SmtpChannel:
    def __init__(self, config: SmtpConfig, sender: str, reply_to: str = "") -> None:
        self.config = config
        self.sender = _check_address(sender, "BREADCRUMB_SMTP_FROM")
        self.reply_to = _check_address(reply_to, "BREADCRUMB_SMTP_REPLY_TO") if reply_to else ""
        self.envelope_from = parseaddr(sender)[1]
        self.domain = self.envelope_from.rpartition("@")[2]

    def build(self, message: Message) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        try:
            email["To"] = Address(addr_spec=message.recipient)
        except (ValueError, IndexError) as exc:
            raise PermanentDeliveryError(f"invalid recipient address {message.recipient!r}: {exc}") from None
        if self.reply_to:
            email["Reply-To"] = self.reply_to
        email["Subject"] = message.subject
        email["Date"] = format_datetime(as_utc(message.created_at))
        email["Message-ID"] = message_id_for(message.idempotency_key, self.domain)
        if message.unsubscribe_url:
            # RFC 2369 + RFC 8058: mailbox providers show an unsubscribe button and POST to the link.
            email["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email["X-Breadcrumb-Idempotency-Key"] = message.idempotency_key
        email.set_content(message.body)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

    def deliver(self, message: Message) -> None:
        email = self.build(message)
        try:
            asyncio.run(self._send(email, message.recipient))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused(exc.recipients) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise _refused([exc]) from None
        except aiosmtplib.SMTPDataError as exc:
            reason = f"SMTP {exc.code} after DATA: {exc.message}"
            raise (PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError)(reason) from None
        except aiosmtplib.SMTPSenderRefused as exc:
            # Our own From was refused: a configuration problem, so keep retrying (visible in
            # Temporal and on the message) rather than failing every message until it is fixed.
            raise TransientDeliveryError(f"SMTP {exc.code} refused sender {exc.sender}: {exc.message}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise TransientDeliveryError(f"SMTP {exc.code}: {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(
                f"SMTP server {self.config.hostname}:{self.config.port} unreachable: {exc or type(exc).__name__}"
            ) from None

    async def _send(self, email: EmailMessage, recipient: str) -> None:
        """One SMTP conversation, cut at the delivery deadline (a relay that answers every reply just
        inside `timeout` must not outlast the send activity)."""
        c = self.config
        await asyncio.wait_for(
            aiosmtplib.send(
                email,
                sender=self.envelope_from,
                recipients=[recipient],
                hostname=c.hostname,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.use_tls,
                start_tls=c.start_tls,
                timeout=c.timeout,
                cert_bundle=c.ca_file,
            ),
            c.deadline,
        )


def _refused(recipients: list[aiosmtplib.SMTPRecipientRefused]) -> DeliveryError:
    worst = max(recipients, key=lambda r: r.code)
    # No address in the reason: a transient one travels into Temporal's history with the retry.
    reason = f"SMTP {worst.code} refused the recipient: {worst.message.replace(worst.recipient, '<recipient>')}"
    if all(r.code >= 500 for r in recipients):
        return PermanentDeliveryError(reason)
    return TransientDeliveryError(reason)


# --- SMS -------------------------------------------------------------------------------------

RETRYABLE_4XX = {408, 409, 425, 429}  # timeouts, conflicts while a retry is in flight, rate limits


class SmsWebhookChannel:
    def __init__(
        self,
        url: str,
        token: str = "",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        deadline: float = 20.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryConfigError(f"BREADCRUMB_SMS_WEBHOOK_URL must be an http(s) URL, not {url!r}")
        self.url = url
        self.token = token
        # httpx bounds each phase (pool, connect, write, read) on its own: a quarter of the deadline
        # each keeps the whole call inside it.
        self.client = client or httpx.Client(timeout=min(timeout, deadline / 4))

    def deliver(self, message: Message) -> None:
        headers = {"Idempotency-Key": message.idempotency_key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.client.post(self.url, json={"to": message.recipient, "body": message.body}, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"SMS webhook unreachable: {type(exc).__name__}: {exc}") from None
        if response.is_success:
            return
        detail = " ".join(response.text.split())[:300]
        reason = f"SMS webhook answered {response.status_code}: {detail or response.reason_phrase}"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
            raise PermanentDeliveryError(reason)
        raise TransientDeliveryError(reason)


# --- wiring ----------------------------------------------------------------------------------


def channels_from_settings(settings) -> dict[str, Channel]:
    """`email` and `sms` from their settings, `outbox` otherwise; a setting that cannot work is a
    DeliveryConfigError at start-up naming the variable."""
    outbox = OutboxChannel()
    channels: dict[str, Channel] = {"email": outbox, "sms": outbox, "outbox": outbox}
    real = []
    if settings.smtp_url:
        if not settings.smtp_from:
            raise DeliveryConfigError(
                "BREADCRUMB_SMTP_FROM is required with BREADCRUMB_SMTP_URL (e.g. 'Glow Skincare <hello@glow.example>')"
            )
        config = SmtpConfig.from_url(
            settings.smtp_url,
            settings.smtp_starttls,
            settings.smtp_timeout,
            settings.smtp_ca_file,
            settings.delivery_deadline,
        )
        channels["email"] = SmtpChannel(config, settings.smtp_from, settings.smtp_reply_to)
        real.append("email")
    if settings.sms_webhook_url:
        channels["sms"] = SmsWebhookChannel(
            settings.sms_webhook_url,
            settings.sms_webhook_token,
            settings.sms_timeout,
            deadline=settings.delivery_deadline,
        )
        real.append("sms")
    if real:
        missing = [
            name
            for name, value in (
                ("BREADCRUMB_PUBLIC_BASE_URL", settings.public_base_url),
                ("BREADCRUMB_SHOP_URL", settings.shop_url),
            )
            if not value
        ]
        if settings.unsubscribe_key is None:
            missing.append("BREADCRUMB_UNSUBSCRIBE_SECRET")
        if missing:
            raise DeliveryConfigError(
                f"real {' and '.join(real)} delivery needs {', '.join(missing)}: messages "
                "link to the shop and carry a signed unsubscribe link"
            )
    return channels
