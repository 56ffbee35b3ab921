"""Who may do what (DESIGN §4 table): self-only and self-or-director routes, bearer-only busy, 404/405 shapes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest
from ac7_auth_helpers import Reply, assert_error, bare_session, call, code_for, cookie_header, login, session_cookie
from broker_harness import Running

from ac7_core.tokens import TOKEN_RE

WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def _event(marker: str) -> dict[str, Any]:
    ts = int(time.time() * 1000)
    return {
        "kind": "opaque_http",
        "ts": ts,
        "duration": 5,
        "entry": {
            "kind": "opaque_http",
            "startedAt": ts - 5,
            "endedAt": ts,
            "host": "statsig.anthropic.com",
            "method": "POST",
            "path": f"/v1/{marker}",
            "status": 202,
            "requestHeaders": {},
            "responseHeaders": {},
            "requestBodyPreview": None,
            "responseBodyPreview": None,
        },
    }


async def _upload(http: aiohttp.ClientSession, broker: Running, caller: str, agent: str, marker: str) -> Reply:
    return await call(
        http,
        "POST",
        f"{broker.url}/agents/{agent}/activity",
        json={"events": [_event(marker)]},
        headers=broker.auth(caller),
    )


async def _read(http: aiohttp.ClientSession, broker: Running, headers: dict[str, str], agent: str) -> Reply:
    return await call(http, "GET", f"{broker.url}/agents/{agent}/activity", headers=headers)


def _paths(reply: Reply) -> list[str]:
    return [row["event"]["entry"]["path"] for row in reply.body["activity"]]


async def _cookie(broker: Running, slot: str) -> str:
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp[slot]), slot)
        assert reply.status == 200, reply.body
        return session_cookie(reply)[0]


# --- activity -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "agent", "allowed"),
    [
        ("ivy", "dan", False),  # IC reading another agent
        ("dan", "alice", False),  # IC reading a director
        ("mike", "ivy", False),  # a manager is not a director
        ("alice", "dan", True),  # director
        ("alice", "ivy", True),
        ("ivy", "ivy", True),  # self
        ("dan", "dan", True),
    ],
)
async def test_activity_read_is_self_or_director(
    broker: Running, http: aiohttp.ClientSession, caller: str, agent: str, allowed: bool
) -> None:
    assert (await _upload(http, broker, agent, agent, f"by-{agent}")).status == 201
    reply = await _read(http, broker, broker.auth(caller), agent)
    if allowed:
        assert reply.status == 200, reply.body
        assert _paths(reply) == [f"/v1/by-{agent}"]
        assert all(row["agent"] == agent for row in reply.body["activity"])
    else:
        assert_error(reply, 403, "forbidden")
        assert f"by-{agent}" not in json.dumps(reply.body)


async def test_activity_read_with_a_session_cookie(broker: Running, http: aiohttp.ClientSession) -> None:
    assert (await _upload(http, broker, "ivy", "ivy", "ivy-trace")).status == 201
    hana = await _cookie(broker, "hana")  # human IC
    alice = await _cookie(broker, "alice")  # human director
    async with bare_session() as s:
        assert_error(await _read(s, broker, cookie_header(hana), "ivy"), 403, "forbidden")
        ok = await _read(s, broker, cookie_header(alice), "ivy")
        assert ok.status == 200
        assert _paths(ok) == ["/v1/ivy-trace"]


async def test_activity_of_unknown_agent_is_404(broker: Running, http: aiohttp.ClientSession) -> None:
    assert_error(await _read(http, broker, broker.auth("alice"), "nobody"), 404, "not_found")


async def test_activity_upload_is_self_only(broker: Running, http: aiohttp.ClientSession) -> None:
    for caller in ("alice", "mike", "dan"):  # not even a director may write another agent's trace
        assert_error(await _upload(http, broker, caller, "ivy", f"forged-by-{caller}"), 403, "forbidden")
    own = await _upload(http, broker, "ivy", "ivy", "genuine")
    assert own.status == 201
    assert own.body == {"accepted": 1}
    assert _paths(await _read(http, broker, broker.auth("ivy"), "ivy")) == ["/v1/genuine"]


async def test_activity_upload_by_session_is_self_only(broker: Running) -> None:
    alice = await _cookie(broker, "alice")
    async with bare_session() as s:
        reply = await call(
            s, "POST", f"{broker.url}/agents/ivy/activity", json={"events": [_event("x")]}, headers=cookie_header(alice)
        )
        assert_error(reply, 403, "forbidden")


async def _ws_refusal(broker: Running, path: str, headers: dict[str, str]) -> tuple[int, Reply]:
    """The status of a refused upgrade as aiohttp's client sees it, and the same request's plain-HTTP answer."""
    async with bare_session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            ws = await s.ws_connect(broker.url + path, headers=headers)
            await ws.close()
        plain = await call(s, "GET", broker.url + path, headers={**headers, **WS_HEADERS})
    return info.value.status, plain


async def test_subscribe_is_self_only(broker: Running) -> None:
    status, plain = await _ws_refusal(broker, "/subscribe?name=ivy", broker.auth("alice"))
    assert status == 403
    assert_error(plain, 403, "forbidden")
    status, plain = await _ws_refusal(broker, "/subscribe", broker.auth("alice"))
    assert status == 400
    assert_error(plain, 400, "bad_request")
    status, plain = await _ws_refusal(broker, "/subscribe?name=alice", {})
    assert status == 401
    assert_error(plain, 401, "unauthenticated")
    status, _ = await _ws_refusal(broker, "/subscribe?name=alice", {"Authorization": "Bearer ac7_" + "A" * 43})
    assert status == 401
    assert broker.broker.state.messages.count("ivy") == 0
    # The owner can.
    async with bare_session() as s:
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=ivy", headers=broker.auth("ivy"))
        assert broker.broker.state.messages.count("ivy") == 1
        await ws.close()


async def test_activity_stream_is_self_or_director(broker: Running, http: aiohttp.ClientSession) -> None:
    for caller in ("dan", "mike"):
        status, plain = await _ws_refusal(broker, "/agents/ivy/activity/stream", broker.auth(caller))
        assert status == 403
        assert_error(plain, 403, "forbidden")
    async with bare_session() as s:
        ws = await s.ws_connect(f"{broker.url}/agents/ivy/activity/stream", headers=broker.auth("alice"))
        try:
            assert (await _upload(http, broker, "ivy", "ivy", "live")).status == 201
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            row = json.loads(msg.data)
            assert row["agent"] == "ivy"
            assert row["event"]["entry"]["path"] == "/v1/live"
        finally:
            await ws.close()
        own = await s.ws_connect(f"{broker.url}/agents/ivy/activity/stream", headers=broker.auth("ivy"))
        await own.close()


# --- token rotation ----------------------------------------------------------------------------------------------


async def _whoami(http: aiohttp.ClientSession, broker: Running, token: str) -> int:
    reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": f"Bearer {token}"})
    return reply.status


async def test_rotate_own_token(broker: Running, http: aiohttp.ClientSession) -> None:
    old = broker.team.tokens["ivy"]
    reply = await call(http, "POST", f"{broker.url}/slots/ivy/rotate-token", headers=broker.auth("ivy"))
    assert reply.status == 200, reply.body
    new = reply.body["token"]
    assert TOKEN_RE.match(new)
    assert new != old
    # Immediately: no reload wait.
    assert await _whoami(http, broker, new) == 200
    assert await _whoami(http, broker, old) == 401
    # Stored hashed only; no one else touched.
    text = broker.team.config_path.read_text()
    assert new not in text
    for name in ("alice", "mike", "dan"):
        assert await _whoami(http, broker, broker.team.tokens[name]) == 200


async def test_director_rotates_another(broker: Running, http: aiohttp.ClientSession) -> None:
    old = broker.team.tokens["ivy"]
    reply = await call(http, "POST", f"{broker.url}/slots/ivy/rotate-token", headers=broker.auth("alice"))
    assert reply.status == 200, reply.body
    new = reply.body["token"]
    who = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": f"Bearer {new}"})
    assert who.body["slot"] == "ivy"
    assert await _whoami(http, broker, old) == 401
    assert await _whoami(http, broker, broker.team.tokens["alice"]) == 200


@pytest.mark.parametrize(("caller", "target"), [("ivy", "dan"), ("mike", "ivy"), ("dan", "alice")])
async def test_non_director_cannot_rotate_another(
    broker: Running, http: aiohttp.ClientSession, caller: str, target: str
) -> None:
    reply = await call(http, "POST", f"{broker.url}/slots/{target}/rotate-token", headers=broker.auth(caller))
    assert_error(reply, 403, "forbidden")
    assert await _whoami(http, broker, broker.team.tokens[target]) == 200


async def test_rotate_unknown_slot(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "POST", f"{broker.url}/slots/nobody/rotate-token", headers=broker.auth("alice"))
    assert_error(reply, 404, "not_found")
    # A non-director learns nothing about which names exist.
    reply = await call(http, "POST", f"{broker.url}/slots/nobody/rotate-token", headers=broker.auth("ivy"))
    assert_error(reply, 403, "forbidden")


async def test_rotation_closes_sockets_of_the_old_token(broker: Running, http: aiohttp.ClientSession) -> None:
    async with bare_session() as s:
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=ivy", headers=broker.auth("ivy"))
        try:
            reply = await call(http, "POST", f"{broker.url}/slots/ivy/rotate-token", headers=broker.auth("alice"))
            assert reply.status == 200
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        finally:
            await ws.close()


# --- TOTP enrolment ----------------------------------------------------------------------------------------------


async def test_enrol_self_replaces_the_authenticator(broker: Running, http: aiohttp.ClientSession) -> None:
    old_secret = broker.team.totp["ivy"]
    reply = await call(http, "POST", f"{broker.url}/slots/ivy/totp", headers=broker.auth("ivy"))
    assert reply.status == 200, reply.body
    secret, uri = reply.body["secret"], reply.body["uri"]
    assert secret != old_secret
    assert uri.startswith("otpauth://totp/")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    assert query["secret"] == [secret]
    assert "ivy" in urllib.parse.unquote(uri)
    assert secret not in broker.team.config_path.read_text()  # sealed at rest
    async with bare_session() as s:
        # The old authenticator stops working...
        assert_error(await login(s, broker.url, code_for(old_secret), "ivy"), 401, "invalid_code")
        # ...and the new one works.
        ok = await login(s, broker.url, code_for(secret, +1), "ivy")
        assert ok.status == 200, ok.body
        assert ok.body["slot"] == "ivy"


async def test_director_enrols_another(broker: Running, http: aiohttp.ClientSession) -> None:
    # dan had no TOTP at all; a director gives him one.
    async with bare_session() as s:
        assert (await login(s, broker.url, code_for(broker.team.totp["alice"]), "dan")).status == 401
    reply = await call(http, "POST", f"{broker.url}/slots/dan/totp", headers=broker.auth("alice"))
    assert reply.status == 200, reply.body
    async with bare_session() as s:
        ok = await login(s, broker.url, code_for(reply.body["secret"]), "dan")
        assert ok.status == 200, ok.body
        assert ok.body["slot"] == "dan"


@pytest.mark.parametrize(("caller", "target"), [("ivy", "dan"), ("mike", "ivy"), ("dan", "alice")])
async def test_non_director_cannot_enrol_another(
    broker: Running, http: aiohttp.ClientSession, caller: str, target: str
) -> None:
    reply = await call(http, "POST", f"{broker.url}/slots/{target}/totp", headers=broker.auth(caller))
    assert_error(reply, 403, "forbidden")
    if target in broker.team.totp:
        async with bare_session() as s:
            ok = await login(s, broker.url, code_for(broker.team.totp[target]), target)
            assert ok.status == 200  # the target's authenticator still works


async def test_enrol_unknown_slot(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "POST", f"{broker.url}/slots/nobody/totp", headers=broker.auth("alice"))
    assert_error(reply, 404, "not_found")
    reply = await call(http, "POST", f"{broker.url}/slots/nobody/totp", headers=broker.auth("dan"))
    assert_error(reply, 403, "forbidden")


async def test_human_enrols_self_through_the_session(broker: Running) -> None:
    old = broker.team.totp["hana"]
    cookie = await _cookie(broker, "hana")
    async with bare_session() as s:
        other = await call(s, "POST", f"{broker.url}/slots/ivy/totp", headers=cookie_header(cookie))
        assert_error(other, 403, "forbidden")
        reply = await call(s, "POST", f"{broker.url}/slots/hana/totp", headers=cookie_header(cookie))
        assert reply.status == 200, reply.body
        assert_error(await login(s, broker.url, code_for(old, +1), "hana"), 401, "invalid_code")
        # A new authenticator ends the sessions signed in with the old one, this one included.
        await broker.broker.state.settle()
        after = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(cookie))
        assert_error(after, 401, "unauthenticated")
        # ...and the new authenticator works at once (a fresh replay guard for the new secret).
        assert (await login(s, broker.url, code_for(reply.body["secret"], 0), "hana")).status == 200


# --- busy ----------------------------------------------------------------------------------------------------------


async def _busy_flags(http: aiohttp.ClientSession, broker: Running) -> dict[str, bool]:
    reply = await call(http, "GET", f"{broker.url}/roster", headers=broker.auth("alice"))
    return {m["name"]: m["busy"] for m in reply.body["teammates"]}


async def test_busy_is_bearer_only(broker: Running, http: aiohttp.ClientSession) -> None:
    cookie = await _cookie(broker, "ivy")
    async with bare_session() as s:
        reply = await call(s, "POST", f"{broker.url}/presence/busy", json={"busy": True}, headers=cookie_header(cookie))
        assert_error(reply, 403, "forbidden")
    assert (await _busy_flags(http, broker))["ivy"] is False

    reply = await call(http, "POST", f"{broker.url}/presence/busy", json={"busy": True}, headers=broker.auth("ivy"))
    assert reply.status == 204
    flags = await _busy_flags(http, broker)
    assert flags["ivy"] is True
    assert [n for n, b in flags.items() if b] == ["ivy"]  # only the caller
    reply = await call(http, "POST", f"{broker.url}/presence/busy", json={"busy": False}, headers=broker.auth("ivy"))
    assert reply.status == 204
    assert (await _busy_flags(http, broker))["ivy"] is False


async def test_busy_validates_its_body(broker: Running, http: aiohttp.ClientSession) -> None:
    for body in ({}, {"busy": "yes"}, {"busy": 1}, {"busy": True, "who": "alice"}, [True]):
        reply = await call(http, "POST", f"{broker.url}/presence/busy", json=body, headers=broker.auth("ivy"))
        assert_error(reply, 400, "bad_request")
    reply = await call(http, "POST", f"{broker.url}/presence/busy", json={"busy": True})
    assert_error(reply, 401, "unauthenticated")
    assert (await _busy_flags(http, broker))["ivy"] is False


# --- unknown routes and methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/agents/ivy/nope", "/slots/ivy", "/session/totp/extra"])
async def test_unknown_route_is_json_404(broker: Running, http: aiohttp.ClientSession, path: str) -> None:
    for headers in ({}, broker.auth("alice")):
        reply = await call(http, "GET", broker.url + path, headers=headers)
        assert_error(reply, 404, "not_found")
        assert set(reply.body) == {"error", "code"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/push", "POST"),
        ("DELETE", "/roster", "GET"),
        ("PUT", "/session/totp", "POST"),
        ("GET", "/slots/ivy/rotate-token", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_wrong_method_is_json_405(
    broker: Running, http: aiohttp.ClientSession, method: str, path: str, allowed: str
) -> None:
    reply = await call(http, method, broker.url + path, headers=broker.auth("alice"))
    assert_error(reply, 405, "method_not_allowed")
    assert allowed in reply.headers.get("Allow", "")
    assert "Traceback" not in json.dumps(reply.body)
