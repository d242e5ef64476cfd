"""Secure Temporal connections against a real dev server behind a TLS / mTLS terminator
(tests/tls_terminator.py): TLS with our CA, mTLS with the right client certificate, and clear, quick
failures — naming the setting to fix — for a missing or foreign client certificate, an untrusted server
certificate or TLS not turned on. `breadcrumb temporal-setup` with an API key (Temporal Cloud) only checks
the search attributes and prints the `tcld` line for the missing ones."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from conftest import venv_binary
from dispatch.temporal import KIND, SearchAttributesMissing, TemporalConnectError, connect, register_search_attributes
from store.settings import REPO_ROOT, Settings
from tls_terminator import Authority, Pem, TlsTerminator
from worker.preflight import ConfigurationError, check_temporal_connection
from workflows import search

# A connection that fails must say so well within this (the connect timeout is 3 s in these tests).
FAILS_WITHIN = 10.0


@workflow.defn(sandboxed=False)
class Greeting:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"hello {name}"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder, "ca")
        self.server = self.ca.issue("server", server=True)
        self.client = self.ca.issue("client", server=False)
        self.stranger = Authority(folder, "other-ca").issue("client", server=False)  # a client of another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def dev_server():
    server = await WorkflowEnvironment.start_local(dev_server_existing_path=venv_binary("temporal"), ui=False)
    yield server
    await server.shutdown()


def _port(server: WorkflowEnvironment) -> int:
    return int(server.client.service_client.config.target_host.rsplit(":", 1)[1])


def _settings(address: str, pki: Pki, client: Pem | None = None, **more) -> Settings:
    values = dict(
        temporal_address=address, temporal_tls=True, temporal_tls_ca=str(pki.ca.pem), temporal_connect_timeout=3.0
    )
    if client is not None:
        values.update(temporal_tls_cert=str(client.cert), temporal_tls_key=str(client.key))
    return Settings(**{**values, **more})


async def _greet_through(settings: Settings) -> str:
    """A worker and a workflow start, both over the connection `settings` describe."""
    client = await connect(settings)
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Greeting], workflow_runner=UnsandboxedWorkflowRunner()):
        return await client.execute_workflow(
            Greeting.run,
            "shop",
            id=f"greet-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=60),
        )


async def _refused(settings: Settings) -> str:
    started = time.monotonic()
    with pytest.raises(TemporalConnectError) as error:
        await connect(settings)
    assert time.monotonic() - started < FAILS_WITHIN, "a refused connection must not hang"
    return str(error.value)


async def test_tls_starts_a_workflow_and_says_what_to_fix_when_it_cannot(dev_server, pki):
    async with TlsTerminator(_port(dev_server), pki.server) as tls:
        assert await _greet_through(_settings(tls.address, pki)) == "hello shop"
        named = _settings(tls.address, pki, temporal_tls_server_name="localhost")
        assert await (await connect(named)).count_workflows() is not None

        plain = await _refused(Settings(temporal_address=tls.address, temporal_connect_timeout=3.0))
        assert "without TLS" in plain and "set BREADCRUMB_TEMPORAL_TLS=true" in plain, plain
        untrusted = await _refused(_settings(tls.address, pki, temporal_tls_ca=""))  # the system's CAs
        assert "certificate was not accepted" in untrusted and "BREADCRUMB_TEMPORAL_TLS_CA" in untrusted, untrusted


async def test_mtls_needs_a_client_certificate_of_the_servers_ca(dev_server, pki):
    async with TlsTerminator(_port(dev_server), pki.server, client_ca=pki.ca.pem) as mtls:
        assert await _greet_through(_settings(mtls.address, pki, pki.client)) == "hello shop"

        missing = await _refused(_settings(mtls.address, pki))
        assert "without a client certificate" in missing, missing
        assert "set BREADCRUMB_TEMPORAL_TLS_CERT and BREADCRUMB_TEMPORAL_TLS_KEY" in missing, missing
        foreign = await _refused(_settings(mtls.address, pki, pki.stranger))
        assert f"BREADCRUMB_TEMPORAL_TLS_CERT={pki.stranger.cert}" in foreign, foreign
        assert "trusts the CA that signed this certificate" in foreign, foreign


async def _breadcrumb(command: str, settings: Settings) -> tuple[int, str]:
    """`breadcrumb <command>` in a process of its own, its Temporal connection configured by `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")}
    env["BREADCRUMB_PAYLOAD_KEYS"] = os.environ["BREADCRUMB_PAYLOAD_KEYS"]
    env.update(
        {
            f"BREADCRUMB_{name.upper()}": str(value)
            for name, value in settings.model_dump().items()
            if name.startswith("temporal_")
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, output.decode()


async def test_a_worker_that_cannot_connect_says_why_in_one_line(dev_server, pki):
    async with TlsTerminator(_port(dev_server), pki.server, client_ca=pki.ca.pem) as mtls:
        code, output = await _breadcrumb("worker", _settings(mtls.address, pki))
    assert code == 1, output
    assert "Traceback" not in output, output
    line = next(line for line in output.splitlines() if line.startswith("breadcrumb worker:"))
    assert "set BREADCRUMB_TEMPORAL_TLS_CERT and BREADCRUMB_TEMPORAL_TLS_KEY" in line, output


async def test_temporal_setup_on_cloud_checks_and_prints_the_tcld_line(pki):
    """With an API key (Temporal Cloud) the command never tries to add: it lists, and when attributes are
    missing prints the exact tcld line and fails; once they are there it succeeds."""
    server = await WorkflowEnvironment.start_local(dev_server_existing_path=venv_binary("temporal"), ui=False)
    try:
        async with TlsTerminator(_port(server), pki.server) as tls:
            cloud = _settings(tls.address, pki, temporal_api_key="cloud-api-key", temporal_namespace="default")
            code, output = await _breadcrumb("temporal-setup", cloud)
            assert code == 1, output
            flags = (
                '--search-attribute "BreadcrumbCartValue=Double" --search-attribute "BreadcrumbPersonId=Keyword" '
                '--search-attribute "BreadcrumbRoute=Keyword" --search-attribute "BreadcrumbStatus=Keyword"'
            )
            assert f"tcld namespace search-attributes add --namespace default {flags}" in output, output
            listed = await server.client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace="default")
            )
            assert not {key.name for key in search.ALL} & set(listed.custom_attributes), "it added them itself"

            await server.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace="default",
                    search_attributes={key.name: KIND[key.indexed_value_type.name] for key in search.ALL},
                )
            )  # what tcld would do
            code, output = await _breadcrumb("temporal-setup", cloud)
            assert code == 0 and "already registered" in output, output
    finally:
        await server.shutdown()


async def test_a_connection_that_may_not_list_asks_visibility(dev_server, monkeypatch):
    """A role without operator rights (list refused, add refused): each attribute is checked with a
    visibility query, and only the unknown ones are reported."""
    client = await connect(Settings(temporal_address=dev_server.client.service_client.config.target_host))
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={search.PERSON_ID.name: KIND["KEYWORD"], search.CART_VALUE.name: KIND["DOUBLE"]},
        )
    )

    async def refused(*_args, **_kwargs):
        raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")

    monkeypatch.setattr(client.operator_service, "list_search_attributes", refused)
    monkeypatch.setattr(client.operator_service, "add_search_attributes", refused)
    with pytest.raises(SearchAttributesMissing) as error:
        await register_search_attributes(client, wait=30)
    assert error.value.missing == [search.ROUTE.name, search.STATUS.name]
    assert '--search-attribute "BreadcrumbRoute=Keyword" --search-attribute "BreadcrumbStatus=Keyword"' in str(
        error.value
    )


# ---- preflight: the TLS settings, before anything connects ------------------------------------------


def test_preflight_names_the_tls_setting_to_fix(tmp_path, pki):
    def problem(**values) -> str:
        with pytest.raises(ConfigurationError) as error:
            check_temporal_connection(Settings(**values))
        return str(error.value)

    check_temporal_connection(
        Settings(
            temporal_tls=True,
            temporal_tls_ca=str(pki.ca.pem),
            temporal_tls_cert=str(pki.client.cert),
            temporal_tls_key=str(pki.client.key),
            temporal_api_key="key",
        )
    )
    check_temporal_connection(Settings())  # plain, the default

    assert problem(temporal_api_key="key").startswith(
        "BREADCRUMB_TEMPORAL_API_KEY set but BREADCRUMB_TEMPORAL_TLS is off — set BREADCRUMB_TEMPORAL_TLS=true"
    )
    assert "BREADCRUMB_TEMPORAL_TLS_CA set but BREADCRUMB_TEMPORAL_TLS is off" in problem(
        temporal_tls_ca=str(pki.ca.pem)
    )
    assert problem(temporal_tls=True, temporal_tls_cert=str(pki.client.cert)).startswith(
        "BREADCRUMB_TEMPORAL_TLS_KEY: missing — mTLS needs both"
    )
    assert problem(temporal_tls=True, temporal_tls_key=str(pki.client.key)).startswith(
        "BREADCRUMB_TEMPORAL_TLS_CERT: missing"
    )
    gone = tmp_path / "gone.pem"
    assert (
        problem(temporal_tls=True, temporal_tls_ca=str(gone))
        == f"BREADCRUMB_TEMPORAL_TLS_CA: {gone} does not exist — set it to the PEM file's path"
    )
    assert (
        problem(temporal_tls=True, temporal_tls_cert=str(pki.client.cert), temporal_tls_key=str(tmp_path))
        == f"BREADCRUMB_TEMPORAL_TLS_KEY: {tmp_path} cannot be read (Is a directory) — let the user running "
        "Breadcrumb read it"
    )
    der = tmp_path / "ca.der"
    der.write_bytes(b"0\x82\x01\x0a")
    assert (
        problem(temporal_tls=True, temporal_tls_ca=str(der))
        == f"BREADCRUMB_TEMPORAL_TLS_CA: {der} is not a PEM file (no -----BEGIN line) — export the certificate or "
        "key in PEM format"
    )
