"""Temporal payload encryption (dispatch/codec.py) and the remote codec endpoint (api/codec.py).

The codec is checked through the data converter every Breadcrumb client uses; the endpoint over real
HTTP (the served app) with the JSON the Temporal UI and CLI send; start-up refusals through the real
`breadcrumb` command.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from conftest import ADMIN_TOKEN, CONVERTER, PAYLOAD_KEYS, REPO_ROOT, ServedApp
from dispatch.codec import ENCODING, KEY_ID, PayloadKeyError, PayloadKeys, configured_keys, data_converter
from workflows.models import HubSignal

EMAIL = "wilhelmina.codec@example.com"
UI_ORIGIN = "http://127.0.0.1:8233"


def key(key_id: str, fill: bytes) -> str:
    return f"{key_id}:{base64.b64encode(fill * (32 // len(fill))).decode()}"


async def encode(converter, value) -> Payload:
    return (await converter.encode([value]))[0]


# ---- the codec ------------------------------------------------------------------------------------


async def test_payloads_are_ciphertext_with_the_key_id_and_round_trip():
    signal = HubSignal(event="identified", message_id=EMAIL)
    payload = await encode(CONVERTER, signal)
    assert payload.metadata["encoding"] == ENCODING and payload.metadata[KEY_ID] == b"test-1"
    assert set(payload.metadata) == {"encoding", KEY_ID}  # the inner encoding (json/plain) is sealed too
    assert b"wilhelmina" not in payload.data and b"identified" not in payload.data and b"message_id" not in payload.data
    assert await CONVERTER.decode([payload], [HubSignal]) == [signal]
    # Two encodings of one value differ (a fresh nonce each time).
    assert (await encode(CONVERTER, signal)).data != payload.data


async def test_rotation_encrypts_with_the_first_key_and_reads_every_listed_one():
    old = data_converter(PayloadKeys.parse(key("k-old", b"o")))
    rotated = data_converter(PayloadKeys.parse(f"{key('k-new', b'n')}, {key('k-old', b'o')}"))
    written_before = await encode(old, "before rotation")
    assert await rotated.decode([written_before]) == ["before rotation"]
    written_after = await encode(rotated, "after rotation")
    assert written_after.metadata[KEY_ID] == b"k-new"
    with pytest.raises(PayloadKeyError) as error:  # the old key alone cannot read what the new one wrote
        await old.decode([written_after])
    assert str(error.value) == (
        "a payload is encrypted with key id 'k-new', which BREADCRUMB_PAYLOAD_KEYS does not list (listed: k-old)"
    )


async def test_clear_payloads_from_before_encryption_pass_through():
    clear = await encode(pydantic_data_converter, {"email": EMAIL})
    assert await CONVERTER.decode([clear]) == [{"email": EMAIL}]


async def test_a_payload_under_a_reused_key_id_with_another_key_is_refused():
    impostor = data_converter(PayloadKeys.parse(key("test-1", b"x")))
    with pytest.raises(Exception):
        await CONVERTER.decode([await encode(impostor, "sealed elsewhere")])
    tampered = await encode(CONVERTER, "genuine")
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    with pytest.raises(Exception):
        await CONVERTER.decode([tampered])


@pytest.mark.parametrize(
    "value,message",
    [
        ("k1", "BREADCRUMB_PAYLOAD_KEYS entry 1 is not 'id:base64key'"),
        ("k1:", "BREADCRUMB_PAYLOAD_KEYS entry 1 is not 'id:base64key'"),
        ("k1:not*base64!", "BREADCRUMB_PAYLOAD_KEYS entry 1 ('k1'): the key is not valid base64"),
        (
            f"{key('k1', b'a')},k 2:{base64.b64encode(b'b' * 32).decode()}",
            "BREADCRUMB_PAYLOAD_KEYS entry 2: key id 'k 2' must be 1-64 letters, digits, '.', '_' or '-'",
        ),
        (f"{key('k1', b'a')},{key('k1', b'b')}", "BREADCRUMB_PAYLOAD_KEYS entry 2: key id 'k1' is listed twice"),
        (" , ", "BREADCRUMB_PAYLOAD_KEYS lists no key"),
    ],
)
def test_malformed_keys_are_named_in_one_line(value, message):
    with pytest.raises(PayloadKeyError) as error:
        PayloadKeys.parse(value)
    assert str(error.value) == message


def test_a_key_of_the_wrong_length_says_how_to_make_one_and_never_echoes_the_key():
    secret = base64.b64encode(b"short-secret").decode()
    with pytest.raises(PayloadKeyError) as error:
        PayloadKeys.parse(f"k1:{secret}")
    said = str(error.value)
    assert "\n" not in said and "12 bytes; AES needs 16, 24 or 32" in said and "os.urandom(32)" in said
    assert secret not in said


def test_no_keys_is_refused_unless_clear_payloads_are_allowed_explicitly():
    with pytest.raises(
        PayloadKeyError, match="BREADCRUMB_PAYLOAD_KEYS is not set.*BREADCRUMB_ALLOW_CLEAR_PAYLOADS=true"
    ):
        configured_keys("", allow_clear=False)
    assert configured_keys("", allow_clear=True) is None
    assert data_converter(None) is pydantic_data_converter
    assert configured_keys(PAYLOAD_KEYS, allow_clear=True).ids == ("test-1",)  # keys, when listed, always win


def test_generated_keys_render_to_a_setting_that_parses_back():
    keys = PayloadKeys.generate()
    assert keys.ids[0].startswith("dev-") and len(keys.material[0]) == 32
    assert PayloadKeys.parse(keys.render()) == keys


@pytest.mark.parametrize("command", ["worker", "api", "temporal-setup"])
def test_processes_that_talk_to_temporal_refuse_to_start_without_keys(command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")}
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert said.startswith("breadcrumb: BREADCRUMB_PAYLOAD_KEYS is not set"), done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "worker.cli", command],
        cwd=REPO_ROOT,
        capture_output=True,
        env=env | {"BREADCRUMB_PAYLOAD_KEYS": "k1:c2hvcnQ="},
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "entry 1 ('k1'): the key is 5 bytes" in " ".join(bad.stderr.split())


# ---- breadcrumb dev's development key ------------------------------------------------------------


def test_dev_stack_generates_a_key_once_keeps_it_and_points_the_ui_at_the_codec(tmp_path, monkeypatch):
    from worker.devstack import DevStack, StackError

    monkeypatch.delenv("BREADCRUMB_PAYLOAD_KEYS")
    monkeypatch.delenv("BREADCRUMB_CODEC_CORS_ORIGINS", raising=False)
    first = DevStack(data_dir=tmp_path, api_port=8111, ui_port=8333)
    first.data_dir.mkdir(exist_ok=True)
    first._payload_keys()
    stored = tmp_path / "payload-keys"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    generated = PayloadKeys.parse(stored.read_text())
    assert first.env["BREADCRUMB_PAYLOAD_KEYS"] == generated.render() and first.payload_keys_file == stored
    assert first.env["BREADCRUMB_CODEC_CORS_ORIGINS"] == "http://127.0.0.1:8333,http://localhost:8333"
    command = first._temporal_command()
    assert command[command.index("--ui-codec-endpoint") + 1] == "http://127.0.0.1:8111/codec"

    monkeypatch.delenv("BREADCRUMB_PAYLOAD_KEYS")
    again = DevStack(data_dir=tmp_path)  # a restart reads the histories the first one wrote
    again._payload_keys()
    assert again.env["BREADCRUMB_PAYLOAD_KEYS"] == generated.render()

    monkeypatch.setenv("BREADCRUMB_PAYLOAD_KEYS", "k1:c2hvcnQ=")
    with pytest.raises(StackError):
        DevStack(data_dir=tmp_path)._payload_keys()


# ---- the endpoint, over real HTTP -------------------------------------------------------------------


def as_json(payloads: list[Payload]) -> dict:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def from_json(body: dict) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


def codec_post(served: ServedApp, path: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(
        f"{served.url}/codec/{path}",
        json=body,
        timeout=30,
        headers={"X-Namespace": "default", "Content-Type": "application/json", **headers},
    )


BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_decode_returns_what_the_converter_encrypted(served: ServedApp):
    signal = HubSignal(event="identified", message_id=EMAIL)
    sealed = [await encode(CONVERTER, signal), await encode(pydantic_data_converter, "clear")]
    response = codec_post(served, "decode", as_json(sealed), **BEARER)
    assert response.status_code == 200, response.text
    opened = from_json(response.json())
    assert [p.metadata["encoding"] for p in opened] == [b"json/plain", b"json/plain"]
    assert json.loads(opened[0].data) == signal.model_dump(mode="json") and json.loads(opened[1].data) == "clear"


async def test_encode_then_decode_round_trips_through_the_endpoint(served: ServedApp):
    clear = [await encode(pydantic_data_converter, {"note": "from the UI"})]
    encoded = codec_post(served, "encode", as_json(clear), **BEARER)
    assert encoded.status_code == 200, encoded.text
    sealed = from_json(encoded.json())
    assert sealed[0].metadata[KEY_ID] == b"test-1" and b"from the UI" not in sealed[0].data
    assert await CONVERTER.decode(sealed) == [{"note": "from the UI"}]
    decoded = codec_post(served, "decode", encoded.json(), **BEARER)
    assert from_json(decoded.json()) == clear


async def test_the_codec_needs_the_admin_token(served: ServedApp):
    body = as_json([await encode(CONVERTER, EMAIL)])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_TOKEN}"}):
        response = codec_post(served, "decode", body, **headers)
        assert response.status_code == 401, (headers, response.text)
        assert EMAIL not in response.text and "wilhelmina" not in response.text
    assert codec_post(served, "encode", body).status_code == 401


async def test_a_payload_under_an_unlisted_key_is_a_clear_422(served: ServedApp):
    other = data_converter(PayloadKeys.parse(key("retired", b"r")))
    response = codec_post(served, "decode", as_json([await encode(other, "old")]), **BEARER)
    assert response.status_code == 422
    assert "key id 'retired'" in response.json()["detail"]
    assert codec_post(served, "decode", {"payloads": "nope"}, **BEARER).status_code == 400


def test_a_signed_login_link_opens_a_cookie_session_for_the_ui(served: ServedApp):
    from api.codec import COOKIE, login_link

    with httpx.Client(base_url=served.url, timeout=30) as browser:
        link = login_link(ADMIN_TOKEN, served.url, ttl=60)
        assert browser.get(link.replace("sig=", "sig=0")).status_code == 401  # altered
        opened = browser.get(link)
        assert opened.status_code == 200 and "Include cross-origin credentials" in opened.text
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/codec" in cookie
        assert ADMIN_TOKEN not in cookie
        assert browser.cookies.get(COOKIE)
        # What the UI sends with "include cross-origin credentials": the cookie, no Authorization.
        decoded = browser.post("/codec/decode", json=as_json([]), headers={"X-Namespace": "default"})
        assert decoded.status_code == 200, decoded.text
        assert decoded.json() == {"payloads": []}
        expired = login_link(ADMIN_TOKEN, served.url, ttl=60, now=0)
        assert browser.get(expired).status_code == 401


def test_cors_admits_the_temporal_ui_origin_only(served: ServedApp):
    def preflight(origin: str, path: str = "/codec/decode") -> httpx.Response:
        return httpx.options(
            f"{served.url}{path}",
            timeout=30,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            },
        )

    for origin in (UI_ORIGIN, "http://localhost:8233"):
        allowed = preflight(origin)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == origin
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()

    refused = preflight("https://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # A simple (non-preflighted) request from elsewhere gets no CORS grant either: the browser hides the answer.
    response = httpx.post(
        f"{served.url}/codec/decode", json=as_json([]), timeout=30, headers={"Origin": "https://evil.example", **BEARER}
    )
    assert "access-control-allow-origin" not in response.headers
    # The storefront's front doors still answer any origin, without credentials.
    public = preflight("https://shop.example.com", "/v1/track")
    assert public.status_code == 200 and public.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in public.headers


def test_the_codec_origins_are_a_setting(monkeypatch):
    from store.settings import Settings

    monkeypatch.setenv("BREADCRUMB_CODEC_CORS_ORIGINS", "https://temporal.example.com, https://ui.example.com")
    assert Settings().codec_cors_origins == ["https://temporal.example.com", "https://ui.example.com"]


def test_codec_login_prints_a_working_link(served: ServedApp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREADCRUMB_")} | {
        "BREADCRUMB_ADMIN_TOKEN": ADMIN_TOKEN
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "codec-login", "--api", served.url, "--ttl", "60"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    link = done.stdout.strip()
    assert link.startswith(f"{served.url}/codec/login?expires=")
    assert httpx.get(link, timeout=30).status_code == 200
    refused = subprocess.run(
        [sys.executable, "-m", "worker.cli", "codec-login"],
        cwd=REPO_ROOT,
        capture_output=True,
        env={k: v for k, v in env.items() if k != "BREADCRUMB_ADMIN_TOKEN"},
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "needs BREADCRUMB_ADMIN_TOKEN" in refused.stdout


def test_keys_never_show_in_their_repr():
    keys = PayloadKeys.parse(PAYLOAD_KEYS)
    assert PAYLOAD_KEYS.split(":", 1)[1] not in repr(keys) and "breadcrumb-test" not in repr(keys)
    assert "test-1" in repr(keys)
