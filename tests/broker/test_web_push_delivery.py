"""Web Push end to end (DESIGN §4): a real broker notifies a loopback fake push service that verifies VAPID and
decrypts every payload. Who gets a notification, what it says, and what happens when the push service says no."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from broker_harness import Running
from push_service_fake import FakePushService, FakeSubscription, b64u, push_service, register, web_push_broker

from ac7_broker.store import Store
from ac7_broker.store.messages import Message
from ac7_broker.web_push import WebPushNotifier
from ac7_broker.web_push_crypto import generate_vapid_keys
from ac7_core.config_schema import WebPush

__all__ = ["push_service", "web_push_broker"]  # fixtures

WAIT = 20.0
PAYLOAD_KEYS = {"title", "body", "tag", "url", "severity", "messageId"}


async def send(http: aiohttp.ClientSession, broker: Running, sender: str, **fields: Any) -> dict[str, Any]:
    async with http.post(f"{broker.url}/push", json=fields, headers=broker.auth(sender)) as r:
        body = await r.json()
        assert r.status == 201, body
        message = body["message"]
        assert isinstance(message, dict)
        return message


async def settle(broker: Running) -> None:
    """Wait until every notification the broker queued has been sent or has failed."""
    await asyncio.wait_for(broker.broker.state.web_push.drain(), WAIT)


async def subscribe_all(
    http: aiohttp.ClientSession, broker: Running, service: FakePushService, *slots: str
) -> dict[str, FakeSubscription]:
    return {slot: (await register(http, broker, service, slot))[0] for slot in slots}


async def wait_connected(http: aiohttp.ClientSession, broker: Running, name: str, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        async with http.get(f"{broker.url}/roster", headers=broker.auth("alice")) as r:
            roster = {m["name"]: m["connected"] for m in (await r.json())["teammates"]}
        if roster[name] == count:
            return
        assert time.monotonic() < deadline, roster
        await asyncio.sleep(0.02)


async def test_a_dm_to_an_offline_subscriber_is_pushed_once_with_the_documented_payload(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "ivy", "dan")
    message = await send(http, web_push_broker, "ivy", to="dan", title="Build", body="CI is red — 🚒")
    [got] = await push_service.wait_for(1, subs["dan"], WAIT)
    await settle(web_push_broker)
    assert push_service.requests == [got]  # exactly one push, and none to the sender
    assert got.status == 201
    assert got.json() == {
        "title": "ivy — Build",
        "body": "CI is red — 🚒",
        "tag": "ac7:dm:ivy",
        "url": "/?dm=ivy",
        "severity": "info",
        "messageId": message["id"],
    }
    assert got.headers["TTL"] == "3600"
    assert got.headers["Urgency"] == "normal"
    assert got.headers["Content-Encoding"] == "aes128gcm"
    assert got.claims["aud"] == push_service.origin
    assert got.claims["sub"] == "mailto:admin@ac7.local"
    assert got.claims["exp"] <= time.time() + 12 * 3600 + 5
    row = (await web_push_broker.broker.state.store.push.list_for_slot("dan"))[0]
    assert row.last_success_at is not None and row.failures == 0


async def test_the_sender_is_never_pushed(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "ivy", "dan")
    await send(http, web_push_broker, "ivy", to="ivy", body="note to self")
    await send(http, web_push_broker, "ivy", body="heads up", level="critical")
    await push_service.wait_for(1, subs["dan"], WAIT)
    await settle(web_push_broker)
    assert push_service.to(subs["ivy"]) == []
    assert [r.json()["body"] for r in push_service.requests] == ["heads up"]


async def test_a_recipient_with_a_live_socket_is_not_pushed(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "dan")
    ws = await http.ws_connect(
        f"{web_push_broker.url}/subscribe", params={"name": "dan"}, headers=web_push_broker.auth("dan")
    )
    await wait_connected(http, web_push_broker, "dan", 1)
    await send(http, web_push_broker, "ivy", to="dan", body="you are online")
    frame = await asyncio.wait_for(ws.receive_json(), WAIT)
    assert frame["body"] == "you are online"
    await settle(web_push_broker)
    assert push_service.requests == []
    # The same DM once the socket is gone is pushed: it was the socket that held it back.
    await ws.close()
    await wait_connected(http, web_push_broker, "dan", 0)
    await send(http, web_push_broker, "ivy", to="dan", body="you are offline")
    [got] = await push_service.wait_for(1, subs["dan"], WAIT)
    assert got.json()["body"] == "you are offline"


async def test_broadcasts_are_pushed_only_at_warning_and_above(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "alice", "mike", "ivy", "dan")
    for level in ("debug", "info", "notice"):
        await send(http, web_push_broker, "mike", body=f"fyi at {level}", level=level)
    await settle(web_push_broker)
    assert push_service.requests == []

    warning = await send(http, web_push_broker, "mike", title="Deploy", body="deploy paused", level="warning")
    await push_service.wait_for(3, None, WAIT)
    await settle(web_push_broker)
    assert sorted(r.sub_id for r in push_service.requests) == sorted(subs[name].id for name in ("alice", "ivy", "dan"))
    for request in push_service.requests:
        assert request.json() == {
            "title": "mike → #team — Deploy",
            "body": "deploy paused",
            "tag": "ac7:team",
            "url": "/",
            "severity": "warning",
            "messageId": warning["id"],
        }
        assert request.headers["Urgency"] == "normal"

    await send(http, web_push_broker, "mike", body="prod is down", level="critical")
    await push_service.wait_for(6, None, WAIT)
    await settle(web_push_broker)
    urgent = [r for r in push_service.requests if r.json()["body"] == "prod is down"]
    assert len(urgent) == 3
    assert {r.headers["Urgency"] for r in urgent} == {"high"}
    assert push_service.to(subs["mike"]) == []


async def test_an_info_broadcast_pushes_only_the_mentioned_slot(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "alice", "ivy", "dan")
    await send(http, web_push_broker, "mike", body="write to ivy@example.com, or ask @ivybot")
    message = await send(http, web_push_broker, "mike", body="@IVY could you review #12?")
    [got] = await push_service.wait_for(1, subs["ivy"], WAIT)
    await settle(web_push_broker)
    assert push_service.requests == [got]
    assert got.json()["messageId"] == message["id"]
    assert got.json()["severity"] == "info"


async def test_long_bodies_and_titles_are_truncated_with_an_ellipsis(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    subs = await subscribe_all(http, web_push_broker, push_service, "dan")
    body = "".join(f"{i:04d} " for i in range(2000))  # 10 000 characters
    await send(http, web_push_broker, "ivy", to="dan", title="T" * 256, body=body)
    [got] = await push_service.wait_for(1, subs["dan"], WAIT)
    payload = got.json()
    assert set(payload) == PAYLOAD_KEYS
    assert payload["body"] == body[:179] + "…"
    assert len(payload["body"]) == 180
    assert payload["title"] == "ivy — " + "T" * 99 + "…"


@pytest.mark.parametrize("status", [404, 410])
async def test_a_subscription_the_push_service_says_is_gone_is_deleted(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession, status: int
) -> None:
    store = web_push_broker.broker.state.store.push
    gone, gone_id = await register(http, web_push_broker, push_service, "dan", status=status)
    alive, alive_id = await register(http, web_push_broker, push_service, "dan")
    await send(http, web_push_broker, "ivy", to="dan", body="anyone there?")
    await push_service.wait_for(1, gone, WAIT)
    await push_service.wait_for(1, alive, WAIT)
    await settle(web_push_broker)
    assert await store.get(gone_id) is None
    assert [r.id for r in await store.list_for_slot("dan")] == [alive_id]
    # No second attempt on a deleted subscription.
    await send(http, web_push_broker, "ivy", to="dan", body="again")
    await push_service.wait_for(2, alive, WAIT)
    await settle(web_push_broker)
    assert len(push_service.to(gone)) == 1


async def test_a_server_error_is_recorded_and_the_subscription_kept_without_retries(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    store = web_push_broker.broker.state.store.push
    sub, sub_id = await register(http, web_push_broker, push_service, "dan", status=500)
    await send(http, web_push_broker, "ivy", to="dan", body="one")
    await push_service.wait_for(1, sub, WAIT)
    await settle(web_push_broker)
    row = await store.get(sub_id)
    assert row is not None
    assert (row.failures, row.last_error, row.last_success_at) == (1, "HTTP 500", None)
    assert len(push_service.to(sub)) == 1  # one message, one attempt

    await send(http, web_push_broker, "ivy", to="dan", body="two")
    await push_service.wait_for(2, sub, WAIT)
    await settle(web_push_broker)
    row = await store.get(sub_id)
    assert row is not None and row.failures == 2

    sub.status = 201  # the push service recovers
    await send(http, web_push_broker, "ivy", to="dan", body="three")
    await push_service.wait_for(3, sub, WAIT)
    await settle(web_push_broker)
    row = await store.get(sub_id)
    assert row is not None
    assert (row.failures, row.last_error) == (0, None)
    assert row.last_success_at is not None
    assert [r.json()["body"] for r in push_service.to(sub)] == ["one", "two", "three"]


async def test_logs_carry_neither_payloads_nor_keys(
    web_push_broker: Running,
    push_service: FakePushService,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ac7")
    failing, _ = await register(http, web_push_broker, push_service, "dan", status=500)
    gone, _ = await register(http, web_push_broker, push_service, "dan", status=410)
    await send(http, web_push_broker, "ivy", to="dan", title="Secret title", body="the launch code is 0000")
    await push_service.wait_for(1, failing, WAIT)
    await push_service.wait_for(1, gone, WAIT)
    await settle(web_push_broker)
    config = web_push_broker.broker.state.config
    assert config.web_push is not None
    assert "failed: HTTP 500" in caplog.text and "is gone (HTTP 410)" in caplog.text
    for secret in (
        "the launch code",
        "Secret title",
        config.web_push.private_key,
        failing.p256dh,
        b64u(failing.auth),
        gone.endpoint.rsplit("/", 1)[1],  # the endpoint's capability path
    ):
        assert secret not in caplog.text


# --- the notifier on its own: timeouts and the bounded queue ------------------------------------------------------


def _message(body: str, to: str | None = "dan") -> Message:
    return Message(f"0190a0b0-0000-7000-8000-{abs(hash(body)) % 10**12:012d}", 1, "ivy", to, None, body, "info", {})


async def test_a_push_service_that_never_answers_is_a_recorded_timeout(
    tmp_path: Path, push_service: FakePushService
) -> None:
    public, private = generate_vapid_keys()
    store = await Store.open(tmp_path)
    notifier = WebPushNotifier(store.push, lambda: WebPush(public, private), allow_insecure_endpoints=True, timeout=0.5)
    try:
        sub = push_service.new_subscription(public, status="hang")
        row = await store.push.upsert("dan", sub.endpoint, sub.p256dh, b64u(sub.auth), max_per_slot=20)
        notifier.notify(_message("hello?"), ["ivy", "dan"], lambda _name: False)
        await asyncio.wait_for(notifier.drain(), WAIT)
        assert len(push_service.to(sub)) == 1
        stored = await store.push.get(row.id)
        assert stored is not None
        assert stored.failures == 1 and stored.last_error is not None and "timed out" in stored.last_error
    finally:
        await notifier.close(grace=0.1)
        await store.close()


async def test_a_full_queue_drops_notifications_with_a_warning_and_never_blocks(
    tmp_path: Path, push_service: FakePushService, caplog: pytest.LogCaptureFixture
) -> None:
    public, private = generate_vapid_keys()
    store = await Store.open(tmp_path)
    notifier = WebPushNotifier(
        store.push, lambda: WebPush(public, private), allow_insecure_endpoints=True, concurrency=1, queue_limit=2
    )
    try:
        sub = push_service.new_subscription(public)
        await store.push.upsert("dan", sub.endpoint, sub.p256dh, b64u(sub.auth), max_per_slot=20)
        with caplog.at_level(logging.WARNING, logger="ac7"):
            for i in range(5):  # synchronous calls: the dispatcher cannot run in between
                notifier.notify(_message(f"m{i}"), ["ivy", "dan"], lambda _name: False)
        assert notifier.dropped == 3
        assert "web push queue full" in caplog.text
        await asyncio.wait_for(notifier.drain(), WAIT)
        assert [r.json()["body"] for r in push_service.to(sub)] == ["m0", "m1"]
    finally:
        await notifier.close(grace=0.1)
        await store.close()


async def test_sends_are_bounded_in_flight(tmp_path: Path, push_service: FakePushService) -> None:
    public, private = generate_vapid_keys()
    store = await Store.open(tmp_path)
    notifier = WebPushNotifier(
        store.push, lambda: WebPush(public, private), allow_insecure_endpoints=True, concurrency=2
    )
    try:
        subs = [push_service.new_subscription(public, delay=0.2) for _ in range(6)]
        for sub in subs:
            await store.push.upsert("dan", sub.endpoint, sub.p256dh, b64u(sub.auth), max_per_slot=20)
        notifier.notify(_message("to every browser of dan"), ["ivy", "dan"], lambda _name: False)
        await asyncio.wait_for(notifier.drain(), WAIT)
        assert sorted(r.sub_id for r in push_service.delivered()) == sorted(s.id for s in subs)
        assert push_service.max_in_flight <= 2
    finally:
        await notifier.close(grace=0.1)
        await store.close()


async def test_without_the_test_switch_a_stored_loopback_endpoint_is_never_contacted(
    tmp_path: Path, push_service: FakePushService
) -> None:
    # A row written while insecure endpoints were allowed (or planted in the database) is re-checked at send time.
    public, private = generate_vapid_keys()
    store = await Store.open(tmp_path)
    notifier = WebPushNotifier(store.push, lambda: WebPush(public, private))
    try:
        sub = push_service.new_subscription(public)
        row = await store.push.upsert("dan", sub.endpoint, sub.p256dh, b64u(sub.auth), max_per_slot=20)
        # A name that passes the subscription-time check but resolves to loopback ("0x7f.0.0.1" is 127.0.0.1 to
        # getaddrinfo) is refused at connect time.
        port = push_service.origin.rsplit(":", 1)[1]
        sneaky = await store.push.upsert(
            "dan", f"https://0x7f.0.0.1:{port}/push/{sub.id}", sub.p256dh, b64u(sub.auth), max_per_slot=20
        )
        notifier.notify(_message("internal?"), ["ivy", "dan"], lambda _name: False)
        await asyncio.wait_for(notifier.drain(), WAIT)
        assert push_service.requests == []
        stored = await store.push.get(row.id)
        assert stored is not None and stored.failures == 1
        assert stored.last_error is not None and "https://" in stored.last_error
        stored = await store.push.get(sneaky.id)
        assert stored is not None and stored.failures == 1
        assert stored.last_error is not None and "non-public" in stored.last_error
    finally:
        await notifier.close(grace=0.1)
        await store.close()
