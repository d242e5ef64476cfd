"""Connecting to Temporal with Breadcrumb's data converter, and registering our search attributes."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from store.settings import Settings
from dispatch.codec import configured_keys, data_converter
from workflows import search

log = logging.getLogger(__name__)

KIND = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DOUBLE": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
}


def converter_for(settings: Settings) -> DataConverter:
    """The data converter of `settings`: payloads encrypted with BREADCRUMB_PAYLOAD_KEYS, or in clear
    only under BREADCRUMB_ALLOW_CLEAR_PAYLOADS (raises PayloadKeyError, one line, otherwise)."""
    keys = configured_keys(settings.payload_keys, settings.allow_clear_payloads)
    if keys is None:
        log.warning("BREADCRUMB_ALLOW_CLEAR_PAYLOADS: Temporal payloads are NOT encrypted")
    return data_converter(keys)


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client of the configured cluster and namespace, with the configured data converter."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=converter_for(settings), runtime=runtime)


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime that serves the SDK's worker metrics for Prometheus on `port`."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


class TemporalNotReady(RuntimeError):
    """The cluster or the namespace did not become ready within the wait."""


# What a cluster answers while it starts, or for a namespace created moments ago (the frontend's
# namespace cache refreshes every few seconds): worth asking again.
TRANSIENT = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.NOT_FOUND, RPCStatusCode.DEADLINE_EXCEEDED}


async def register_search_attributes(client: Client, wait: float = 120.0) -> list[str]:
    """Add the Breadcrumb* search attributes that the namespace lacks; returns the ones added.

    On a first start (compose) Temporal may still be coming up or not know the namespace yet: those
    answers are retried with backoff for up to `wait` seconds, then TemporalNotReady says which."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return await _register_missing(client)
        except RPCError as exc:
            if exc.status not in TRANSIENT:
                raise
            if time.monotonic() + delay > deadline:
                raise TemporalNotReady(
                    f"Temporal at {client.service_client.config.target_host} (namespace {client.namespace!r}) "
                    f"was not ready within {wait:.0f} s: {exc.status.name} {exc.message}") from exc
            log.warning("Temporal not ready (%s %s); asking again in %.1f s", exc.status.name, exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _register_missing(client: Client) -> list[str]:
    try:
        existing = (
            await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
        ).custom_attributes
    except RPCError as exc:  # the time-skipping test server can add them but not list them
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = {}
    missing = {key.name: KIND[key.indexed_value_type.name] for key in search.ALL if key.name not in existing}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=client.namespace)
        )
    return sorted(missing)
