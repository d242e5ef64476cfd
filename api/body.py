"""Reading request bodies under a size limit, as JSON whatever the content type says."""

from __future__ import annotations

import zlib

import orjson
from fastapi import Request

REQUEST_LIMIT = 500 * 1024
MESSAGE_LIMIT = 32 * 1024
MAX_DEPTH = 32  # objects/arrays inside one message; real properties are a few levels deep


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


def problem_in(value: object, max_depth: int = MAX_DEPTH, dumped: str | None = None) -> str | None:
    """What makes a parsed JSON value unstorable, or None: nesting deeper than `max_depth` (orjson
    and the JSON columns refuse ~255 levels) or a NUL character in a string or key (PostgreSQL
    refuses U+0000 in text and jsonb; SQLite would take it, but both stores must behave alike).
    Iterative, so a hostile body cannot exhaust the stack. Given the value's JSON text (`dumped`),
    the walk is skipped when that text cannot hide a problem: no `\u0000` and fewer brackets than
    `max_depth`."""
    if dumped is not None and "\\u0000" not in dumped and dumped.count("{") + dumped.count("[") < max_depth:
        return None
    stack: list[tuple[object, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"{where or 'value'} contains a NUL character (\\u0000), which cannot be stored"
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                return f"{where or 'value'} is nested more than {max_depth} levels deep"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                path = (
                    f"{where}.{key}"
                    if isinstance(key, str) and where
                    else (key if isinstance(key, str) else f"{where}[{key}]")
                )
                if isinstance(key, str) and "\x00" in key:
                    return f"a key in {where or 'the body'} contains a NUL character (\\u0000), which cannot be stored"
                stack.append((child, depth + 1, path[:200]))
    return None


def payload_text(value: object, max_depth: int = MAX_DEPTH) -> str:
    """`value` as JSON for the quarantine table, whatever it is: cut below `max_depth` levels
    (deeper values become "…") so it always serialises. NULs come out escaped as \\u0000 text."""

    def cut(item: object, depth: int) -> object:
        if isinstance(item, dict):
            return {str(k): cut(v, depth + 1) for k, v in item.items()} if depth < max_depth else "…"
        if isinstance(item, list):
            return [cut(v, depth + 1) for v in item] if depth < max_depth else "…"
        return item

    return dumps(cut(value, 0))
