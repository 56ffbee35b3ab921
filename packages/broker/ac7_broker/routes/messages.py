"""Sending messages, reading history, and reporting busy."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ac7_broker.auth import caller_of, require_bearer
from ac7_broker.errors import bad_request, not_found, rate_limited
from ac7_broker.request_body import json_object, json_response, read_json
from ac7_broker.state import STATE_KEY
from ac7_broker.store.cursor import Cursor
from ac7_core.config_schema import NAME_RE

routes = web.RouteTableDef()

LEVELS = ("debug", "info", "notice", "warning", "error", "critical")
MAX_BODY_CHARS = 65536
MAX_TITLE_CHARS = 256
MAX_DATA_BYTES = 64 * 1024
MAX_HISTORY_PAGE = 1000
# JSON escapes can produce lone surrogates, which no UTF-8 store or client can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: Any, field: str, *, max_chars: int, min_chars: int = 0) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string")
    if not min_chars <= len(value) <= max_chars:
        raise bad_request(f"{field} must be {min_chars}..{max_chars} characters, got {len(value)}")
    if _SURROGATE.search(value):
        raise bad_request(f"{field} contains invalid unicode (a lone surrogate)")
    return value


def _data(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("data must be an object")
    encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    if len(encoded.encode("utf-8", "surrogatepass")) > MAX_DATA_BYTES:
        raise bad_request(f"data must serialise to at most {MAX_DATA_BYTES} bytes")
    if _SURROGATE.search(encoded):
        raise bad_request("data contains invalid unicode (a lone surrogate)")
    return value


@routes.post("/push")
async def push(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    body = json_object(await read_json(request, state.settings.max_body), {"to", "title", "body", "level", "data"})
    to = body.get("to")
    if to is not None:
        if not isinstance(to, str) or not NAME_RE.match(to):
            raise bad_request("to must be a slot name or null")
        if state.slot(to) is None:
            raise not_found(f"no slot named {to!r}")
    title = None if body.get("title") is None else _text(body["title"], "title", max_chars=MAX_TITLE_CHARS)
    text = _text(body.get("body"), "body", max_chars=MAX_BODY_CHARS, min_chars=1)
    level = body.get("level", "info")
    if level not in LEVELS:
        raise bad_request(f"level must be one of {', '.join(LEVELS)}")
    data = _data(body.get("data"))

    message = await state.store.messages.append(caller.name, to, title, text, level, data)
    # Stored first, then delivered: a crash after the 201 can never lose a message a client saw accepted.
    wire = message.to_json()
    frame = json.dumps(wire)
    recipients = [s.name for s in state.config.slots] if to is None else sorted({to, caller.name})
    live = state.messages.deliver(recipients, frame)
    state.web_push.notify(message, recipients, lambda name: state.messages.count(name) > 0)
    return json_response({"message": wire, "delivery": {"live": live, "targets": len(recipients)}}, status=201)


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,19}", raw):
        raise bad_request(f"{name} must be an integer")
    return int(raw)


@routes.get("/history")
async def history(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    wait = state.history_limiter.take(caller.name)
    if wait is not None:
        raise rate_limited("history requested too fast", wait)
    with_slot = request.query.get("with")
    if with_slot is not None and not NAME_RE.match(with_slot):
        raise bad_request("with must be a slot name")
    limit = _query_int(request, "limit")
    if limit is None:
        limit = 100
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise bad_request(f"limit must be between 1 and {MAX_HISTORY_PAGE}")
    before = None
    if "before" in request.query:
        try:
            before = Cursor.parse(request.query["before"])
        except ValueError:
            raise bad_request("before must be a cursor from nextBefore or a non-negative epoch-ms time") from None
    messages, cursor = await state.store.messages.history(caller.name, with_slot=with_slot, limit=limit, before=before)
    return json_response(
        {"messages": [m.to_json() for m in messages], "nextBefore": None if cursor is None else cursor.encode()}
    )


@routes.post("/presence/busy")
async def busy(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    require_bearer(caller, "reporting busy")
    body = json_object(await read_json(request, state.settings.max_body), {"busy"})
    if not isinstance(body.get("busy"), bool):
        raise bad_request("busy must be true or false")
    state.presence.set_busy(caller.name, body["busy"])
    return web.Response(status=204)
