"""Bearer-token authentication (DESIGN §4 'Auth order') and what a valid token gets: session, briefing, roster."""

from __future__ import annotations

import aiohttp
import pytest
from ac7_auth_helpers import Reply, assert_error, call
from broker_harness import TEAM, Running

from ac7_core.tokens import mint_token

PROTECTED = ["/session", "/briefing", "/roster", "/history"]


def _assert_unauthenticated(reply: Reply) -> None:
    assert_error(reply, 401, "unauthenticated")
    assert reply.headers.get("WWW-Authenticate") == 'Bearer realm="ac7"'
    assert set(reply.body) == {"error", "code"}


@pytest.mark.parametrize("path", PROTECTED)
async def test_missing_token_is_401_with_challenge(broker: Running, http: aiohttp.ClientSession, path: str) -> None:
    reply = await call(http, "GET", broker.url + path)
    _assert_unauthenticated(reply)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic"),
        pytest.param("Bearer", id="bearer-nothing"),
        pytest.param("Bearer ", id="bearer-space"),
        pytest.param("Bearer    ", id="bearer-spaces"),
        pytest.param("Token ac7_x", id="other-scheme"),
        pytest.param("", id="empty"),
        pytest.param("ac7_" + "A" * 43, id="token-without-scheme"),
    ],
)
async def test_malformed_authorization_is_401(broker: Running, http: aiohttp.ClientSession, authorization: str) -> None:
    reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": authorization})
    _assert_unauthenticated(reply)


async def test_wrong_token_is_401(broker: Running, http: aiohttp.ClientSession) -> None:
    for bad in ["nonsense", "ac7_short", broker.team.tokens["alice"] + "x", broker.team.tokens["alice"][:-1]]:
        reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": f"Bearer {bad}"})
        _assert_unauthenticated(reply)


async def test_well_formed_unknown_token_is_401(broker: Running, http: aiohttp.ClientSession) -> None:
    unknown = mint_token()
    assert unknown not in broker.team.tokens.values()
    for path in PROTECTED:
        reply = await call(http, "GET", broker.url + path, headers={"Authorization": f"Bearer {unknown}"})
        _assert_unauthenticated(reply)


async def test_token_hash_itself_is_not_a_token(broker: Running, http: aiohttp.ClientSession) -> None:
    # What is stored in the config must never work as the credential.
    stored = next(s.token_hash for s in broker.broker.state.config.slots if s.name == "alice")
    assert stored is not None
    for bad in [stored, stored.removeprefix("sha256:")]:
        reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": f"Bearer {bad}"})
        assert reply.status == 401


async def test_human_only_slot_has_no_bearer(broker: Running, http: aiohttp.ClientSession) -> None:
    # hana has only a TOTP secret: no token of anyone's maps to her, and her name is not a token.
    reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": "Bearer hana"})
    assert reply.status == 401


async def test_scheme_is_case_insensitive(broker: Running, http: aiohttp.ClientSession) -> None:
    token = broker.team.tokens["ivy"]
    reply = await call(http, "GET", f"{broker.url}/session", headers={"Authorization": f"bearer {token}"})
    assert reply.status == 200
    assert reply.body["slot"] == "ivy"


async def test_session_with_token(broker: Running, http: aiohttp.ClientSession) -> None:
    for name, role, authority, bearer, _totp in TEAM:
        if not bearer:
            continue
        reply = await call(http, "GET", f"{broker.url}/session", headers=broker.auth(name))
        assert reply.status == 200, reply.body
        assert reply.body["slot"] == name
        assert reply.body["role"] == role
        assert reply.body["authority"] == authority
        assert "expiresAt" in reply.body
        # A bearer-authenticated request is not a cookie session: nothing to set or slide.
        assert not reply.headers.getall("Set-Cookie", [])


async def test_briefing(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", f"{broker.url}/briefing", headers=broker.auth("mike"))
    assert reply.status == 200, reply.body
    b = reply.body
    assert b["name"] == "mike"
    assert b["role"] == {"name": "lead", "description": "Plans and reviews"}
    assert b["authority"] == "manager"
    assert b["team"] == {"name": "acme", "directive": "Ship the billing service", "brief": "Context."}
    teammates = b["teammates"]
    assert [t["name"] for t in teammates] == ["alice", "ivy", "dan", "hana"]
    assert {"name": "alice", "role": "lead", "authority": "director"} in teammates
    assert {"name": "ivy", "role": "engineer", "authority": "individual-contributor"} in teammates
    for t in teammates:
        assert set(t) == {"name", "role", "authority"}
    instructions = b["instructions"]
    assert isinstance(instructions, str)
    assert "Ship the billing service" in instructions  # team directive
    assert "Review every change." in instructions  # role instructions of mike's role
    assert "mike" in instructions
    for mate in ("alice", "ivy", "dan", "hana"):
        assert mate in instructions


async def test_briefing_is_per_caller(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", f"{broker.url}/briefing", headers=broker.auth("ivy"))
    assert reply.status == 200
    b = reply.body
    assert b["name"] == "ivy"
    assert b["role"] == {"name": "engineer", "description": "Writes and tests code"}
    assert b["authority"] == "individual-contributor"
    assert "ivy" not in [t["name"] for t in b["teammates"]]
    assert [t["name"] for t in b["teammates"]] == ["alice", "mike", "dan", "hana"]
    # The lead role's instructions are not an engineer's.
    assert "Review every change." not in b["instructions"]
    assert "Ship the billing service" in b["instructions"]


async def test_roster_with_token(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", f"{broker.url}/roster", headers=broker.auth("dan"))
    assert reply.status == 200
    mates = reply.body["teammates"]
    assert [(m["name"], m["role"], m["authority"]) for m in mates] == [(n, r, a) for n, r, a, _b, _t in TEAM]
    for m in mates:
        assert set(m) >= {"name", "role", "authority", "connected", "lastSeen", "busy"}
        assert m["busy"] is False
    # dan just made an authenticated request: he has been seen.
    dan = next(m for m in mates if m["name"] == "dan")
    assert isinstance(dan["lastSeen"], int) and dan["lastSeen"] > 0
    # No token or secret material leaks through the roster.
    text = str(reply.body)
    for token in broker.team.tokens.values():
        assert token not in text
    assert "sha256:" not in text


async def test_healthz_needs_no_token(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", f"{broker.url}/healthz")
    assert reply.status == 200
    assert reply.body["status"] == "ok"
