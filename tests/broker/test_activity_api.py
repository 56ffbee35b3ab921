"""Activity upload, listing and live stream (DESIGN §4, §5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from activity_samples import TS, event_tag, json_body, llm_exchange, opaque_http, tagged
from broker_harness import Running

WAIT = 20.0
MIB = 1024 * 1024


async def upload(http: aiohttp.ClientSession, broker: Running, agent: str, events: list[Any]) -> tuple[int, Any]:
    async with http.post(
        f"{broker.url}/agents/{agent}/activity", json={"events": events}, headers=broker.auth(agent)
    ) as r:
        return r.status, await json_body(r)


async def listing(
    http: aiohttp.ClientSession, broker: Running, agent: str, viewer: str | None = None, **params: Any
) -> tuple[int, Any]:
    query = {k: str(v) for k, v in params.items()}
    async with http.get(
        f"{broker.url}/agents/{agent}/activity", params=query, headers=broker.auth(viewer or agent)
    ) as r:
        return r.status, await json_body(r)


async def all_rows(http: aiohttp.ClientSession, broker: Running, agent: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    before = None
    while True:
        extra = dict(params) if before is None else {**params, "before": before}
        status, page = await listing(http, broker, agent, **extra)
        assert status == 200, page
        rows.extend(page["activity"])
        before = page["nextBefore"]
        if before is None:
            return rows


async def test_upload_accepts_1_to_500_events(broker: Running, http: aiohttp.ClientSession) -> None:
    assert await upload(http, broker, "ivy", [llm_exchange()]) == (201, {"accepted": 1})
    status, body = await upload(http, broker, "ivy", [*tagged("big", 499), llm_exchange(TS + 5)])
    assert (status, body) == (201, {"accepted": 500})
    for events in ([], tagged("too-many", 501)):
        status, body = await upload(http, broker, "ivy", events)
        assert status == 400, len(events)
        assert body["code"] == "bad_request"
    rows = await all_rows(http, broker, "ivy")
    assert len(rows) == 501
    assert not any(event_tag(r).startswith("/too-many/") for r in rows)


async def test_one_invalid_event_rejects_the_whole_batch(broker: Running, http: aiohttp.ClientSession) -> None:
    bad = opaque_http()
    bad["entry"]["status"] = "teapot"
    events = [*tagged("ok", 3), bad, llm_exchange()]
    status, body = await upload(http, broker, "ivy", events)
    assert status == 400
    assert body["code"] == "bad_request"
    assert "events[3].entry.status" in body["error"]  # says where
    assert await all_rows(http, broker, "ivy") == []  # all or nothing


async def test_rows_round_trip_the_uploaded_events(broker: Running, http: aiohttp.ClientSession) -> None:
    events = [llm_exchange(TS), opaque_http(TS + 1)]
    assert (await upload(http, broker, "dan", events))[0] == 201
    rows = await all_rows(http, broker, "dan")
    assert [r["event"] for r in rows] == list(reversed(events))  # newest first, byte-for-byte the same JSON
    for row in rows:
        assert set(row) == {"id", "agent", "event", "createdAt"}
        assert row["agent"] == "dan"
        assert isinstance(row["id"], int) and isinstance(row["createdAt"], int)
    assert rows[0]["id"] > rows[1]["id"]
    # Only the agent itself uploads, even a director cannot write another agent's trace.
    async with http.post(
        f"{broker.url}/agents/dan/activity", json={"events": events}, headers=broker.auth("alice")
    ) as r:
        assert r.status == 403
    assert len(await all_rows(http, broker, "dan")) == 2


async def test_list_filters_by_kind_and_time(broker: Running, http: aiohttp.ClientSession) -> None:
    llm = [llm_exchange(TS + i) for i in range(6)]  # ts TS..TS+5
    http_events = [opaque_http(TS + 10 + i, f"/h/{i}") for i in range(4)]  # ts TS+10..TS+13
    assert (await upload(http, broker, "ivy", llm + http_events))[0] == 201
    await upload(http, broker, "dan", tagged("someone-else", 3, TS + 2))

    rows = await all_rows(http, broker, "ivy", kind="opaque_http")
    assert [event_tag(r) for r in rows] == ["/h/3", "/h/2", "/h/1", "/h/0"]
    rows = await all_rows(http, broker, "ivy", kind="llm_exchange")
    assert [r["event"]["ts"] for r in rows] == [TS + 5, TS + 4, TS + 3, TS + 2, TS + 1, TS]
    # from/to are inclusive bounds on the event's ts.
    rows = await all_rows(http, broker, "ivy", **{"from": TS + 3, "to": TS + 11})
    assert [r["event"]["ts"] for r in rows] == [TS + 11, TS + 10, TS + 5, TS + 4, TS + 3]
    rows = await all_rows(http, broker, "ivy", kind="opaque_http", to=TS + 10)
    assert [event_tag(r) for r in rows] == ["/h/0"]
    assert await all_rows(http, broker, "ivy", **{"from": TS + 100}) == []
    assert {r["agent"] for r in await all_rows(http, broker, "ivy")} == {"ivy"}
    status, body = await listing(http, broker, "ivy", kind="bogus")
    assert status == 400
    assert body["code"] == "bad_request"


async def test_list_limit_is_clamped_and_pages_are_keyset(broker: Running, http: aiohttp.ClientSession) -> None:
    for batch in range(3):
        status, body = await upload(http, broker, "ivy", tagged(f"b{batch}", 500, TS + batch * 1000))
        assert (status, body) == (201, {"accepted": 500})

    status, page = await listing(http, broker, "ivy")
    assert status == 200
    assert len(page["activity"]) == 100  # the default page
    status, page = await listing(http, broker, "ivy", limit=100000)
    assert status == 200
    assert len(page["activity"]) == 1000  # clamped to the maximum page
    assert page["nextBefore"] == page["activity"][-1]["id"]
    status, page = await listing(http, broker, "ivy", limit=0)
    assert status == 200
    assert len(page["activity"]) == 1  # clamped to the minimum
    assert event_tag(page["activity"][0]) == "/b2/499"  # the newest

    pages = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 400}
        if before is not None:
            params["before"] = before
        status, page = await listing(http, broker, "ivy", **params)
        assert status == 200
        pages.append(page["activity"])
        before = page["nextBefore"]
        if before is None:
            break
        assert before == page["activity"][-1]["id"]
        if len(pages) == 1:  # a row stored mid-walk is newer than the cursor, so it cannot shift later pages
            await upload(http, broker, "ivy", tagged("late", 1, TS + 5000))
    assert [len(p) for p in pages] == [400, 400, 400, 300]
    ids = [r["id"] for p in pages for r in p]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 1500
    assert {event_tag(r) for p in pages for r in p} == {f"/b{b}/{i}" for b in range(3) for i in range(500)}


async def test_stream_receives_each_stored_row(broker: Running, http: aiohttp.ClientSession) -> None:
    url = f"{broker.url}/agents/ivy/activity/stream"
    own = await http.ws_connect(url, headers=broker.auth("ivy"))
    director = await http.ws_connect(url, headers=broker.auth("alice"))
    other = await http.ws_connect(f"{broker.url}/agents/dan/activity/stream", headers=broker.auth("alice"))
    try:
        await http.ws_connect(url, headers=broker.auth("mike"))  # a manager is not a director
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a manager opened another agent's activity stream")

    async def registered() -> None:
        while (
            broker.broker.state.activity_streams.count("ivy") < 2
            or broker.broker.state.activity_streams.count("dan") < 1
        ):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(registered(), WAIT)
    events = [llm_exchange(TS), *tagged("s", 2, TS + 1)]
    assert await upload(http, broker, "ivy", events) == (201, {"accepted": 3})
    stored = list(reversed(await all_rows(http, broker, "ivy")))

    async def frames(ws: aiohttp.ClientWebSocketResponse, n: int) -> AsyncIterator[dict[str, Any]]:
        for _ in range(n):
            msg = await asyncio.wait_for(ws.receive(), WAIT)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            yield json.loads(msg.data)

    for ws in (own, director):
        got = [row async for row in frames(ws, 3)]
        assert got == stored  # one ActivityRow per frame, in storage order, identical to the listing
        assert [r["event"] for r in got] == events
    # dan's stream saw nothing of ivy's: its first frame is dan's own upload.
    assert (await upload(http, broker, "dan", tagged("dan", 1)))[0] == 201
    (row,) = [r async for r in frames(other, 1)]
    assert row["agent"] == "dan" and event_tag(row) == "/dan/0"
    for ws in (own, director, other):
        await ws.close()


async def test_activity_body_limit_is_16_mib(broker: Running, http: aiohttp.ClientSession) -> None:
    url = f"{broker.url}/agents/ivy/activity"
    headers = {**broker.auth("ivy"), "Content-Type": "application/json"}
    # Just over 16 MiB, with a Content-Length (refused up front) and chunked (refused while reading).
    oversize = b'{"events":["' + b"x" * (16 * MIB) + b'"]}'
    async with http.post(url, data=oversize, headers=headers) as r:
        assert r.status == 413
        assert (await json_body(r))["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(oversize), 256 * 1024):
            yield oversize[start : start + 256 * 1024]

    async with http.post(url, data=chunks(), headers=headers) as r:
        assert r.status == 413
        assert (await json_body(r))["code"] == "payload_too_large"
    assert await all_rows(http, broker, "ivy") == []


async def test_2_mib_upload_is_accepted_where_a_2_mib_push_is_not(broker: Running, http: aiohttp.ClientSession) -> None:
    big_text = "trace line 🚀\n" * (2 * MIB // 14)
    event = llm_exchange(TS, text=big_text)
    payload = json.dumps({"events": [event]}).encode()
    assert 2 * MIB <= len(payload) < 16 * MIB
    async with http.post(
        f"{broker.url}/agents/ivy/activity",
        data=payload,
        headers={**broker.auth("ivy"), "Content-Type": "application/json"},
    ) as r:
        assert r.status == 201, await r.text()
        assert await json_body(r) == {"accepted": 1}
    (row,) = await all_rows(http, broker, "ivy")
    assert row["event"] == event

    push = json.dumps({"body": "x" * (2 * MIB)}).encode()
    async with http.post(
        f"{broker.url}/push", data=push, headers={**broker.auth("ivy"), "Content-Type": "application/json"}
    ) as r:
        assert r.status == 413
        assert (await json_body(r))["code"] == "payload_too_large"
    async with http.get(f"{broker.url}/history", headers=broker.auth("ivy")) as r:
        assert (await r.json())["messages"] == []


async def _keyed_upload(
    http: aiohttp.ClientSession, broker: Running, agent: str, body: bytes, *keys: str
) -> tuple[int, Any, str | None]:
    headers = {**broker.auth(agent), "Content-Type": "application/json"}
    async with http.post(
        f"{broker.url}/agents/{agent}/activity",
        data=body,
        headers=[*headers.items(), *(("Idempotency-Key", k) for k in keys)],
    ) as r:
        return r.status, await json_body(r), r.headers.get("Idempotent-Replayed")


async def test_a_retried_upload_with_its_idempotency_key_is_stored_once(
    broker: Running, http: aiohttp.ClientSession
) -> None:
    """The uploader's retry after a lost answer: same key, same body. The answer is the first one again, with
    `Idempotent-Replayed`, nothing more is stored, and live watchers see each row once."""
    stream = await http.ws_connect(f"{broker.url}/agents/ivy/activity/stream", headers=broker.auth("ivy"))

    async def registered() -> None:
        while broker.broker.state.activity_streams.count("ivy") < 1:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(registered(), WAIT)
    key = "retry-key-0123456789"
    body = json.dumps({"events": tagged("keyed", 3)}).encode()
    assert await _keyed_upload(http, broker, "ivy", body, key) == (201, {"accepted": 3}, None)
    assert await _keyed_upload(http, broker, "ivy", body, key) == (201, {"accepted": 3}, "true")
    assert [event_tag(r) for r in await all_rows(http, broker, "ivy")] == ["/keyed/2", "/keyed/1", "/keyed/0"]
    # Another batch under the same key is refused, not half-stored; the same key for another agent is its own.
    other = json.dumps({"events": tagged("other", 1)}).encode()
    status, error, _ = await _keyed_upload(http, broker, "ivy", other, key)
    assert (status, error["code"]) == (409, "idempotency_conflict")
    assert (await _keyed_upload(http, broker, "dan", other, key))[:2] == (201, {"accepted": 1})
    assert len(await all_rows(http, broker, "ivy")) == 3
    # The stream got the three rows of the first upload and nothing of the replay.
    frames = [json.loads((await asyncio.wait_for(stream.receive(), WAIT)).data) for _ in range(3)]
    assert [event_tag(f) for f in frames] == ["/keyed/0", "/keyed/1", "/keyed/2"]
    assert (await upload(http, broker, "ivy", tagged("after", 1)))[0] == 201
    assert event_tag(json.loads((await asyncio.wait_for(stream.receive(), WAIT)).data)) == "/after/0"
    await stream.close()


async def test_a_malformed_idempotency_key_is_a_400(broker: Running, http: aiohttp.ClientSession) -> None:
    body = json.dumps({"events": tagged("bad-key", 1)}).encode()
    for keys in (("short",), ("x" * 65,), ("has space in it 123",), ("ключ-0123456789abcdef",), ("a" * 20, "b" * 20)):
        status, error, _ = await _keyed_upload(http, broker, "ivy", body, *keys)
        assert (status, error["code"]) == (400, "bad_request"), keys
    assert await all_rows(http, broker, "ivy") == []
