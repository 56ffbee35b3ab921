"""GET /subscribe over real WebSockets: frames, presence, server pings, slow consumers and busy expiry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import pytest
from activity_samples import eventually, json_body
from broker_harness import Running, StartBroker

WAIT = 20.0  # generous deadlines: other agents load this 2-core box concurrently
ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def subscribe(
    http: aiohttp.ClientSession, broker: Running, name: str, **kw: Any
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(f"{broker.url}/subscribe", params={"name": name}, headers=broker.auth(name), **kw)


async def push(http: aiohttp.ClientSession, broker: Running, sender: str, **fields: Any) -> dict[str, Any]:
    async with http.post(f"{broker.url}/push", json=fields, headers=broker.auth(sender)) as r:
        body = await json_body(r)
        assert r.status == 201, body
        return body["message"]  # type: ignore[no-any-return]


async def roster(http: aiohttp.ClientSession, broker: Running, viewer: str = "alice") -> dict[str, dict[str, Any]]:
    async with http.get(f"{broker.url}/roster", headers=broker.auth(viewer)) as r:
        assert r.status == 200
        return {m["name"]: m for m in (await r.json())["teammates"]}


async def wait_connected(http: aiohttp.ClientSession, broker: Running, name: str, count: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        entry = (await roster(http, broker))[name]
        return entry if entry["connected"] == count else None

    return await eventually(probe, timeout=WAIT)


async def test_one_json_message_per_text_frame(broker: Running, http: aiohttp.ClientSession) -> None:
    ws = await subscribe(http, broker, "ivy")
    await wait_connected(http, broker, "ivy", 1)
    sent = [
        await push(http, broker, "alice", body="one"),
        await push(http, broker, "dan", to="ivy", body="two\nlines", data={"k": [1, 2]}),
        await push(http, broker, "ivy", to="mike", body="three", title="t"),
    ]
    for expected in sent:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert json.loads(msg.data) == expected  # exactly one Message object, nothing batched or wrapped
    await ws.close()


async def test_subscribe_checks_identity_before_the_upgrade(broker: Running, http: aiohttp.ClientSession) -> None:
    cases = [
        ({"name": "ivy"}, {}, 401),
        ({"name": "ivy"}, {"Authorization": "Bearer ac7_not-a-real-token"}, 401),
        ({"name": "dan"}, broker.auth("ivy"), 403),  # only one's own stream
        ({}, broker.auth("ivy"), 400),
    ]
    for params, headers, status in cases:
        try:
            ws = await http.ws_connect(f"{broker.url}/subscribe", params=params, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == status, (params, exc.status)
        else:
            await ws.close()
            raise AssertionError(f"upgrade accepted for {params} {headers}")
    # A plain GET is told to upgrade.
    async with http.get(f"{broker.url}/subscribe", params={"name": "ivy"}, headers=broker.auth("ivy")) as r:
        assert r.status == 400
        assert (await r.json())["code"] == "bad_request"


async def test_roster_counts_live_sockets_and_sets_last_seen(broker: Running, http: aiohttp.ClientSession) -> None:
    start_ms = int(time.time() * 1000)
    entry = (await roster(http, broker))["dan"]
    assert entry["connected"] == 0
    assert entry["lastSeen"] is None  # dan has not been heard from yet

    first = await subscribe(http, broker, "dan")
    second = await subscribe(http, broker, "dan")
    entry = await wait_connected(http, broker, "dan", 2)
    assert isinstance(entry["lastSeen"], int) and entry["lastSeen"] >= start_ms

    await first.close()
    await wait_connected(http, broker, "dan", 1)
    assert not second.closed
    await second.close()
    entry = await wait_connected(http, broker, "dan", 0)
    assert entry["lastSeen"] >= start_ms
    assert entry["busy"] is False


async def test_server_pings_and_drops_a_silent_peer(start: StartBroker, http: aiohttp.ClientSession) -> None:
    broker = await start(ping_interval=0.2, peer_timeout=0.6)
    silent = await subscribe(http, broker, "ivy", autoping=False)  # sees pings, never answers them
    lively = await subscribe(http, broker, "dan")  # aiohttp answers pings while it is receiving
    lively_frames: list[aiohttp.WSMessage] = []

    async def read_lively() -> None:
        async for msg in lively:
            lively_frames.append(msg)

    reader = asyncio.create_task(read_lively())
    pings = 0
    ending: aiohttp.WSMessage | None = None
    deadline = time.monotonic() + WAIT
    while ending is None:
        msg = await asyncio.wait_for(silent.receive(), max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.PING:
            pings += 1
        elif msg.type in ENDED:
            ending = msg
    assert pings >= 1  # the server pinged, and then hung up on the peer that never answered
    await wait_connected(http, broker, "ivy", 0)

    # The peer that answers stays connected well past several timeouts' worth of pings.
    await asyncio.sleep(3 * 0.6)
    assert not lively.closed
    assert (await roster(http, broker))["dan"]["connected"] == 1
    sent = await push(http, broker, "alice", to="dan", body="still there?")

    def texts() -> list[Any]:
        return [json.loads(m.data) for m in lively_frames if m.type == aiohttp.WSMsgType.TEXT]

    async def got() -> bool:
        return sent in texts()

    await eventually(got, timeout=WAIT)
    await lively.close()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"send_queue": 8}, id="frame-limit"),
        # Plenty of frames allowed: only the byte budget can stop this backlog from growing.
        pytest.param({"send_queue": 100_000, "send_queue_bytes": 64 * 1024}, id="byte-limit"),
    ],
)
async def test_slow_consumer_is_cut_off_without_holding_up_others(
    start: StartBroker, http: aiohttp.ClientSession, limits: dict[str, int]
) -> None:
    broker = await start(**limits)
    slow = await subscribe(http, broker, "ivy")  # never reads until the end
    fast = await subscribe(http, broker, "mike")
    await wait_connected(http, broker, "ivy", 1)
    await wait_connected(http, broker, "mike", 1)

    total = 2000
    received: list[str] = []

    async def read_fast() -> None:
        while len(received) < total:
            msg = await fast.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            received.append(json.loads(msg.data)["id"])

    reader = asyncio.create_task(read_fast())
    filler = "x" * 4000  # ~4 KB frames fill the kernel's socket buffers quickly
    pushed = []
    for i in range(total):
        message = await push(http, broker, "alice", body=f"{i:05d} {filler}")
        pushed.append(message["id"])
    await asyncio.wait_for(reader, 60)
    assert received == pushed  # every message, in order, to the consumer that keeps up

    # The broker gave up on the slow one rather than buffer without bound: the socket is gone from the roster
    # while the slow peer still has not read a byte (once it reads, a half-closed socket would drain away anyway).
    async def slow_dropped() -> bool:
        return (await roster(http, broker))["ivy"]["connected"] == 0

    await eventually(slow_dropped, timeout=WAIT, what="the broker dropping a subscriber that never reads")
    # ...and when it finally reads it finds fewer than all messages, then a close (1013) or a dead socket.
    frames = 0
    while True:
        msg = await asyncio.wait_for(slow.receive(), WAIT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frames += 1
    assert msg.type in ENDED, msg
    assert frames < total
    if msg.type == aiohttp.WSMsgType.CLOSE:
        assert msg.data == 1013
    assert (await roster(http, broker))["mike"]["connected"] == 1
    await fast.close()


async def test_busy_expires_without_a_refresh(start: StartBroker, http: aiohttp.ClientSession) -> None:
    broker = await start(busy_ttl=0.3)

    async def set_busy(value: bool) -> None:
        async with http.post(f"{broker.url}/presence/busy", json={"busy": value}, headers=broker.auth("ivy")) as r:
            assert r.status == 204

    await set_busy(True)
    set_at = time.monotonic()
    entry = (await roster(http, broker))["ivy"]
    if time.monotonic() - set_at < 0.3:  # only meaningful if the box answered within the TTL
        assert entry["busy"] is True

    async def idle() -> bool:
        return (await roster(http, broker))["ivy"]["busy"] is False

    await eventually(idle, timeout=WAIT)


async def test_busy_is_reported_until_cleared(broker: Running, http: aiohttp.ClientSession) -> None:
    async def set_busy(value: bool) -> None:
        async with http.post(f"{broker.url}/presence/busy", json={"busy": value}, headers=broker.auth("ivy")) as r:
            assert r.status == 204

    await set_busy(True)  # the default TTL (30 s) cannot lapse during this test
    entries = await roster(http, broker)
    assert entries["ivy"]["busy"] is True
    assert entries["dan"]["busy"] is False
    await set_busy(True)  # a refresh keeps it
    assert (await roster(http, broker))["ivy"]["busy"] is True
    await set_busy(False)  # an explicit false clears it at once
    assert (await roster(http, broker))["ivy"]["busy"] is False


async def test_busy_needs_a_bearer_token(broker: Running, http: aiohttp.ClientSession) -> None:
    from ac7_core.totp import code_at

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        code = code_at(broker.team.totp["hana"], time.time())
        async with browser.post(f"{broker.url}/session/totp", json={"code": code, "slot": "hana"}) as r:
            assert r.status == 200
        async with browser.post(f"{broker.url}/presence/busy", json={"busy": True}) as r:
            assert r.status == 403
            assert (await r.json())["code"] == "forbidden"
    assert (await roster(http, broker))["hana"]["busy"] is False
