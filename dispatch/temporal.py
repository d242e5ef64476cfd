"""Connecting to Temporal (plain, TLS, mTLS or Temporal Cloud's API key) with Breadcrumb's data
converter, and making sure our search attributes exist in the namespace."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from store.settings import Settings
from dispatch.codec import configured_keys, data_converter
from workflows import search

log = logging.getLogger(__name__)

KIND = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DOUBLE": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
}
# The type names of `tcld namespace search-attributes add --search-attribute NAME=TYPE`.
TCLD_TYPE = {"KEYWORD": "Keyword", "DOUBLE": "Double"}


def converter_for(settings: Settings) -> DataConverter:
    """The data converter of `settings`: payloads encrypted with BREADCRUMB_PAYLOAD_KEYS, or in clear
    only under BREADCRUMB_ALLOW_CLEAR_PAYLOADS (raises PayloadKeyError, one line, otherwise)."""
    keys = configured_keys(settings.payload_keys, settings.allow_clear_payloads)
    if keys is None:
        log.warning("BREADCRUMB_ALLOW_CLEAR_PAYLOADS: Temporal payloads are NOT encrypted")
    return data_converter(keys)


class TemporalConnectError(RuntimeError):
    """Temporal could not be reached as configured; the message names the settings to check."""


def tls_config(settings: Settings) -> TLSConfig | bool:
    """The TLS of BREADCRUMB_TEMPORAL_TLS*, or False for a plain connection. The files are read here,
    once per connection; worker/preflight.py has already said which one is missing or unreadable."""
    if not settings.temporal_tls:
        return False

    def pem(path: str) -> bytes | None:
        return Path(path).expanduser().read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=pem(settings.temporal_tls_ca),
        domain=settings.temporal_tls_server_name or None,
        client_cert=pem(settings.temporal_tls_cert),
        client_private_key=pem(settings.temporal_tls_key),
    )


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client of the configured cluster and namespace, with the configured data converter and
    transport security. Fails within BREADCRUMB_TEMPORAL_CONNECT_TIMEOUT (plus a little) with a
    TemporalConnectError that says which settings to check, never hangs."""
    timeout = settings.temporal_connect_timeout
    connecting = Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=converter_for(settings),
        runtime=runtime,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key or None,
        connect_timeout=timedelta(seconds=timeout),
    )
    try:
        return await asyncio.wait_for(connecting, timeout + 5)
    except TimeoutError:
        raise TemporalConnectError(
            connection_problem(settings, f"no answer within {timeout:g} s (BREADCRUMB_TEMPORAL_CONNECT_TIMEOUT)")
        ) from None
    except RuntimeError as exc:
        raise TemporalConnectError(connection_problem(settings, str(exc))) from exc


def connection_problem(settings: Settings, error: str) -> str:
    """One line: where we tried to connect, how, what went wrong, and the settings that decide it."""
    reason = " ".join(error.split())
    where = f"cannot connect to Temporal at {settings.temporal_address} (BREADCRUMB_TEMPORAL_ADDRESS)"
    if not settings.temporal_tls:
        return (
            f"{where} without TLS: {reason} — if the server expects TLS (Temporal Cloud always does), "
            "set BREADCRUMB_TEMPORAL_TLS=true"
        )
    if "certificate" in reason.lower() and (
        "issuer" in reason.lower() or "notvalidforname" in reason.lower() or "invalid peer" in reason.lower()
    ):
        return (
            f"{where} over TLS: the server's certificate was not accepted ({reason}) — set "
            "BREADCRUMB_TEMPORAL_TLS_CA to the CA that signed it and, if it names another host, "
            "BREADCRUMB_TEMPORAL_TLS_SERVER_NAME"
        )
    if not settings.temporal_tls_cert:
        return (
            f"{where} over TLS without a client certificate: {reason} — if the server requires mTLS, set "
            "BREADCRUMB_TEMPORAL_TLS_CERT and BREADCRUMB_TEMPORAL_TLS_KEY to a client certificate it trusts"
        )
    return (
        f"{where} over mTLS with BREADCRUMB_TEMPORAL_TLS_CERT={settings.temporal_tls_cert}: {reason} — check "
        "that the server trusts the CA that signed this certificate (and BREADCRUMB_TEMPORAL_TLS_KEY is its key)"
    )


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime that serves the SDK's worker metrics for Prometheus on `port`."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


class TemporalNotReady(RuntimeError):
    """The cluster or the namespace did not become ready within the wait."""


# What a cluster answers while it starts, or for a namespace created moments ago (the frontend's
# namespace cache refreshes every few seconds): worth asking again.
TRANSIENT = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.NOT_FOUND, RPCStatusCode.DEADLINE_EXCEEDED}


class SearchAttributesMissing(RuntimeError):
    """The namespace lacks search attributes we may not add ourselves (Temporal Cloud): the message
    carries the `tcld` line that adds them."""

    def __init__(self, namespace: str, missing: list[SearchAttributeKey]) -> None:
        self.missing = sorted(key.name for key in missing)
        super().__init__(
            f"namespace {namespace!r} lacks the search attributes {', '.join(self.missing)}, and this "
            f"connection may not add them; add them with:\n{tcld_line(namespace, missing)}"
        )


def tcld_line(namespace: str, keys: list[SearchAttributeKey]) -> str:
    """The Temporal Cloud CLI command that adds `keys` to `namespace` (its `name.account` id)."""
    flags = " ".join(
        f'--search-attribute "{key.name}={TCLD_TYPE[key.indexed_value_type.name]}"'
        for key in sorted(keys, key=lambda key: key.name)
    )
    return f"tcld namespace search-attributes add --namespace {namespace} {flags}"


# What a cluster answers when this client may not administer it (Temporal Cloud's operator service,
# a self-hosted cluster with an authorizer): check instead of add.
REFUSED = {RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED}


async def register_search_attributes(client: Client, wait: float = 120.0, may_add: bool = True) -> list[str]:
    """Add the Breadcrumb* search attributes that the namespace lacks; returns the ones added.

    Where they may not be added (`may_add` False — Temporal Cloud with an API key — or the operator
    service refuses) it only checks them, and raises SearchAttributesMissing with the `tcld` line
    when some are missing. On a first start (compose) Temporal may still be coming up or not know
    the namespace yet: those answers are retried with backoff for up to `wait` seconds, then
    TemporalNotReady says which."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return await _register_missing(client, may_add)
        except RPCError as exc:
            if exc.status not in TRANSIENT:
                raise
            if time.monotonic() + delay > deadline:
                raise TemporalNotReady(
                    f"Temporal at {client.service_client.config.target_host} (namespace {client.namespace!r}) "
                    f"was not ready within {wait:.0f} s: {exc.status.name} {exc.message}"
                ) from exc
            log.warning("Temporal not ready (%s %s); asking again in %.1f s", exc.status.name, exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _register_missing(client: Client, may_add: bool) -> list[str]:
    existing = await _listed(client)
    missing = [key for key in search.ALL if existing is None or key.name not in existing]
    if not missing:
        return []
    if may_add:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    search_attributes={key.name: KIND[key.indexed_value_type.name] for key in missing},
                    namespace=client.namespace,
                )
            )
            return sorted(key.name for key in missing)
        except RPCError as exc:
            if exc.status not in REFUSED:
                raise
            log.info(
                "the operator service refused to add search attributes (%s); checking them instead", exc.status.name
            )
    if existing is None:  # not listed: ask visibility about each one
        missing = [key for key in missing if not await _known(client, key)]
    if missing:
        raise SearchAttributesMissing(client.namespace, missing)
    return []


async def _listed(client: Client) -> set[str] | None:
    """The namespace's custom search attributes, or None where the operator service will not list them
    (the time-skipping test server; a connection without admin rights)."""
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        if exc.status not in REFUSED:
            raise
        return None
    return set(response.custom_attributes)


async def _known(client: Client, key: SearchAttributeKey) -> bool:
    """Whether visibility accepts a query on `key`: an unknown attribute is an INVALID_ARGUMENT."""
    value = "0" if key.indexed_value_type.name == "DOUBLE" else "'probe'"
    try:
        await client.count_workflows(f"{key.name} = {value}")
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        return False
    return True
