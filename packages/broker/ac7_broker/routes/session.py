"""TOTP login, the current session, and logout."""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from ac7_broker.auth import Caller, caller_of
from ac7_broker.errors import ApiError, bad_request, rate_limited
from ac7_broker.middleware import REISSUE_KEY, clear_session_cookie, set_session_cookie
from ac7_broker.request_body import json_object, json_response, no_body, read_json
from ac7_broker.state import STATE_KEY, BrokerState
from ac7_core.config_schema import NAME_RE, Slot
from ac7_core.totp import match_step

routes = web.RouteTableDef()
_CODE_RE = re.compile(r"^[0-9]{6}\Z")
_CODELESS = "*"


def _invalid_code() -> ApiError:
    # One answer for wrong, replayed, unknown-slot and unenrolled alike: nothing to enumerate.
    return ApiError(401, "invalid_code", "invalid code")


def _session_json(slot: Slot, expires_at: int | None) -> dict[str, object]:
    return {"slot": slot.name, "role": slot.role, "authority": slot.authority, "expiresAt": expires_at}


def client_key(remote: str | None) -> str:
    """What the per-client login lockout counts by: the IPv4 address, or the IPv6 /64.

    One IPv6 host is usually given a whole /64 and can send from any address in it, so counting single IPv6
    addresses would let it step around the limit with every attempt. An IPv4-mapped address counts as IPv4.
    """
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])  # no zone id: fe80::1%eth0
    except ValueError:
        return remote or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _check_locks(state: BrokerState, slot_name: str | None, ip: str) -> None:
    waits = [state.ip_failures.retry_after(ip)]
    waits.append(
        state.slot_failures.retry_after(slot_name) if slot_name else state.codeless_failures.retry_after(_CODELESS)
    )
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise rate_limited(f"too many failed logins; try again in {int(wait) + 1} s", wait)


async def _accept(state: BrokerState, slot: Slot, code: str) -> bool:
    assert slot.totp_secret is not None
    last = await state.store.totp.last_step(slot.name)
    step = match_step(slot.totp_secret, code, after_step=last)
    # The store's conditional update is the real replay guard: of two requests racing with one code, one wins.
    return step is not None and await state.store.totp.accept_step(slot.name, step)


@routes.post("/session/totp")
async def login(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = json_object(await read_json(request, state.settings.max_body), {"code", "slot"})
    code, slot_name = body.get("code"), body.get("slot")
    if not isinstance(code, str) or not _CODE_RE.match(code):
        raise bad_request("code must be a string of 6 digits")
    if slot_name is not None and (not isinstance(slot_name, str) or not NAME_RE.match(slot_name)):
        raise bad_request("slot must be a slot name")
    ip = client_key(request.remote)
    async with state.login_lock:
        _check_locks(state, slot_name, ip)
        enrolled = [s for s in state.config.slots if s.totp_secret is not None]
        if slot_name:
            candidates = [s for s in enrolled if s.name == slot_name]
        else:  # a codeless login must not be a way around a slot's own lockout
            candidates = [s for s in enrolled if state.slot_failures.retry_after(s.name) is None]
        winner = None
        for slot in candidates:
            if await _accept(state, slot, code):
                winner = slot
                break
        if winner is None:
            state.ip_failures.fail(ip)
            if slot_name:
                state.slot_failures.fail(slot_name)
            else:
                state.codeless_failures.fail(_CODELESS)
            raise _invalid_code()
        state.slot_failures.clear(winner.name)
    raw_id, expires_at = await state.store.sessions.create(
        winner.name, state.settings.session_ttl_ms, request.headers.get("User-Agent", "")[:256]
    )
    response = json_response(_session_json(winner, expires_at))
    set_session_cookie(response, state, raw_id)
    return response


@routes.get("/session")
async def whoami(request: web.Request) -> web.Response:
    caller: Caller = caller_of(request)
    return json_response(_session_json(caller.slot, caller.expires_at))


@routes.post("/session/logout")
async def logout(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    await no_body(request, state.settings.max_body)
    response = web.Response(status=204)
    if caller.session_id is not None:
        await state.store.sessions.delete(caller.session_id)
        state.messages.close_where(4001, "logged out", lambda sub: sub.credential != caller.credential)
        clear_session_cookie(response, state)
        request[REISSUE_KEY] = None
    return response
