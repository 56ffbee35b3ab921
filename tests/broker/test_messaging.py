"""POST /push and GET /history (DESIGN §4): message shape, fanout targets, viewer scoping, paging, rate limit."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
from activity_samples import json_body
from broker_harness import Running, StartBroker

from ac7_core.totp import code_at

WAIT = 20.0  # generous: other agents load this 2-core box concurrently
MESSAGE_KEYS = {"id", "ts", "from", "to", "title", "body", "level", "data"}


async def push(http: aiohttp.ClientSession, broker: Running, sender: str, **fields: Any) -> dict[str, Any]:
    async with http.post(f"{broker.url}/push", json=fields, headers=broker.auth(sender)) as r:
        body = await json_body(r)
        assert r.status == 201, body
        return body  # type: ignore[no-any-return]


async def history(http: aiohttp.ClientSession, broker: Running, viewer: str, **params: Any) -> tuple[int, Any]:
    query = {k: str(v) for k, v in params.items()}
    async with http.get(f"{broker.url}/history", params=query, headers=broker.auth(viewer)) as r:
        return r.status, await json_body(r)


async def all_history(http: aiohttp.ClientSession, broker: Running, viewer: str, **params: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    before = None
    while True:
        extra = dict(params) if before is None else {**params, "before": before}
        status, page = await history(http, broker, viewer, **extra)
        assert status == 200, page
        messages.extend(page["messages"])
        before = page["nextBefore"]
        if before is None:
            return messages


async def subscribe(http: aiohttp.ClientSession, broker: Running, name: str) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(f"{broker.url}/subscribe", params={"name": name}, headers=broker.auth(name))


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    value = json.loads(msg.data)
    assert isinstance(value, dict)
    return value


async def wait_connected(http: aiohttp.ClientSession, broker: Running, expected: dict[str, int]) -> None:
    """Block until the roster shows these live socket counts (the upgrade completes before registration)."""
    deadline = time.monotonic() + WAIT
    while True:
        async with http.get(f"{broker.url}/roster", headers=broker.auth("alice")) as r:
            counts = {m["name"]: m["connected"] for m in (await r.json())["teammates"]}
        if all(counts[k] == v for k, v in expected.items()):
            return
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.02)


# --- POST /push ---------------------------------------------------------------------------------------------------


async def test_push_dm_returns_message_and_delivery(broker: Running, http: aiohttp.ClientSession) -> None:
    before = int(time.time() * 1000)
    body = await push(
        http, broker, "ivy", to="dan", title="Build", body="CI is red — 🚒", level="warning", data={"pr": 12}
    )
    after = int(time.time() * 1000)
    assert set(body) == {"message", "delivery"}
    message = body["message"]
    assert set(message) == MESSAGE_KEYS
    assert message["from"] == "ivy"
    assert message["to"] == "dan"
    assert message["title"] == "Build"
    assert message["body"] == "CI is red — 🚒"
    assert message["level"] == "warning"
    assert message["data"] == {"pr": 12}
    assert before - 1000 <= message["ts"] <= after + 1000  # epoch milliseconds, not seconds
    assert uuid.UUID(message["id"]).version == 7
    # Nobody is subscribed: no live socket took it; the DM targets the recipient and the sender.
    assert body["delivery"] == {"live": 0, "targets": 2}


async def test_push_defaults_and_broadcast_targets(broker: Running, http: aiohttp.ClientSession) -> None:
    body = await push(http, broker, "mike", body="standup in 5")
    message = body["message"]
    assert message["from"] == "mike"
    assert message["to"] is None
    assert message["title"] is None
    assert message["level"] == "info"
    assert message["data"] == {}
    assert body["delivery"] == {"live": 0, "targets": 5}  # every slot of the team


async def test_push_from_is_never_taken_from_the_body(broker: Running, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{broker.url}/push", json={"body": "I am alice", "from": "alice"}, headers=broker.auth("ivy")
    ) as r:
        assert r.status == 400
        error = await json_body(r)
    assert error["code"] == "bad_request"
    assert "from" in error["error"]
    assert await all_history(http, broker, "alice") == []  # nothing was stored
    # And a well-formed push is attributed to the caller's token, whoever it names elsewhere.
    body = await push(http, broker, "ivy", body="hello", data={"from": "alice"})
    assert body["message"]["from"] == "ivy"
    assert [m["from"] for m in await all_history(http, broker, "alice")] == ["ivy"]


async def test_push_unknown_recipient_is_404(broker: Running, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{broker.url}/push", json={"to": "zed", "body": "hi"}, headers=broker.auth("ivy")) as r:
        assert r.status == 404
        assert (await json_body(r))["code"] == "not_found"
    assert await all_history(http, broker, "ivy") == []


async def test_push_body_length_bounds(broker: Running, http: aiohttp.ClientSession) -> None:
    longest = "é" * 65536  # counted in characters, not bytes
    body = await push(http, broker, "ivy", body=longest)
    assert body["message"]["body"] == longest
    for bad in ("", "x" * 65537):
        async with http.post(f"{broker.url}/push", json={"body": bad}, headers=broker.auth("ivy")) as r:
            assert r.status == 400
            assert (await json_body(r))["code"] == "bad_request"
    assert len(await all_history(http, broker, "ivy")) == 1


async def test_broadcast_reaches_every_subscriber_including_senders_other_sockets(
    broker: Running, http: aiohttp.ClientSession
) -> None:
    sockets = {
        "alice-1": await subscribe(http, broker, "alice"),
        "alice-2": await subscribe(http, broker, "alice"),
        "mike": await subscribe(http, broker, "mike"),
        "ivy": await subscribe(http, broker, "ivy"),
        "dan": await subscribe(http, broker, "dan"),
    }
    # hana is human-only: she subscribes with a TOTP session cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        code = code_at(broker.team.totp["hana"], time.time())
        async with browser.post(f"{broker.url}/session/totp", json={"code": code, "slot": "hana"}) as r:
            assert r.status == 200, await r.text()
        sockets["hana"] = await browser.ws_connect(f"{broker.url}/subscribe", params={"name": "hana"})
        await wait_connected(http, broker, {"alice": 2, "mike": 1, "ivy": 1, "dan": 1, "hana": 1})

        sent = await push(http, broker, "alice", body="all hands", level="notice")
        assert sent["delivery"] == {"live": 6, "targets": 5}
        for name, ws in sockets.items():
            assert await next_message(ws) == sent["message"], name
        for ws in sockets.values():
            await ws.close()


async def test_dm_reaches_recipient_and_senders_sockets_but_no_third_slot(
    broker: Running, http: aiohttp.ClientSession
) -> None:
    ivy = await subscribe(http, broker, "ivy")
    dan = await subscribe(http, broker, "dan")
    mike = await subscribe(http, broker, "mike")
    await wait_connected(http, broker, {"ivy": 1, "dan": 1, "mike": 1})

    dm = await push(http, broker, "ivy", to="dan", body="psst")
    assert dm["delivery"] == {"live": 2, "targets": 2}
    assert await next_message(dan) == dm["message"]
    assert await next_message(ivy) == dm["message"]  # the sender's own socket sees its DM too
    # A socket gets frames in order, so if mike had been sent the DM it would arrive before this broadcast.
    marker = await push(http, broker, "alice", body="marker")
    assert await next_message(mike) == marker["message"]
    assert await next_message(dan) == marker["message"]
    assert await next_message(ivy) == marker["message"]
    for ws in (ivy, dan, mike):
        await ws.close()


# --- GET /history -------------------------------------------------------------------------------------------------


async def test_history_is_viewer_scoped(broker: Running, http: aiohttp.ClientSession) -> None:
    ivy_to_dan = (await push(http, broker, "ivy", to="dan", body="secret 1"))["message"]
    dan_to_ivy = (await push(http, broker, "dan", to="ivy", body="secret 2"))["message"]
    everyone = (await push(http, broker, "alice", body="to everyone"))["message"]
    mike_to_alice = (await push(http, broker, "mike", to="alice", body="manager note"))["message"]

    def ids(messages: list[dict[str, Any]]) -> list[str]:
        return [m["id"] for m in messages]

    assert ids(await all_history(http, broker, "ivy")) == [everyone["id"], dan_to_ivy["id"], ivy_to_dan["id"]]
    assert ids(await all_history(http, broker, "dan")) == [everyone["id"], dan_to_ivy["id"], ivy_to_dan["id"]]
    # A third slot never sees a DM between two others, even a director, even when asking for their thread.
    assert ids(await all_history(http, broker, "mike")) == [mike_to_alice["id"], everyone["id"]]
    assert ids(await all_history(http, broker, "alice")) == [mike_to_alice["id"], everyone["id"]]
    assert ids(await all_history(http, broker, "mike", **{"with": "ivy"})) == []
    assert ids(await all_history(http, broker, "alice", **{"with": "dan"})) == []
    assert ids(await all_history(http, broker, "mike", **{"with": "dan"})) == []
    # History returns the same message objects the push answered with.
    assert (await all_history(http, broker, "dan"))[1] == dan_to_ivy


async def test_history_with_filters_one_dm_thread(broker: Running, http: aiohttp.ClientSession) -> None:
    a = (await push(http, broker, "ivy", to="dan", body="a"))["message"]
    await push(http, broker, "ivy", to="mike", body="other thread")
    await push(http, broker, "alice", body="broadcast")
    b = (await push(http, broker, "dan", to="ivy", body="b"))["message"]
    note = (await push(http, broker, "ivy", to="ivy", body="note to self"))["message"]

    thread = await all_history(http, broker, "ivy", **{"with": "dan"})
    assert [m["id"] for m in thread] == [b["id"], a["id"]]
    assert [m["id"] for m in await all_history(http, broker, "dan", **{"with": "ivy"})] == [b["id"], a["id"]]
    assert [m["id"] for m in await all_history(http, broker, "ivy", **{"with": "ivy"})] == [note["id"]]
    # The note to self appears once (not twice, as both sent and received) in the feed.
    feed = await all_history(http, broker, "ivy")
    assert [m["body"] for m in feed] == ["note to self", "b", "broadcast", "other thread", "a"]


async def test_history_newest_first(broker: Running, http: aiohttp.ClientSession) -> None:
    pushed = [(await push(http, broker, "mike", body=f"m{i}"))["message"] for i in range(12)]
    status, page = await history(http, broker, "ivy")
    assert status == 200
    assert page["messages"] == list(reversed(pushed))
    assert page["nextBefore"] is None  # a short page is the end
    keys = [(m["ts"], m["id"]) for m in page["messages"]]
    assert keys == sorted(keys, reverse=True)


async def test_history_keyset_paging_has_no_duplicates_or_gaps(broker: Running, http: aiohttp.ClientSession) -> None:
    semaphore = asyncio.Semaphore(8)

    async def one(i: int) -> dict[str, Any]:
        async with semaphore:
            sender = ("alice", "mike", "dan")[i % 3]
            fields: dict[str, Any] = {"body": f"n{i}"}
            if i % 5 == 0:
                fields["to"] = "ivy"
            return (await push(http, broker, sender, **fields))["message"]  # type: ignore[no-any-return]

    pushed = await asyncio.gather(*(one(i) for i in range(250)))
    expected = sorted(pushed, key=lambda m: (m["ts"], m["id"]), reverse=True)

    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if before is not None:
            params["before"] = before
        status, page = await history(http, broker, "ivy", **params)
        assert status == 200, page
        pages.append(page["messages"])
        if page["nextBefore"] is None:
            break
        before = page["nextBefore"]
        assert isinstance(before, str)
        # A message arriving mid-walk is newer than every cursor, so it never shifts the later pages.
        if len(pages) == 1:
            await push(http, broker, "alice", body="late arrival")
    assert [len(p) for p in pages] == [100, 100, 50]
    walked = [m for p in pages for m in p]
    assert len({m["id"] for m in walked}) == 250
    assert walked == expected


async def test_history_before_accepts_a_bare_epoch_ms(broker: Running, http: aiohttp.ClientSession) -> None:
    first = (await push(http, broker, "alice", body="first"))["message"]
    while int(time.time() * 1000) <= first["ts"] + 1:
        await asyncio.sleep(0.005)
    second = (await push(http, broker, "alice", body="second"))["message"]
    while int(time.time() * 1000) <= second["ts"] + 1:
        await asyncio.sleep(0.005)
    third = (await push(http, broker, "alice", body="third"))["message"]
    assert first["ts"] < second["ts"] < third["ts"]

    async def bodies(before: str) -> list[str]:
        status, page = await history(http, broker, "ivy", before=before)
        assert status == 200, page
        return [m["body"] for m in page["messages"]]

    assert await bodies(str(second["ts"])) == ["first"]  # strictly older than that millisecond
    assert await bodies(str(third["ts"])) == ["second", "first"]
    assert await bodies(str(third["ts"] + 1)) == ["third", "second", "first"]
    assert await bodies("0") == []
    assert await bodies(f"{third['ts']}:{third['id']}") == ["second", "first"]  # the nextBefore form


async def test_history_is_rate_limited_per_slot(start: StartBroker, http: aiohttp.ClientSession) -> None:
    broker = await start(history_rate=1, history_burst=2)
    statuses = []
    body: dict[str, Any] = {}
    retry_after = None
    for _ in range(20):  # the burst is 2; far fewer than 20 tokens can refill while these run
        async with http.get(f"{broker.url}/history", headers=broker.auth("ivy")) as r:
            statuses.append(r.status)
            if r.status == 429:
                body = await json_body(r)
                retry_after = r.headers.get("Retry-After")
                break
    assert statuses[:2] == [200, 200]
    assert statuses[-1] == 429, statuses
    assert body["code"] == "rate_limited" and isinstance(body["error"], str)
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
    # The bucket is per slot: another slot is not held back by ivy's.
    async with http.get(f"{broker.url}/history", headers=broker.auth("mike")) as r:
        assert r.status == 200


async def test_message_ids_sort_in_timestamp_order(broker: Running, http: aiohttp.ClientSession) -> None:
    pushed = [(await push(http, broker, "ivy", body=f"#{i}"))["message"] for i in range(40)]
    ids = [m["id"] for m in pushed]
    assert ids == sorted(ids)  # sorting by id is sorting by creation
    assert len(set(ids)) == len(ids)
    stamps = [m["ts"] for m in pushed]
    assert stamps == sorted(stamps)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    # And history, ordered by (ts, id), lists them in exactly the reverse of creation order.
    status, page = await history(http, broker, "ivy")
    assert status == 200
    assert [m["id"] for m in page["messages"]] == sorted(ids, reverse=True)
