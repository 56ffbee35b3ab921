"""Per-request identity and CSRF enforcement, before any handler runs."""

from __future__ import annotations

import time

from aiohttp import web

from ac7_broker import csrf
from ac7_broker.auth import CALLER_KEY, Caller, bearer_token, cookie_name
from ac7_broker.errors import ApiError, Handler, unauthenticated
from ac7_broker.state import STATE_KEY, BrokerState
from ac7_broker.store.sessions import session_id_hash

# The session id to re-send as a cookie (its expiry slid); a handler sets it to None to suppress that.
REISSUE_KEY: web.RequestKey[str | None] = web.RequestKey("ac7_reissue_session")


def set_session_cookie(response: web.StreamResponse, state: BrokerState, raw_id: str) -> None:
    response.set_cookie(
        cookie_name(state.secure),
        raw_id,
        max_age=state.settings.session_ttl_ms // 1000,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=state.secure,
    )


def clear_session_cookie(response: web.StreamResponse, state: BrokerState) -> None:
    response.del_cookie(cookie_name(state.secure), path="/", secure=state.secure, httponly=True, samesite="Strict")


async def _identify(request: web.Request, state: BrokerState) -> Caller | None:
    token = bearer_token(request)
    if token is not None:
        # Header bytes that are not printable ASCII can be no token of ours (and would not even hash).
        slot = state.slot_for_token(token) if token.isascii() and token.isprintable() else None
        if slot is None:
            raise unauthenticated("invalid or revoked token")
        return Caller(slot, "bearer", credential=f"bearer:{slot.name}/{slot.token_hash}")
    raw_id = request.cookies.get(cookie_name(state.secure))
    if not raw_id or len(raw_id) > 256 or not (raw_id.isascii() and raw_id.isprintable()):
        return None
    found = await state.store.sessions.touch(raw_id, int(time.time() * 1000), state.settings.session_ttl_ms)
    if found is None:
        return None
    slot = state.slot(found[0])
    if slot is None:  # the slot was removed from the team since the session began
        await state.store.sessions.delete(raw_id)
        return None
    request[REISSUE_KEY] = raw_id
    return Caller(
        slot,
        "session",
        credential=f"session:{slot.name}/{session_id_hash(raw_id)}",
        session_id=raw_id,
        expires_at=found[1],
    )


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if csrf.needs_check(request) and csrf.is_cross_site(request):
        raise ApiError(403, "csrf_denied", "cross-site request refused")
    caller = await _identify(request, state)
    if caller is not None:
        request[CALLER_KEY] = caller
        state.presence.seen(caller.name)
    response = await handler(request)
    raw_id = request.get(REISSUE_KEY)
    if raw_id is not None and not response.prepared:
        set_session_cookie(response, state, raw_id)  # the sliding expiry, told to the browser too
    return response
