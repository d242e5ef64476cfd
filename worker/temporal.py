"""Connecting to Temporal with Breadcrumb's data converter, and registering our search attributes."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from workflows import search

KIND = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DOUBLE": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
}


async def connect(address: str, namespace: str = "default", runtime: Runtime | None = None) -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter,
                                runtime=runtime)


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime that serves the SDK's worker metrics for Prometheus on `port`."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


async def register_search_attributes(client: Client) -> list[str]:
    """Add the Breadcrumb* search attributes that the namespace lacks; returns the ones added."""
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
