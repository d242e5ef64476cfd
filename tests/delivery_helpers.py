"""Real delivery endpoints for tests: an SMTP server (aiosmtpd) and an SMS webhook (http.server),
each on a free loopback port in this process, recording what they receive."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Mailbox:
    """aiosmtpd handler: keeps every accepted message; refuses recipients by prefix with a given reply.

    With `data_delay` it is a slow relay: it keeps the message as soon as DATA ends, then takes that
    long to answer 250 — a client that gives up meanwhile (or is cut off) has still delivered it."""

    def __init__(self, data_delay: float = 0.0) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.received_at: list[float] = []  # time.monotonic() of each accepted message
        self.encrypted: list[bool] = []  # per accepted message: whether its session ran over TLS
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()
        self.data_delay = data_delay
        self.answering = 0  # messages kept whose 250 is still to come

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for prefix, reply in self.refuse.items():
            if address.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            self.received_at.append(time.monotonic())
            self.encrypted.append(session.ssl is not None)
        if self.data_delay:
            self.answering += 1
            try:
                await asyncio.sleep(self.data_delay)
            finally:
                self.answering -= 1
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [email.message_from_bytes(content, policy=email.policy.default) for _, _, content in self.received]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} emails, got {len(self.received)}")
            time.sleep(0.05)
        return self.messages()


class SmtpServer:
    """An aiosmtpd Controller on a given port; `start()`/`stop()` may be called to simulate an outage."""

    def __init__(
        self, port: int, mailbox: Mailbox | None = None, credentials: tuple[str, str] | None = None, tls_context=None
    ) -> None:
        self.port = port
        self.mailbox = mailbox or Mailbox()
        self.credentials = credentials
        self.tls_context = tls_context  # given: the relay offers STARTTLS and refuses mail before it
        self.controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok)

    def start(self) -> SmtpServer:
        kwargs = {}
        if self.credentials:
            kwargs = dict(authenticator=self._authenticate, auth_require_tls=False)
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@dataclass
class WebhookCall:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class SmsWebhook:
    """A tiny HTTP server standing in for an SMS provider. `replies` is consumed one per request
    (status, body); when empty it answers 200."""

    port: int
    calls: list[WebhookCall] = field(default_factory=list)
    replies: list[tuple[int, str]] = field(default_factory=list)

    def start(self) -> SmsWebhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                hook.calls.append(
                    WebhookCall(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"null"))
                )
                status, text = hook.replies.pop(0) if hook.replies else (200, '{"id": "sms-1"}')
                payload = text.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a multipart/alternative email."""
    assert message.get_content_type() == "multipart/alternative", message.get_content_type()
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html
