"""Delivery inside real journeys on Temporal's time-skipping server: the mail relay down at the
moment of sending and back later (the activity retries; exactly one email), a permanent refusal
recorded as a failed step, and per-step channels with SMS consent."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.worker import Replayer

from conftest import CONVERTER, free_port, settings_for
from delivery_helpers import SmsWebhook, SmtpServer
from journey_harness import Harness, identify, track
from test_determinism import markers
from journeys.policy import parse_policy
from worker.worker import build_worker
from workflows.registry import ALL_WORKFLOWS
from workflows.journey import SEND_CHECK_ENDS_JOURNEY


def policy(welcome_steps: list[dict]):
    return parse_policy(
        {
            "min_hours_between_messages": 0,
            "quiet_hours": {"enabled": False},
            "hub_idle_timeout": "1h",
            "journeys": {
                "cart_recovery": {"steps": [{"delay": "1h", "template": "cart_recovery_1"}]},
                "browse_recovery": {"steps": [{"delay": "1h", "template": "browse_recovery_1"}]},
                "welcome": {"steps": welcome_steps},
            },
        }
    )


def settings(engine, smtp_port: int, sms_url: str = ""):
    return settings_for(
        str(engine.url),
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        smtp_from="Shop <hi@shop.example>",
        sms_webhook_url=sms_url,
        public_base_url="https://crumbs.example",
        shop_url="https://shop.example",
        smtp_timeout=3,
    )


async def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.1)


async def test_relay_down_then_up_delivers_exactly_one_email_per_step(env, engine):
    chosen = policy([{"delay": "5m", "template": "welcome_1"}, {"delay": "1d", "template": "welcome_2"}])
    port = free_port()
    config = settings(engine, port)
    config.__dict__["policy"] = chosen
    server = SmtpServer(port)  # not started: the relay is down when step 1 is due
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-r", "relay@example.com", first_name="Rae"))
            person = shop.person_id("relay@example.com")
            journey = await shop.journey_of(person)
            finished = asyncio.create_task(shop.journey_result(journey))
            # Two attempts failed and released (`pending` between attempts; `sending` while one is in
            # flight, which could still reach the relay once it is up): never sent, never failed.
            await wait_until(
                lambda: shop.rows("SELECT status, attempts FROM messages WHERE status = 'pending' AND attempts >= 2")
            )
            pending = shop.rows("SELECT status, reason FROM messages")
            assert pending[0][0] == "pending" and "unreachable" in pending[0][1]
            server.start()
            result = await asyncio.wait_for(finished, 120)
        assert result.status == "completed"
        received = server.mailbox.wait_for(2)
        assert [m["Subject"] for m in received] == ["Welcome, Rae!", "Our bestsellers"]
        messages = shop.messages(person)
        assert [(m.step, m.status) for m in messages] == [(1, "sent"), (2, "sent")]
        assert messages[0].attempts >= 3 and messages[1].attempts == 1
        assert len({m["Message-ID"] for m in received}) == 2
    finally:
        server.stop()


async def test_purchase_while_the_relay_is_down_means_no_email_and_the_journey_exits(env, engine):
    chosen = policy([{"delay": "5m", "template": "welcome_1"}, {"delay": "1d", "template": "welcome_2"}])
    port = free_port()
    config = settings(engine, port)
    config.__dict__["policy"] = chosen
    server = SmtpServer(port)  # down while step 1 is retried
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-p", "paid@example.com", first_name="Pat"))
            person = shop.person_id("paid@example.com")
            finished = asyncio.create_task(shop.journey_result(await shop.journey_of(person)))
            await wait_until(lambda: (shop.scalar("SELECT max(attempts) FROM messages") or 0) >= 2)
            await shop.shop(track("dev-p", "Order Completed", order_id="o-9", value=40))
            # The next retry reads the order before it tries the relay. (An attempt already past its
            # check when the order lands still fails against the dead relay; back sooner, that one
            # could deliver: the check cannot close the gap between itself and the SMTP reply.)
            await wait_until(lambda: shop.scalar("SELECT status FROM messages") == "skipped")
            server.start()
            result = await asyncio.wait_for(finished, 120)
        assert server.mailbox.received == []
        [message] = shop.messages(person)
        assert message.status == "skipped" and message.reason.startswith("purchased: order o-9")
        assert result.status == "exited" and result.sent == [f"step 1: skipped ({message.reason})"]
        lines = [(kind, step) for kind, _, journey, step in shop.log(person) if journey == "welcome"]
        assert ("skipped", 1) in lines and lines[-1][0] == "exit"
    finally:
        server.stop()


async def test_permanent_refusal_is_a_failed_step_and_the_journey_goes_on(env, engine):
    chosen = policy([{"delay": "5m", "template": "welcome_1"}, {"delay": "1d", "template": "welcome_2"}])
    server = SmtpServer(free_port()).start()
    server.mailbox.refuse["gone@"] = "550 5.1.1 mailbox unavailable"
    config = settings(engine, server.port)
    config.__dict__["policy"] = chosen
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-g", "gone@example.com"))
            person = shop.person_id("gone@example.com")
            result = await shop.journey_result(await shop.journey_of(person))
        assert [(m.step, m.status) for m in shop.messages(person)] == [(1, "failed"), (2, "failed")]
        assert all("550" in m.reason for m in shop.messages(person))
        assert [s.split(":")[0] for s in result.sent] == ["step 1", "step 2"] and "failed" in result.sent[0]
        failed = [(kind, step) for kind, reason, _, step in shop.log(person) if kind == "failed"]
        assert failed == [("failed", 1), ("failed", 2)]
        assert server.mailbox.received == []
    finally:
        server.stop()


@pytest.mark.parametrize("consent", [True, False])
async def test_sms_step_goes_only_to_people_who_consented(env, engine, consent):
    chosen = policy(
        [
            {"delay": "5m", "template": "welcome_1"},
            {"delay": "1h", "template": "cart_recovery_sms", "channel": "sms"},
            {"delay": "1d", "template": "welcome_2"},
        ]
    )
    server = SmtpServer(free_port()).start()
    hook = SmsWebhook(free_port()).start()
    config = settings(engine, server.port, hook.url)
    config.__dict__["policy"] = chosen
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-m", "mixed@example.com", phone="+14155550111", sms_consent=consent))
            person = shop.person_id("mixed@example.com")
            result = await shop.journey_result(await shop.journey_of(person))
        assert result.status == "completed"
        assert len(server.mailbox.wait_for(2)) == 2  # both email steps, either way
        sent = [(m.step, m.channel, m.status) for m in shop.messages(person)]
        if consent:
            assert sent == [(1, "email", "sent"), (2, "sms", "sent"), (3, "email", "sent")]
            assert [c.body["to"] for c in hook.calls] == ["+14155550111"]
        else:
            assert sent == [(1, "email", "sent"), (3, "email", "sent")]
            assert hook.calls == []
            skipped = [(reason, step) for kind, reason, _, step in shop.log(person) if kind == "skipped"]
            assert skipped == [("no SMS consent: step 2 (cart_recovery_sms) not sent", 2)]
    finally:
        server.stop()
        hook.stop()


async def test_suppressed_person_gets_nothing_and_the_exit_is_recorded(env, engine):
    from sqlalchemy import text

    chosen = policy([{"delay": "5m", "template": "welcome_1"}])
    server = SmtpServer(free_port()).start()
    config = settings(engine, server.port)
    config.__dict__["policy"] = chosen
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-x", "quiet@example.com"), track("dev-x", "Product Viewed", sku="A"))
            person = shop.person_id("quiet@example.com")
            with engine.begin() as conn:
                conn.execute(text("UPDATE people SET suppressed = :t WHERE id = :p"), {"t": True, "p": person})
            result = await shop.journey_result(await shop.journey_of(person))
        assert result.status == "exited" and server.mailbox.received == []
        assert ("exit", "suppressed") in [(kind, reason) for kind, reason, *_ in shop.log(person)]
    finally:
        server.stop()


async def test_suppressed_while_the_relay_is_down_ends_the_journey_at_that_step(env, engine):
    """The last step's email waits for a dead relay; the shopper is suppressed meanwhile. The send's
    own re-check holds it back and the journey exits there, as suppressed — not "completed", and
    one skip in the reports, not two."""
    from sqlalchemy import text

    from store import reports

    chosen = policy([{"delay": "5m", "template": "welcome_1"}])
    port = free_port()
    config = settings(engine, port)
    config.__dict__["policy"] = chosen
    server = SmtpServer(port)  # down while the step is retried
    try:
        async with build_worker(env.client, engine, config):
            shop = Harness(env.client, engine, config, chosen, env=env)
            await shop.shop(identify("dev-q", "hush@example.com"))
            person = shop.person_id("hush@example.com")
            journey = await shop.journey_of(person)
            finished = asyncio.create_task(shop.journey_result(journey))
            await wait_until(lambda: (shop.scalar("SELECT max(attempts) FROM messages") or 0) >= 2)
            with engine.begin() as conn:
                conn.execute(text("UPDATE people SET suppressed = :t WHERE id = :p"), {"t": True, "p": person})
            result = await asyncio.wait_for(finished, 120)
            history = await env.client.get_workflow_handle(journey).fetch_history()
        assert server.mailbox.received == []
        assert (result.status, result.notes[-1]) == ("exited", "exit: suppressed")
        # The new path is patched (SEND_CHECK_ENDS_JOURNEY) and replays against the current code.
        assert SEND_CHECK_ENDS_JOURNEY in markers(history)
        await Replayer(workflows=ALL_WORKFLOWS, data_converter=CONVERTER).replay_workflow(history)
        assert [(kind, step) for kind, _, journey, step in shop.log(person) if journey == "welcome"][-2:] == [
            ("skipped", 1),
            ("exit", 1),
        ]
        messages = reports.summary(engine, chosen)["messages"]
        assert (messages["skipped"], messages["sent"]) == (1, 0)
    finally:
        server.stop()
