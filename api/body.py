"""Reading request bodies under a size limit, as JSON whatever the content type says."""

from __future__ import annotations

import zlib

import orjson
from fastapi import Request

REQUEST_LIMIT = 500 * 1024
MESSAGE_LIMIT = 32 * 1024


class BadBody(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def read_limited(request: Request, limit: int = REQUEST_LIMIT) -> bytes:
    """The raw body, refused as soon as it passes `limit` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadBody(f"request body is {int(declared)} bytes; the limit is {limit // 1024} KB", 400)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadBody(f"request body is over the {limit // 1024} KB limit", 400)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(body: bytes, encoding: str | None, limit: int = REQUEST_LIMIT) -> bytes:
    """Undo `Content-Encoding: gzip` (the Segment libraries' `gzip=True`), never inflating past `limit`."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BadBody(f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or no encoding")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadBody(f"request body is not valid gzip: {exc}") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise BadBody(f"request body is over the {limit // 1024} KB limit once decompressed")
    if not inflater.eof:
        raise BadBody("request body is truncated gzip")
    return inflated


async def read_json(request: Request, limit: int = REQUEST_LIMIT) -> object:
    """Parse the body as JSON (analytics.js sends it as text/plain). NaN and Infinity are not JSON."""
    body = decode(await read_limited(request, limit), request.headers.get("content-encoding"), limit)
    if not body.strip():
        raise BadBody("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"request body is not valid JSON: {exc}") from None


def dumps(value: object) -> str:
    return orjson.dumps(value, default=str).decode()
