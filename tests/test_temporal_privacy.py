"""The proof of "no personal data in Temporal, in clear" on a real dev server.

A shopper with an email, a phone number and a first and last name browses, fills a cart, gets cart
recovery, buys; a second profile of hers (another email, same names) browses on another device; the
two are merged and then she is erased — every front door the shop uses, over real HTTP. Then every
event of every workflow run in the namespace (and every run's description: pending activities,
failures, search attributes, memo, summary) is read as Temporal holds it:

- raw: every string and every byte string anywhere in those protobufs — workflow ids, search
  attributes, summaries, failure messages, and payloads as stored — contains none of her details;
- decoded: every payload, decrypted with the codec, contains none either. This second check needs
  activities to return ids and decisions only (issue 12: the hub's projected history, sends that
  return no recipient or subject); when it fails it lists each payload that still carries them.

It also replays every finished history: encrypted histories replay with the codec's converter, and
do not without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from conftest import ADMIN_TOKEN, CIO_KEY, CIO_SITE, CONVERTER, venv_binary
from test_e2e_devserver import Stack, browse_and_cart, eventually, mid, product, stack  # noqa: F401 (the fixture)
from workflows.registry import ALL_WORKFLOWS
from workflows.hub import hub_id

pytestmark = pytest.mark.timeout(300)

FIRST_NAME, LAST_NAME = "Wilhelmina", "Quibbleton"
PHONE_DIGITS = "4155550187"
DECRYPTED_FINDINGS: list = []  # what the end-to-end run found in decrypted payloads (filled by it)
RAN: set[str] = set()  # the tests that ran, for the ones that read their results


@dataclass
class Found:
    """One place personal data was found: which run, which event, where in it."""

    workflow_id: str
    where: str
    secret: str

    def __str__(self) -> str:
        return f"{self.workflow_id}: {self.where} holds {self.secret!r}"


def fields_of(message: Message, path: str) -> Iterator[tuple[str, object]]:
    """Every leaf (string, bytes) and every nested message of `message`, with its path."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield f"{name}[{key}]", key
                yield from values_of(item, f"{name}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from values_of(item, f"{name}[{index}]")
        else:
            yield from values_of(value, name)


def values_of(value: object, path: str) -> Iterator[tuple[str, object]]:
    if isinstance(value, Message):
        yield path, value
        yield from fields_of(value, path)
    elif isinstance(value, (str, bytes)):
        yield path, value


def text(value: str | bytes) -> str:
    return (value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value).lower()


async def opened(payload: Payload) -> Payload:
    """The payload decrypted, as the codec endpoint would show it to an operator."""
    codec = CONVERTER.payload_codec
    return (await codec.decode([payload]))[0] if codec else payload


def event_label(event: HistoryEvent, activity_types: dict[int, str]) -> str:
    """`#5 ACTIVITY_TASK_COMPLETED (load_person)`: the event, and the activity or marker it concerns."""
    kind = HistoryEvent.DESCRIPTOR.fields_by_name["event_type"].enum_type.values_by_number[event.event_type].name
    name = ""
    if event.HasField("activity_task_scheduled_event_attributes"):
        name = event.activity_task_scheduled_event_attributes.activity_type.name
        activity_types[event.event_id] = name
    for attributes in (
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_started_event_attributes",
    ):
        if event.HasField(attributes):
            name = activity_types.get(getattr(event, attributes).scheduled_event_id, "")
    if event.HasField("marker_recorded_event_attributes"):
        name = event.marker_recorded_event_attributes.marker_name
    if event.HasField("workflow_execution_signaled_event_attributes"):
        name = event.workflow_execution_signaled_event_attributes.signal_name
    return f"#{event.event_id} {kind.removeprefix('EVENT_TYPE_')}" + (f" ({name})" if name else "")


async def local_activity_type(event: HistoryEvent) -> str | None:
    """A local activity's marker names its activity type inside its (encrypted) `data` detail."""
    details = event.marker_recorded_event_attributes.details
    if "data" not in details or not details["data"].payloads:
        return None
    data = await opened(details["data"].payloads[0])
    return json.loads(data.data).get("activity_type") if data.metadata.get("encoding") == b"json/plain" else None


async def search(workflow_id: str, where: str, message: Message, secrets: list[str]) -> tuple[list[Found], list[Found]]:
    """(found raw, found in decoded payloads) in one protobuf message."""
    raw, decoded = [], []
    for path, value in values_of(message, where):
        if isinstance(value, Payload):
            clear = await opened(value)
            contents = text(clear.data) + " " + " ".join(text(v) for v in clear.metadata.values())
            decoded += [Found(workflow_id, path, s) for s in secrets if s.lower() in contents]
        elif isinstance(value, (str, bytes)):
            raw += [Found(workflow_id, path, s) for s in secrets if s.lower() in text(value)]
    return raw, decoded


async def test_no_personal_data_in_clear_in_any_history_of_an_end_to_end_run(stack: Stack):
    tag = uuid.uuid4().hex[:8]
    email, other_email = f"wilhelmina.{tag}@privacy.example", f"willa.q.{tag}@privacy.example"
    anon, other_anon, cart, order = f"anon-p-{tag}", f"anon-q-{tag}", f"cart-{tag}", f"order-{tag}"
    cio = dict(auth=(CIO_SITE, CIO_KEY))

    # 1. She browses and fills a cart, then identifies with every detail a shop collects.
    await browse_and_cart(stack, anon, cart, price=72.0)
    await stack.segment(
        "identify",
        {
            "anonymousId": anon,
            "messageId": mid(),
            "traits": {"email": email, "phone": f"+1{PHONE_DIGITS}", "first_name": FIRST_NAME, "last_name": LAST_NAME},
        },
    )
    person = await stack.person_id(email)
    journey = await stack.journey_of(person, "cart_recovery")
    await stack.messages_until(person, lambda ms: any(m["status"] == "sent" for m in ms), "a sent cart message")

    # 2. On another device, as another profile with the same names: browse intent, identify.
    await stack.segment(
        "batch",
        {
            "batch": [
                {
                    "type": "track",
                    "anonymousId": other_anon,
                    "messageId": mid(),
                    "event": "Product Viewed",
                    "properties": product(f"DRESS-{i}", 79.0, "Dresses"),
                }
                for i in range(6)
            ]
        },
    )
    await stack.segment(
        "identify",
        {
            "anonymousId": other_anon,
            "messageId": mid(),
            "traits": {"email": other_email, "first_name": FIRST_NAME, "last_name": LAST_NAME},
        },
    )
    other = await stack.person_id(other_email)
    await stack.journey_of(other, "browse_recovery")

    # 3. She buys; the shop merges her two profiles, then erases her.
    await stack.segment(
        "track",
        {
            "anonymousId": anon,
            "messageId": mid(),
            "event": "Order Completed",
            "properties": {"order_id": order, "cart_id": cart, "revenue": 72.0},
        },
    )
    await stack.journey_result(journey)
    merged = await stack.http.post(
        "/api/v1/merge_customers", json={"primary": {"email": email}, "secondary": {"email": other_email}}, **cio
    )
    assert merged.status_code == 200, merged.text
    await eventually(lambda: closed(stack, hub_id(other)), "the absorbed profile's hub to end", 30)
    erased = await stack.http.delete(f"/api/v1/customers/{email}", **cio)
    assert erased.status_code == 200, erased.text
    await eventually(lambda: closed(stack, hub_id(person)), "the erased person's hub to end", 30)

    # 4. Everything Temporal holds in the namespace, run by run.
    secrets = [email, email.split("@")[0], other_email, other_email.split("@")[0], PHONE_DIGITS, FIRST_NAME, LAST_NAME]
    raw: list[Found] = []
    decoded: list[Found] = []
    runs = [run async for run in stack.client.list_workflows()]
    assert {hub_id(person), hub_id(other), journey} <= {run.id for run in runs}
    finished = []
    for run in runs:
        handle = stack.client.get_workflow_handle(run.id, run_id=run.run_id)
        description = await handle.describe()
        found_raw, found_decoded = await search(run.id, "describe", description.raw_description, secrets)
        raw, decoded = raw + found_raw, decoded + found_decoded
        history = await handle.fetch_history()
        activity_types: dict[int, str] = {}
        for event in history.events:
            label = event_label(event, activity_types)
            if event.HasField("marker_recorded_event_attributes") and (kind := await local_activity_type(event)):
                label += f" local activity {kind}"
            found_raw, found_decoded = await search(run.id, label, event, secrets)
            raw, decoded = raw + found_raw, decoded + found_decoded
        if description.status != WorkflowExecutionStatus.RUNNING:
            finished.append(history)
    print(f"\nread {len(runs)} runs, {len(finished)} finished")
    DECRYPTED_FINDINGS[:] = decoded  # checked by the next test
    RAN.add("end-to-end")

    assert not raw, "personal data in clear in Temporal:\n" + "\n".join(map(str, raw))

    # 5. Encrypted histories replay with the codec's converter, and cannot be read without it.
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=CONVERTER)
    for history in finished:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure!r}"
    hub_history = next(h for h in finished if h.workflow_id == hub_id(person))
    blind = await Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        hub_history, raise_on_replay_failure=False
    )
    assert blind.replay_failure is not None


async def test_no_personal_data_in_any_payload_once_decrypted():
    """Decrypted, payloads carry ids and decisions only (issue 12's projections); each one that does
    not is listed as `<workflow type> <event> (<activity>): <detail>`."""
    if "end-to-end" not in RAN:
        pytest.skip("run the whole module: the end-to-end run above did not run")
    assert not DECRYPTED_FINDINGS, "payloads that still carry personal data once decrypted:\n" + "\n".join(
        sorted({f"{f.workflow_id.split('-')[0]} {f.where.split('.')[0]}: {f.secret!r}" for f in DECRYPTED_FINDINGS})
    )


async def closed(stack: Stack, workflow_id: str) -> bool:
    return (await stack.client.get_workflow_handle(workflow_id).describe()).status != WorkflowExecutionStatus.RUNNING


async def cli_show(stack: Stack, workflow_id: str, *codec: str) -> str:
    process = await asyncio.create_subprocess_exec(
        venv_binary("temporal"),
        "workflow",
        "show",
        "--address",
        stack.address,
        "-w",
        workflow_id,
        "-o",
        "json",
        *codec,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_temporal_cli_reads_histories_through_the_codec_endpoint(stack: Stack):
    """What an operator does: `temporal workflow show --codec-endpoint …/codec --codec-auth "Bearer …"`."""
    tag = uuid.uuid4().hex[:8]
    await stack.segment(
        "identify",
        {"anonymousId": f"anon-cli-{tag}", "messageId": mid(), "traits": {"email": f"cli.{tag}@privacy.example"}},
    )
    person = await stack.person_id(f"cli.{tag}@privacy.example")
    journey = await stack.journey_of(person, "welcome")
    sealed = json.loads(await cli_show(stack, journey))
    opened = json.loads(
        await cli_show(
            stack, journey, "--codec-endpoint", f"{stack.app.url}/codec", "--codec-auth", f"Bearer {ADMIN_TOKEN}"
        )
    )

    def journey_input(history: dict) -> tuple[bytes, dict | None]:
        payload = history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
        encoding = base64.b64decode(payload["metadata"]["encoding"])
        return encoding, json.loads(base64.b64decode(payload["data"])) if encoding == b"json/plain" else None

    assert journey_input(sealed) == (b"binary/encrypted", None)
    encoding, decoded = journey_input(opened)
    assert encoding == b"json/plain" and decoded["person_id"] == person and decoded["route"] == "welcome"
