"""TOTP login, its replay guard and lockouts, and the browser session it creates (DESIGN §4)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ac7_auth_helpers import (
    SESSION_MAX_AGE,
    Reply,
    assert_error,
    bare_session,
    call,
    code_for,
    cookie_header,
    db_bytes,
    eventually,
    login,
    session_cookie,
    sha256_hex,
    wrong_code,
)
from broker_harness import Running, StartBroker, Team
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ac7_broker.routes import session as session_routes
from ac7_broker.routes.session import client_key
from ac7_core.config_edit import add_slot, remove_slot
from ac7_core.config_file import update_config

WEEK_MS = SESSION_MAX_AGE * 1000


def _assert_invalid_code(reply: Reply) -> None:
    assert_error(reply, 401, "invalid_code")
    assert not reply.set_cookies


def _assert_locked(reply: Reply) -> None:
    assert_error(reply, 429, "rate_limited")
    retry_after = reply.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), retry_after
    assert 0 < int(retry_after) <= 900
    assert not reply.set_cookies


async def _edit(team: Team, edit: Any) -> Any:
    _loaded, result = await asyncio.to_thread(update_config, team.config_path, edit)
    return result


# --- a successful login ------------------------------------------------------------------------------------------


async def test_login_returns_session_and_cookie(broker: Running, http: aiohttp.ClientSession) -> None:
    before_ms = int(time.time() * 1000)
    reply = await login(http, broker.url, code_for(broker.team.totp["alice"]), "alice")
    after_ms = int(time.time() * 1000)
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"slot", "role", "authority", "expiresAt"}
    assert reply.body["slot"] == "alice"
    assert reply.body["role"] == "lead"
    assert reply.body["authority"] == "director"
    expires = reply.body["expiresAt"]
    assert isinstance(expires, int)
    assert before_ms + WEEK_MS <= expires <= after_ms + WEEK_MS  # epoch ms, seven days out

    value, attrs = session_cookie(reply, "ac7_session")
    assert len(value) >= 32  # an unguessable id
    assert "httponly" in attrs
    assert attrs.get("samesite", "").lower() == "strict"
    assert attrs.get("path") == "/"
    assert attrs.get("max-age") == str(SESSION_MAX_AGE)
    assert "secure" not in attrs  # plain HTTP: a Secure cookie would never be sent back
    assert "domain" not in attrs  # host-only
    assert not any(h.startswith("__Host-") for h in reply.set_cookies)


async def test_session_cookie_authenticates(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await login(http, broker.url, code_for(broker.team.totp["mike"]), "mike")
    assert reply.status == 200
    value, _ = session_cookie(reply)
    # Through the client's jar, as a browser would.
    who = await call(http, "GET", f"{broker.url}/session")
    assert who.status == 200, who.body
    assert who.body["slot"] == "mike"
    assert who.body["authority"] == "manager"
    assert isinstance(who.body["expiresAt"], int)
    # And by the cookie value alone from a fresh client.
    async with bare_session() as bare:
        who = await call(bare, "GET", f"{broker.url}/session", headers=cookie_header(value))
        assert who.status == 200
        assert who.body["slot"] == "mike"
        roster = await call(bare, "GET", f"{broker.url}/roster", headers=cookie_header(value))
        assert roster.status == 200
        bad = await call(bare, "GET", f"{broker.url}/session", headers=cookie_header(value[:-2] + "xx"))
        assert_error(bad, 401, "unauthenticated")


async def test_human_only_slot_logs_in(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await login(http, broker.url, code_for(broker.team.totp["hana"]), "hana")
    assert reply.status == 200
    assert reply.body["slot"] == "hana"
    assert reply.body["authority"] == "individual-contributor"


async def test_codeless_login_finds_the_slot(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await login(http, broker.url, code_for(broker.team.totp["ivy"]))
    assert reply.status == 200, reply.body
    assert reply.body["slot"] == "ivy"
    assert reply.body["role"] == "engineer"
    session_cookie(reply)
    who = await call(http, "GET", f"{broker.url}/session")
    assert who.body["slot"] == "ivy"
    async with bare_session() as other:
        reply = await login(other, broker.url, code_for(broker.team.totp["hana"]))
        assert reply.status == 200
        assert reply.body["slot"] == "hana"


async def test_code_of_the_wrong_slot_is_refused(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await login(http, broker.url, code_for(broker.team.totp["ivy"]), "alice")
    _assert_invalid_code(reply)


# --- replay ------------------------------------------------------------------------------------------------------


async def test_replayed_code_is_refused(broker: Running, http: aiohttp.ClientSession) -> None:
    code = code_for(broker.team.totp["alice"])
    assert (await login(http, broker.url, code, "alice")).status == 200
    async with bare_session() as attacker:
        _assert_invalid_code(await login(attacker, broker.url, code, "alice"))
        _assert_invalid_code(await login(attacker, broker.url, code))  # codeless replay too


async def test_replay_is_refused_across_a_restart(start: StartBroker, http: aiohttp.ClientSession) -> None:
    first = await start()
    code = code_for(first.team.totp["ivy"])
    assert (await login(http, first.url, code, "ivy")).status == 200
    await first.broker.stop()
    second = await start()
    _assert_invalid_code(await login(http, second.url, code, "ivy"))


async def test_older_code_after_a_newer_one_is_refused(broker: Running, http: aiohttp.ClientSession) -> None:
    secret = broker.team.totp["alice"]
    newer = code_for(secret, +1)  # the next step's code: inside the ±1 window
    older, oldest = code_for(secret, 0), code_for(secret, -1)
    assert (await login(http, broker.url, newer, "alice")).status == 200
    async with bare_session() as bare:
        _assert_invalid_code(await login(bare, broker.url, older, "alice"))
        _assert_invalid_code(await login(bare, broker.url, oldest, "alice"))


async def test_codes_outside_the_window_are_refused(broker: Running, http: aiohttp.ClientSession) -> None:
    secret = broker.team.totp["ivy"]
    for offset in (-3, +3, +10):
        _assert_invalid_code(await login(http, broker.url, code_for(secret, offset), "ivy"))


async def test_concurrent_logins_with_one_code_yield_one_session(broker: Running) -> None:
    code = code_for(broker.team.totp["ivy"])

    async def attempt() -> Reply:
        async with bare_session() as s:
            return await login(s, broker.url, code, "ivy")

    replies = await asyncio.gather(*(attempt() for _ in range(10)))
    statuses = [r.status for r in replies]
    assert statuses.count(200) == 1, statuses
    for r in replies:
        if r.status == 401:
            _assert_invalid_code(r)
        elif r.status != 200:
            _assert_locked(r)  # the losers are failures, so the slot may lock part-way through the burst
    assert len({session_cookie(r)[0] for r in replies if r.status == 200}) == 1


async def test_concurrent_codeless_logins_with_one_code_yield_one_session(broker: Running) -> None:
    code = code_for(broker.team.totp["hana"])

    async def attempt() -> Reply:
        async with bare_session() as s:
            return await login(s, broker.url, code)

    replies = await asyncio.gather(*(attempt() for _ in range(8)))
    statuses = [r.status for r in replies]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses


async def test_concurrent_logins_across_two_brokers_share_one_replay_guard(start: StartBroker) -> None:
    """The guard is atomic in the database, not just in one process: two brokers on one team store agree."""
    first, second = await start(), await start()
    code = code_for(first.team.totp["mike"])

    async def attempt(url: str) -> Reply:
        async with bare_session() as s:
            return await login(s, url, code, "mike")

    replies = await asyncio.gather(*(attempt(b.url) for _ in range(4) for b in (first, second)))
    statuses = [r.status for r in replies]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses


# --- failures all look alike ---------------------------------------------------------------------------------------


async def test_wrong_unknown_and_unenrolled_look_the_same(broker: Running, http: aiohttp.ClientSession) -> None:
    team = broker.team
    replies = [
        await login(http, broker.url, wrong_code(team.totp["alice"]), "alice"),  # wrong code
        await login(http, broker.url, code_for(team.totp["alice"]), "nobody"),  # unknown slot
        await login(http, broker.url, code_for(team.totp["mike"]), "dan"),  # no TOTP enrolled
        await login(http, broker.url, wrong_code(team.totp["ivy"])),  # codeless, matches no one
    ]
    for reply in replies:
        _assert_invalid_code(reply)
    bodies = {str(r.body) for r in replies}
    assert len(bodies) == 1, bodies
    assert len({r.status for r in replies}) == 1


async def test_malformed_login_is_400(broker: Running, http: aiohttp.ClientSession) -> None:
    code = code_for(broker.team.totp["alice"])
    bodies: list[Any] = [
        {"code": "12345", "slot": "alice"},
        {"code": "1234567", "slot": "alice"},
        {"code": 123456, "slot": "alice"},
        {"code": int(code), "slot": "alice"},
        {"slot": "alice"},
        {},
        {"code": None, "slot": "alice"},
        {"code": "12345a", "slot": "alice"},
        {"code": "", "slot": "alice"},
        {"code": code, "slot": 7},
        {"code": code, "slot": "../alice"},
        {"code": code, "slot": ""},
        {"code": code, "slot": "alice", "extra": True},
        [code],
        code,
    ]
    for body in bodies:
        reply = await call(http, "POST", f"{broker.url}/session/totp", json=body)
        assert_error(reply, 400, "bad_request")
        assert not reply.set_cookies
    reply = await call(
        http, "POST", f"{broker.url}/session/totp", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, "bad_request")
    # None of those was a login: the real code still works.
    assert (await login(http, broker.url, code, "alice")).status == 200


# --- lockout -----------------------------------------------------------------------------------------------------


async def test_slot_lockout_after_five_failures(broker: Running, http: aiohttp.ClientSession) -> None:
    team = broker.team
    bad = wrong_code(team.totp["ivy"])
    for _ in range(5):
        _assert_invalid_code(await login(http, broker.url, bad, "ivy"))
    # Locked: even the right code is refused, and the answer says when to come back.
    _assert_locked(await login(http, broker.url, code_for(team.totp["ivy"]), "ivy"))
    _assert_locked(await login(http, broker.url, bad, "ivy"))
    # Another slot is unaffected.
    ok = await login(http, broker.url, code_for(team.totp["mike"]), "mike")
    assert ok.status == 200, ok.body


async def test_unknown_slot_locks_like_a_known_one(broker: Running, http: aiohttp.ClientSession) -> None:
    # Otherwise the lockout itself would tell which slot names exist.
    for name in ("alice", "nobody"):
        for _ in range(5):
            _assert_invalid_code(await login(http, broker.url, wrong_code(broker.team.totp["alice"]), name))
    _assert_locked(await login(http, broker.url, "000000", "alice"))
    _assert_locked(await login(http, broker.url, "000000", "nobody"))


async def test_codeless_lockout_after_ten_failures(broker: Running, http: aiohttp.ClientSession) -> None:
    team = broker.team
    for _ in range(10):
        _assert_invalid_code(await login(http, broker.url, wrong_code(team.totp["alice"])))
    _assert_locked(await login(http, broker.url, code_for(team.totp["ivy"])))
    # Logins naming their slot are counted separately.
    ok = await login(http, broker.url, code_for(team.totp["alice"]), "alice")
    assert ok.status == 200, ok.body


async def test_per_ip_lockout(start: StartBroker, http: aiohttp.ClientSession) -> None:
    broker = await start(login_ip_failures=3, login_slot_failures=100)
    for name in ("x1", "x2", "x3"):
        _assert_invalid_code(await login(http, broker.url, "000000", name))
    # Three failures from this address, each against a different slot: the address is locked for everyone.
    _assert_locked(await login(http, broker.url, code_for(broker.team.totp["alice"]), "alice"))
    _assert_locked(await login(http, broker.url, code_for(broker.team.totp["alice"])))


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # same /64: same counter
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next /64: another counter
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:198.51.100.9", "198.51.100.9"),  # IPv4-mapped counts as the IPv4 address
        (None, "unknown"),
        ("not an address", "not an address"),
    ],
)
def test_the_per_client_counter_is_per_ipv4_address_or_ipv6_64(remote: str | None, key: str) -> None:
    assert client_key(remote) == key


async def test_the_login_route_counts_by_client_key(
    start: StartBroker, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def spy(remote: str | None) -> str:
        seen.append(remote)
        return "2001:db8::/64"

    monkeypatch.setattr(session_routes, "client_key", spy)
    broker = await start(login_ip_failures=2, login_slot_failures=100)
    for name in ("x1", "x2"):
        _assert_invalid_code(await login(http, broker.url, "000000", name))
    assert seen == ["127.0.0.1", "127.0.0.1"]
    assert broker.broker.state.ip_failures.retry_after("2001:db8::/64") is not None
    assert broker.broker.state.ip_failures.retry_after("127.0.0.1") is None


async def test_lockout_counters_are_bounded(start: StartBroker, http: aiohttp.ClientSession) -> None:
    broker = await start(login_tracked_keys=50, login_ip_failures=10_000)
    state = broker.broker.state
    for i in range(200):
        _assert_invalid_code(await login(http, broker.url, "000000", f"spray-{i}"))
    assert len(state.slot_failures) <= 50


async def test_success_clears_the_slot_counter(broker: Running, http: aiohttp.ClientSession) -> None:
    secret = broker.team.totp["alice"]
    bad = wrong_code(secret)
    for _ in range(4):
        _assert_invalid_code(await login(http, broker.url, bad, "alice"))
    assert (await login(http, broker.url, code_for(secret, 0), "alice")).status == 200
    for _ in range(4):
        _assert_invalid_code(await login(http, broker.url, bad, "alice"))
    # 8 failures in the window, but never 5 in a row without a success: not locked.
    reply = await login(http, broker.url, code_for(secret, +1), "alice")
    assert reply.status == 200, reply.body


async def test_concurrent_failures_cannot_exceed_the_lockout(broker: Running) -> None:
    """A burst of parallel guesses must not get more than five codes checked for one slot."""
    bad = wrong_code(broker.team.totp["ivy"])

    async def attempt() -> Reply:
        async with bare_session() as s:
            return await login(s, broker.url, bad, "ivy")

    replies = await asyncio.gather(*(attempt() for _ in range(30)))
    statuses = [r.status for r in replies]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, f"{statuses.count(401)} guesses were checked; the limit is 5"


async def test_spraying_names_does_not_unlock_a_slot(start: StartBroker, http: aiohttp.ClientSession) -> None:
    """Bounded memory must not let an attacker evict a locked slot's counter by trying many other names."""
    broker = await start(login_tracked_keys=50, login_ip_failures=10_000)
    secret = broker.team.totp["ivy"]
    for _ in range(5):
        _assert_invalid_code(await login(http, broker.url, wrong_code(secret), "ivy"))
    _assert_locked(await login(http, broker.url, "000000", "ivy"))
    for i in range(60):
        _assert_invalid_code(await login(http, broker.url, "000000", f"spray-{i}"))
    # Still within the 15-minute window: ivy must still be locked.
    _assert_locked(await login(http, broker.url, code_for(secret), "ivy"))


# --- the session ---------------------------------------------------------------------------------------------------


async def test_session_slides_and_is_reissued(broker: Running) -> None:
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp["alice"]), "alice")
        value, _ = session_cookie(reply)
        first_expiry = reply.body["expiresAt"]
        await asyncio.sleep(0.05)
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))
        assert who.status == 200
        assert who.body["expiresAt"] > first_expiry  # the expiry moved on
        reissued, attrs = session_cookie(who)
        assert reissued == value  # same session, fresh cookie lifetime
        assert attrs.get("max-age") == str(SESSION_MAX_AGE)
        assert "httponly" in attrs
        assert attrs.get("samesite", "").lower() == "strict"
        assert attrs.get("path") == "/"
        # Any cookie-authenticated endpoint slides it, not only /session.
        roster = await call(s, "GET", f"{broker.url}/roster", headers=cookie_header(value))
        assert session_cookie(roster)[0] == value


async def test_idle_session_expires(start: StartBroker) -> None:
    broker = await start(session_ttl_ms=1000)
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp["alice"]), "alice")
        value, attrs = session_cookie(reply)
        assert attrs.get("max-age") == "1"  # the cookie's lifetime is the session's
        await asyncio.sleep(1.5)  # longer than the TTL with no request to slide it
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))
        assert_error(who, 401, "unauthenticated")
        assert not who.set_cookies


async def test_logout_needs_a_session(broker: Running, http: aiohttp.ClientSession) -> None:
    assert_error(await call(http, "POST", f"{broker.url}/session/logout"), 401, "unauthenticated")


async def test_session_id_is_stored_hashed(broker: Running, http: aiohttp.ClientSession) -> None:
    reply = await login(http, broker.url, code_for(broker.team.totp["hana"]), "hana")
    value, _ = session_cookie(reply)
    on_disk = db_bytes(broker.team.config_path.parent)
    assert sha256_hex(value).encode() in on_disk  # we are looking at the right bytes
    assert value.encode() not in on_disk


async def test_logout(broker: Running) -> None:
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp["ivy"]), "ivy")
        value, _ = session_cookie(reply)
        out = await call(s, "POST", f"{broker.url}/session/logout", headers=cookie_header(value))
        assert out.status == 204
        cleared, attrs = session_cookie(out)
        assert cleared == ""
        assert attrs.get("max-age") == "0" or "1970" in attrs.get("expires", "")
        assert attrs.get("path") == "/"
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))
        assert_error(who, 401, "unauthenticated")
        assert not who.set_cookies
        # The row is gone, not merely expired in the browser.
        assert not await _row_exists(broker, value)


async def _row_exists(broker: Running, value: str) -> bool:
    return await broker.broker.state.store.sessions.touch(value, int(time.time() * 1000), 1000) is not None


async def test_logout_only_ends_that_session(broker: Running) -> None:
    secret = broker.team.totp["alice"]
    async with bare_session() as s:
        one, _ = session_cookie(await login(s, broker.url, code_for(secret, 0), "alice"))
        two, _ = session_cookie(await login(s, broker.url, code_for(secret, 1), "alice"))
        assert one != two
        assert (await call(s, "POST", f"{broker.url}/session/logout", headers=cookie_header(one))).status == 204
        assert (await call(s, "GET", f"{broker.url}/session", headers=cookie_header(one))).status == 401
        assert (await call(s, "GET", f"{broker.url}/session", headers=cookie_header(two))).status == 200


async def test_logout_closes_the_sessions_socket(broker: Running) -> None:
    async with bare_session() as s:
        value, _ = session_cookie(await login(s, broker.url, code_for(broker.team.totp["ivy"]), "ivy"))
        ws = await s.ws_connect(f"{broker.url}/subscribe?name=ivy", headers=cookie_header(value))
        try:
            assert (await call(s, "POST", f"{broker.url}/session/logout", headers=cookie_header(value))).status == 204
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        finally:
            await ws.close()


async def test_bearer_wins_over_the_cookie(broker: Running) -> None:
    async with bare_session() as s:
        value, _ = session_cookie(await login(s, broker.url, code_for(broker.team.totp["alice"]), "alice"))
        both = {**cookie_header(value), **broker.auth("ivy")}
        who = await call(s, "GET", f"{broker.url}/session", headers=both)
        assert who.status == 200
        assert who.body["slot"] == "ivy"
        assert not who.set_cookies  # the cookie was not used, so it is not slid
        bad = {**cookie_header(value), "Authorization": "Bearer ac7_" + "A" * 43}
        assert_error(await call(s, "GET", f"{broker.url}/session", headers=bad), 401, "unauthenticated")


async def test_session_of_a_removed_slot_is_refused(broker: Running) -> None:
    team = broker.team
    async with bare_session() as s:
        value, _ = session_cookie(await login(s, broker.url, code_for(team.totp["ivy"]), "ivy"))
        assert (await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))).status == 200
        await _edit(team, lambda doc, _key: remove_slot(doc, "ivy"))

        async def refused() -> bool:
            return (await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))).status == 401

        assert await eventually(refused)


async def test_session_of_a_removed_slot_stays_dead_when_the_name_returns(broker: Running) -> None:
    """Removing a slot ends its sessions: a new slot later given the same name must not inherit them."""
    team = broker.team
    state = broker.broker.state
    async with bare_session() as s:
        value, _ = session_cookie(await login(s, broker.url, code_for(team.totp["ivy"]), "ivy"))
        await _edit(team, lambda doc, _key: remove_slot(doc, "ivy"))

        async def gone() -> bool:
            return state.slot("ivy") is None

        assert await eventually(gone)
        await _edit(team, lambda doc, _key: add_slot(doc, "ivy", "engineer", "individual-contributor"))

        async def back() -> bool:
            return state.slot("ivy") is not None

        assert await eventually(back)
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value))
        assert_error(who, 401, "unauthenticated")


# --- HTTPS ---------------------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ac7 test broker")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "broker.crt", directory / "broker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _set_https(team: Team, cert: Path, key: Path) -> None:
    def edit(doc: dict[str, Any], _key: bytes) -> None:
        doc["https"] = {"mode": "custom", "certPath": str(cert), "keyPath": str(key)}

    update_config(team.config_path, edit)


async def test_https_session_cookie_is_host_prefixed_and_secure(team: Team, start: StartBroker) -> None:
    cert, key = _self_signed(team.config_path.parent)
    _set_https(team, cert, key)
    broker = await start()
    assert broker.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    async with bare_session(connector=aiohttp.TCPConnector(ssl=context)) as s:
        reply = await login(s, broker.url, code_for(team.totp["alice"]), "alice")
        assert reply.status == 200, reply.body
        value, attrs = session_cookie(reply, "__Host-ac7_session")
        assert "secure" in attrs
        assert "httponly" in attrs
        assert attrs.get("samesite", "").lower() == "strict"
        assert attrs.get("path") == "/"
        assert "domain" not in attrs  # __Host- forbids it
        assert attrs.get("max-age") == str(SESSION_MAX_AGE)
        assert not any(h.startswith("ac7_session=") for h in reply.set_cookies)
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value, "__Host-ac7_session"))
        assert who.status == 200
        assert who.body["slot"] == "alice"
        # The plain-HTTP name is not honoured under HTTPS.
        plain = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(value, "ac7_session"))
        assert plain.status == 401
        # Same-origin checks use the https origin.
        same = await call(
            s,
            "POST",
            f"{broker.url}/push",
            json={"body": "hi"},
            headers={**cookie_header(value, "__Host-ac7_session"), "Origin": broker.url},
        )
        assert same.status == 201, same.body
        cross = await call(
            s,
            "POST",
            f"{broker.url}/push",
            json={"body": "hi"},
            headers={**cookie_header(value, "__Host-ac7_session"), "Origin": broker.url.replace("https", "http")},
        )
        assert_error(cross, 403, "csrf_denied")


async def test_cookie_follows_the_transport_not_a_reloaded_https_setting(
    broker: Running, http: aiohttp.ClientSession
) -> None:
    """Enabling https in the config of a running plain-HTTP broker changes nothing until a restart.

    The broker keeps listening without TLS, so its cookie must stay `ac7_session` without `Secure` (a browser drops a
    Secure cookie set over http), and sessions begun before the edit must keep working.
    """
    team = broker.team
    state = broker.broker.state
    async with bare_session() as s:
        before, _ = session_cookie(await login(s, broker.url, code_for(team.totp["alice"]), "alice"))
        cert, key = _self_signed(team.config_path.parent)
        await asyncio.to_thread(_set_https, team, cert, key)

        async def reloaded() -> bool:
            return state.config.https.mode == "custom"

        assert await eventually(reloaded)
        assert broker.url.startswith("http://")
        reply = await login(s, broker.url, code_for(team.totp["ivy"]), "ivy")
        assert reply.status == 200
        _value, attrs = session_cookie(reply, "ac7_session")
        assert "secure" not in attrs
        who = await call(s, "GET", f"{broker.url}/session", headers=cookie_header(before))
        assert who.status == 200, who.body
