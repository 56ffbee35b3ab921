"""CSRF defence by Fetch Metadata and Origin for cookie sessions (DESIGN §4 'CSRF')."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from ac7_auth_helpers import Reply, assert_error, bare_session, call, code_for, cookie_header, login, session_cookie
from broker_harness import Running

EVIL = "http://evil.example"
OWN = "<the broker's own origin>"


async def _cookie(broker: Running, slot: str = "alice") -> str:
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp[slot]), slot)
        assert reply.status == 200, reply.body
        return session_cookie(reply)[0]


async def _push(broker: Running, headers: dict[str, str], body: str = "hello") -> Reply:
    async with bare_session() as s:
        return await call(s, "POST", f"{broker.url}/push", json={"body": body}, headers=headers)


async def _bodies_seen_by(broker: Running, slot: str) -> list[str]:
    async with bare_session() as s:
        reply = await call(s, "GET", f"{broker.url}/history", headers=broker.auth(slot))
        assert reply.status == 200
        return [m["body"] for m in reply.body["messages"]]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"Origin": EVIL}, id="foreign-origin"),
        pytest.param({"Origin": "null"}, id="null-origin"),
        pytest.param({"Origin": "http://localhost"}, id="other-host"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sfs-cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sfs-same-site"),
        pytest.param({"Sec-Fetch-Site": "cross-site", "Origin": EVIL}, id="sfs-and-origin"),
    ],
)
async def test_cross_site_cookie_post_is_refused(broker: Running, extra: dict[str, str]) -> None:
    cookie = await _cookie(broker)
    reply = await _push(broker, {**cookie_header(cookie), **extra}, body="forged")
    assert_error(reply, 403, "csrf_denied")
    assert "forged" not in await _bodies_seen_by(broker, "mike")  # nothing was stored or sent


async def test_origin_of_another_port_is_cross_site(broker: Running) -> None:
    cookie = await _cookie(broker)
    host, _, port = broker.url.rpartition(":")
    other = f"{host}:{int(port) + 1}"
    assert_error(await _push(broker, {**cookie_header(cookie), "Origin": other}), 403, "csrf_denied")
    https = broker.url.replace("http://", "https://")
    assert_error(await _push(broker, {**cookie_header(cookie), "Origin": https}), 403, "csrf_denied")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"Origin": OWN}, id="own-origin"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="sfs-same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="sfs-none"),
        pytest.param({"Sec-Fetch-Site": "same-origin", "Origin": OWN}, id="sfs-and-origin"),
        pytest.param({}, id="no-headers"),
    ],
)
async def test_same_origin_cookie_post_is_allowed(broker: Running, extra: dict[str, str]) -> None:
    cookie = await _cookie(broker)
    extra = {k: broker.url if v == OWN else v for k, v in extra.items()}
    reply = await _push(broker, {**cookie_header(cookie), **extra}, body="legit")
    assert reply.status == 201, reply.body
    assert reply.body["message"]["from"] == "alice"
    assert "legit" in await _bodies_seen_by(broker, "mike")


async def test_other_unsafe_routes_are_guarded(broker: Running) -> None:
    cookie = await _cookie(broker, "ivy")
    hostile = {**cookie_header(cookie), "Origin": EVIL}
    async with bare_session() as s:
        # Logout by a foreign page must not end the session.
        assert_error(await call(s, "POST", f"{broker.url}/session/logout", headers=hostile), 403, "csrf_denied")
        assert (await call(s, "GET", f"{broker.url}/session", headers=cookie_header(cookie))).status == 200
        # Credential changes are guarded too.
        rotate = await call(s, "POST", f"{broker.url}/slots/ivy/rotate-token", headers=hostile)
        assert_error(rotate, 403, "csrf_denied")
        enrol = await call(s, "POST", f"{broker.url}/slots/ivy/totp", headers=hostile)
        assert_error(enrol, 403, "csrf_denied")
        for method in ("PUT", "DELETE", "PATCH"):
            reply = await call(s, method, f"{broker.url}/push/subscriptions/1", headers=hostile)
            assert_error(reply, 403, "csrf_denied")
    # The bearer token still works: the forged rotation never happened.
    async with bare_session() as s:
        assert (await call(s, "GET", f"{broker.url}/session", headers=broker.auth("ivy"))).status == 200


async def test_safe_methods_are_not_checked(broker: Running) -> None:
    cookie = await _cookie(broker)
    async with bare_session() as s:
        for extra in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
            reply = await call(s, "GET", f"{broker.url}/session", headers={**cookie_header(cookie), **extra})
            assert reply.status == 200
            assert reply.body["slot"] == "alice"


async def test_bearer_only_request_skips_csrf(broker: Running) -> None:
    for extra in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
        reply = await _push(broker, {**broker.auth("dan"), **extra}, body="from a script")
        assert reply.status == 201, reply.body
        assert reply.body["message"]["from"] == "dan"


async def test_bearer_with_a_cookie_is_checked(broker: Running) -> None:
    cookie = await _cookie(broker)
    reply = await _push(broker, {**broker.auth("dan"), **cookie_header(cookie), "Origin": EVIL}, body="mixed")
    assert_error(reply, 403, "csrf_denied")
    assert "mixed" not in await _bodies_seen_by(broker, "mike")


async def test_login_csrf_is_refused_and_does_not_burn_the_code(broker: Running) -> None:
    code = code_for(broker.team.totp["alice"])
    async with bare_session() as s:
        for extra in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            reply = await login(s, broker.url, code, "alice", headers=extra)
            assert_error(reply, 403, "csrf_denied")
            assert not reply.set_cookies
        ok = await login(s, broker.url, code, "alice", headers={"Origin": broker.url})
        assert ok.status == 200, ok.body
        session_cookie(ok)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"])
async def test_form_bodies_are_refused(broker: Running, content_type: str) -> None:
    cookie = await _cookie(broker)
    headers = {**cookie_header(cookie), "Origin": broker.url, "Content-Type": content_type}
    async with bare_session() as s:
        for payload in (b"body=hello", json.dumps({"body": "hello"}).encode()):
            reply = await call(s, "POST", f"{broker.url}/push", data=payload, headers=headers)
            assert_error(reply, 415, "unsupported_media_type")
        login_reply = await call(
            s,
            "POST",
            f"{broker.url}/session/totp",
            data=json.dumps({"code": code_for(broker.team.totp["ivy"]), "slot": "ivy"}).encode(),
            headers={"Origin": broker.url, "Content-Type": content_type},
        )
        assert_error(login_reply, 415, "unsupported_media_type")
        assert not login_reply.set_cookies
    assert await _bodies_seen_by(broker, "mike") == []


# --- WebSocket upgrades ---------------------------------------------------------------------------------------------


async def _ws_status(broker: Running, headers: dict[str, str], origin: str | None, name: str = "alice") -> int:
    async with bare_session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            ws = await s.ws_connect(f"{broker.url}/subscribe?name={name}", headers=headers, origin=origin)
            await ws.close()
        return info.value.status


async def test_cross_site_websocket_with_cookie_is_refused(broker: Running) -> None:
    cookie = await _cookie(broker)
    assert await _ws_status(broker, cookie_header(cookie), EVIL) == 403
    assert await _ws_status(broker, {**cookie_header(cookie), "Sec-Fetch-Site": "cross-site"}, None) == 403
    # The refusal is a plain HTTP answer in the API's error shape, before any upgrade.
    async with bare_session() as s:
        reply = await call(
            s,
            "GET",
            f"{broker.url}/subscribe?name=alice",
            headers={
                **cookie_header(cookie),
                "Origin": EVIL,
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert_error(reply, 403, "csrf_denied")
    assert broker.broker.state.messages.count("alice") == 0


async def test_same_origin_websocket_with_cookie_works(broker: Running) -> None:
    cookie = await _cookie(broker)
    async with bare_session() as s:
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=alice", headers=cookie_header(cookie), origin=broker.url)
        try:
            sent = await _push(broker, broker.auth("dan"), body="to the browser")
            assert sent.status == 201
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            assert json.loads(msg.data)["body"] == "to the browser"
        finally:
            await ws.close()


async def test_bearer_websocket_from_a_foreign_origin_works(broker: Running) -> None:
    async with bare_session() as s:
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=ivy", headers=broker.auth("ivy"), origin=EVIL)
        try:
            assert not ws.closed
            sent = await _push(broker, broker.auth("dan"), body="to the agent")
            assert sent.status == 201
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            assert json.loads(msg.data)["body"] == "to the agent"
        finally:
            await ws.close()


async def test_bearer_websocket_with_a_cookie_is_checked(broker: Running) -> None:
    cookie = await _cookie(broker, "ivy")
    assert await _ws_status(broker, {**broker.auth("ivy"), **cookie_header(cookie)}, EVIL, name="ivy") == 403
