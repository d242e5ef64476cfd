"""The access log never holds an email, phone or token.

uvicorn logs each request's path and query string. Ours carry personal data and secrets:
`/api/v1/customers/{email}`, `/admin/people?email=…`, `/u/{token}`. A filter on the
`uvicorn.access` logger rewrites the logged path before any handler formats it: every query value
is replaced, the identifier segment of the Customer.io customer routes and the unsubscribe token
are replaced, and so is any other path segment that looks like an email or a phone number.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

REDACTED = "[redacted]"
# (prefix, segments after it that identify someone or are secret)
SECRET_SEGMENTS = (("/api/v1/customers/", 1), ("/u/", 1))
PERSONAL = re.compile(r"@|^\+?[\d\s().-]{7,}$")


def redact(target: str) -> str:
    """`/api/v1/customers/ada@x.io/events?x=1` → `/api/v1/customers/[redacted]/events?x=[redacted]`."""
    path, question, query = target.partition("?")
    segments = path.split("/")
    for prefix, count in SECRET_SEGMENTS:
        if path.startswith(prefix):
            start = prefix.count("/")
            for index in range(start, min(start + count, len(segments))):
                segments[index] = REDACTED if segments[index] else segments[index]
    segments = [REDACTED if segment and PERSONAL.search(unquote(segment)) else segment for segment in segments]
    redacted = "/".join(segments)
    if question:
        pairs = [pair.partition("=") for pair in query.split("&") if pair]
        redacted += "?" + "&".join(f"{name}={REDACTED}" if value or eq else name for name, eq, value in pairs)
    return redacted


class RedactingFilter(logging.Filter):
    """For uvicorn's access-log record: args are (client, method, path with query, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger once per process."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
        logger.addFilter(RedactingFilter())
