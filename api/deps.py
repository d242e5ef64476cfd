"""Dependencies injected into routes: the store engine, the settings, the policy, the kinds of auth and
the trust level a Segment write key carries into ingest."""

from __future__ import annotations

import base64
import binascii
import hmac

from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

import anyio.to_thread
from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine

from journeys.policy import Policy
from store.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


P = ParamSpec("P")
T = TypeVar("T")


async def in_ingest_pool(request: Request, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a front door's store call on the API's small ingest pool (`Settings.ingest_threads`)."""
    return await anyio.to_thread.run_sync(partial(work, *args, **kwargs), limiter=request.app.state.ingest_limiter)


def get_policy(settings: Settings = Depends(get_settings)) -> Policy:
    return settings.policy


def matches_any(candidate: str, secrets: list[str]) -> bool:
    """Constant-time comparison against every configured secret (no early exit on a match)."""
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def require_admin(request: Request, settings: Settings = Depends(get_settings)) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not settings.admin_token or not matches_any(token.strip(), [settings.admin_token]):
        raise HTTPException(
            401,
            "admin routes need 'Authorization: Bearer <BREADCRUMB_ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


BROWSER, SERVER = "browser", "server"  # trust levels: a public (storefront) key, a secret (server) key
UNKNOWN_KEY = "unknown"


def write_key_trust(write_key: object, settings: Settings) -> str | None:
    """`server` for one of SERVER_WRITE_KEYS, `browser` for one of WRITE_KEYS, None for any other key.
    Both lists are compared in full, so timing tells nothing about which list holds a key."""
    if not isinstance(write_key, str) or not write_key:
        return None
    server = bool(settings.server_write_keys) and matches_any(write_key, settings.server_write_keys)
    browser = bool(settings.write_keys) and matches_any(write_key, settings.write_keys)
    return SERVER if server else BROWSER if browser else None


def segment_trust(request: Request, settings: Settings = Depends(get_settings)) -> str | None:
    """The trust level of the write key in the Basic header: `server`, `browser`, `unknown` (a header
    with a key we do not hold), or None when there is no header (the key may be in the body)."""
    if not request.headers.get("authorization"):
        return None
    credentials = basic_credentials(request)
    return (write_key_trust(credentials[0], settings) if credentials else None) or UNKNOWN_KEY


class CustomerIOAuthError(Exception):
    """Raised for a wrong or missing Customer.io site id / API key; rendered in Customer.io's error shape."""


def require_cio(request: Request, settings: Settings = Depends(get_settings)) -> None:
    credentials = basic_credentials(request)
    if (
        credentials is None
        or not settings.cio_site_id
        or not (
            matches_any(credentials[0], [settings.cio_site_id]) & matches_any(credentials[1], [settings.cio_api_key])
        )
    ):
        raise CustomerIOAuthError()


def nudge_dispatcher(request: Request) -> None:
    """Hub signals were queued: have this process's dispatcher deliver them now."""
    dispatcher = request.app.state.dispatcher
    if dispatcher is not None:
        dispatcher.nudge()
