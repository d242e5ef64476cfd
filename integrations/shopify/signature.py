"""Shopify's webhook signature: base64 HMAC-SHA256 of the raw body (`X-Shopify-Hmac-Sha256`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, secret: str) -> str:
    """The header value Shopify sends for `body` signed with `secret`."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verified(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """True when `header` is the signature of `body` under any of `secrets` (several during a
    rotation); compared in constant time, and every secret is tried whatever the outcome."""
    if not header:
        return False
    given = header.strip().encode()
    matches = [hmac.compare_digest(sign(body, secret).encode(), given) for secret in secrets if secret]
    return any(matches)
