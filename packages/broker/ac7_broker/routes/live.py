"""WebSocket endpoints: the caller's own message stream and an agent's activity stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from ac7_broker.auth import Caller, caller_of, require_self
from ac7_broker.csrf import is_websocket_upgrade
from ac7_broker.errors import bad_request
from ac7_broker.fanout import Fanout
from ac7_broker.state import STATE_KEY, BrokerState

routes = web.RouteTableDef()

# Clients only ever send control frames; a big text frame is hostile, not data.
_MAX_INBOUND = 4096


async def serve_socket(
    request: web.Request, state: BrokerState, fanout: Fanout, key: str, caller: Caller
) -> web.WebSocketResponse:
    """Upgrade, register under `key`, and keep the peer honest with pings until either side leaves."""
    # autoping off: we answer pings ourselves so that pongs are visible and count as the peer being alive.
    ws = web.WebSocketResponse(autoping=False, max_msg_size=_MAX_INBOUND)
    await ws.prepare(request)
    sub = fanout.attach(key, ws, request, caller.credential)
    last_heard = time.monotonic()
    pinger = asyncio.create_task(_ping(ws, state, lambda: last_heard))
    try:
        async for msg in ws:
            last_heard = time.monotonic()
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        await fanout.detach(sub)
        state.presence.seen(caller.name)
        if not ws.closed:
            await ws.close()
    return ws


async def _ping(ws: web.WebSocketResponse, state: BrokerState, last_heard: Callable[[], float]) -> None:
    settings = state.settings
    while not ws.closed:
        await asyncio.sleep(settings.ping_interval)
        if time.monotonic() - last_heard() > settings.peer_timeout:
            await ws.close(code=1001, message=b"peer silent too long")
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.ping()


def require_upgrade(request: web.Request) -> None:
    if not is_websocket_upgrade(request):
        raise bad_request("this endpoint speaks WebSocket; send an Upgrade request")


@routes.get("/subscribe")
async def subscribe(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE_KEY]
    caller = caller_of(request)  # 401/403 are answered as plain HTTP, before any upgrade
    name = request.query.get("name")
    if not name:
        raise bad_request("name is required (your own slot name)")
    require_self(caller, name, "subscribe to its messages")
    require_upgrade(request)
    return await serve_socket(request, state, state.messages, caller.name, caller)
