"""Temporal payload encryption: every payload Breadcrumb hands to Temporal is AES-GCM ciphertext.

Temporal stores workflow inputs, activity results, signals, markers and failure messages in its
history until the namespace's retention ends; encrypting them on our side (client, worker, API) means
neither the Temporal server, its database nor anyone reading histories sees a shopper's data.

Keys come from `BREADCRUMB_PAYLOAD_KEYS`: `id:base64key` pairs, comma separated, newest first.
Payloads are encrypted with the first key and carry its id in their metadata; any listed key
decrypts. Rotating is listing a new key first and keeping the old one until the histories it wrote
have aged out. Payloads without our encoding (histories recorded before encryption) pass through.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """A malformed `BREADCRUMB_PAYLOAD_KEYS`, or a payload encrypted with a key that is not listed.
    The message is one line and never contains key material."""


@dataclasses.dataclass(frozen=True)
class PayloadKeys:
    """The listed keys, newest (the one that encrypts) first."""

    ids: tuple[str, ...]
    material: tuple[bytes, ...] = dataclasses.field(repr=False)  # never in a log line or a traceback

    @classmethod
    def parse(cls, value: str) -> PayloadKeys:
        """`id:base64key,…` → keys; a one-line PayloadKeyError naming the bad entry otherwise."""
        ids: list[str] = []
        keys: list[bytes] = []
        for position, entry in enumerate((part.strip() for part in value.split(",")), start=1):
            if not entry:
                continue
            where = f"BREADCRUMB_PAYLOAD_KEYS entry {position}"
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not encoded.strip():
                raise PayloadKeyError(f"{where} is not 'id:base64key'")
            if not KEY_ID_PATTERN.match(key_id):
                raise PayloadKeyError(f"{where}: key id {key_id[:64]!r} must be 1-64 letters, digits, '.', '_' or '-'")
            if key_id in ids:
                raise PayloadKeyError(f"{where}: key id {key_id!r} is listed twice")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise PayloadKeyError(f"{where} ({key_id!r}): the key is not valid base64") from None
            if len(key) not in (16, 24, 32):
                raise PayloadKeyError(
                    f"{where} ({key_id!r}): the key is {len(key)} bytes; AES needs 16, 24 or 32 "
                    f'(make one with: python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())")'
                )
            ids.append(key_id)
            keys.append(key)
        if not ids:
            raise PayloadKeyError("BREADCRUMB_PAYLOAD_KEYS lists no key")
        return cls(tuple(ids), tuple(keys))

    @classmethod
    def generate(cls, key_id: str | None = None) -> PayloadKeys:
        """A fresh random 256-bit key (development stacks, ephemeral simulation servers)."""
        return cls((key_id or f"dev-{secrets.token_hex(4)}",), (os.urandom(32),))

    def render(self) -> str:
        """The `BREADCRUMB_PAYLOAD_KEYS` value of these keys."""
        return ",".join(
            f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in zip(self.ids, self.material, strict=False)
        )


class EncryptionCodec(PayloadCodec):
    """AES-GCM over the whole serialized payload (its encoding metadata included), so what Temporal
    stores says nothing but "encrypted" and the key id. The key id is also the associated data: a
    payload cannot be passed off as encrypted under another id."""

    def __init__(self, keys: PayloadKeys) -> None:
        self.key_id = keys.ids[0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in zip(keys.ids, keys.material, strict=False)}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), self.key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING or KEY_ID not in payload.metadata:
            return payload  # written before encryption (or by the clear opt-out): readable as it is
        key_id = payload.metadata[KEY_ID].decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"a payload is encrypted with key id {key_id!r}, which BREADCRUMB_PAYLOAD_KEYS "
                f"does not list (listed: {', '.join(self._ciphers)})"
            )
        clear = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        return Payload.FromString(clear)


def data_converter(keys: PayloadKeys | None) -> DataConverter:
    """The one data converter of every Breadcrumb client, worker, replayer and test environment:
    pydantic payloads, encrypted with `keys` (failure messages and stack traces too); `None`, only
    with the explicit clear opt-out, leaves payloads readable."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def configured_keys(payload_keys: str, allow_clear: bool) -> PayloadKeys | None:
    """The keys a process must use (`BREADCRUMB_PAYLOAD_KEYS`), or None under the explicit opt-out
    `BREADCRUMB_ALLOW_CLEAR_PAYLOADS`; with neither, a one-line PayloadKeyError stops start-up."""
    if payload_keys.strip():
        return PayloadKeys.parse(payload_keys)
    if allow_clear:
        return None
    raise PayloadKeyError(
        "BREADCRUMB_PAYLOAD_KEYS is not set, so Temporal would keep shoppers' data in clear: "
        "set it (docs/temporal-privacy.md) or opt out with BREADCRUMB_ALLOW_CLEAR_PAYLOADS=true"
    )
