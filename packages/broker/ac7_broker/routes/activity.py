"""Agents' LLM activity: upload (self only), list and live stream (self or director)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from aiohttp import web

from ac7_broker.auth import caller_of, require_self, require_self_or_director
from ac7_broker.errors import ApiError, bad_request, not_found
from ac7_broker.request_body import check_json_content_type, json_response, parse_json, read_body
from ac7_broker.routes.live import require_upgrade, serve_socket
from ac7_broker.state import STATE_KEY, BrokerState
from ac7_broker.store.activity import IdempotencyConflictError, UploadKey
from ac7_core.activity import ACTIVITY_KINDS, ActivityError, validate_upload

routes = web.RouteTableDef()
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_INT_RE = re.compile(r"[0-9]{1,19}")


def _agent(request: web.Request, state: BrokerState) -> str:
    name = request.match_info["name"]
    if state.slot(name) is None:
        raise not_found(f"no slot named {name!r}")
    return name


def _nonneg(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw) or int(raw) > (1 << 63) - 1:
        raise bad_request(f"{name} must be a non-negative integer")
    return int(raw)


def _parse_upload(data: bytes) -> list[dict[str, Any]]:
    # No float hooks here: validate_upload itself rejects NaN and infinities anywhere in an event.
    body = parse_json(data)
    try:
        return validate_upload(body)
    except ActivityError as exc:
        raise bad_request(str(exc)) from None


_UPLOAD_KEY_RE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


def _idempotency_key(request: web.Request) -> str | None:
    """The optional `Idempotency-Key` header, checked."""
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1 or not _UPLOAD_KEY_RE.match(values[0]):
        raise bad_request("Idempotency-Key must be one value of 16-64 characters from A-Z a-z 0-9 _ -")
    return values[0]


def _read_upload(data: bytes, key: str | None) -> tuple[list[dict[str, Any]], UploadKey | None]:
    """The validated events, and the key bound to a digest of the body it arrived with (up to 16 MiB to hash)."""
    events = _parse_upload(data)
    return events, None if key is None else UploadKey(key, hashlib.sha256(data).digest())


@routes.post("/agents/{name}/activity")
async def upload(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    agent = _agent(request, state)
    require_self(caller, agent, "upload its activity")
    check_json_content_type(request)
    key = _idempotency_key(request)
    data = await read_body(request, state.settings.max_activity_body)
    # Parsing, validating and hashing megabytes of trace JSON takes tens of milliseconds; on the event loop that
    # would delay every message delivery and every other request by as much.
    events, upload_key = await asyncio.to_thread(_read_upload, data, key)
    try:
        result = await state.store.activity.insert_upload(agent, events, upload_key)
    except IdempotencyConflictError as exc:
        raise ApiError(409, "idempotency_conflict", str(exc)) from None
    for row in result.rows:
        state.activity_streams.deliver([agent], row.to_json_text())
    # A replay answers as the first upload did, so a client that lost that answer needs no special case.
    response = json_response({"accepted": result.accepted}, status=201)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@routes.get("/agents/{name}/activity")
async def list_activity(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    agent = _agent(request, state)
    require_self_or_director(caller, agent, "read its activity")
    kind = request.query.get("kind")
    if kind is not None and kind not in ACTIVITY_KINDS:
        raise bad_request(f"kind must be one of {', '.join(ACTIVITY_KINDS)}")
    limit = _nonneg(request, "limit")
    limit = DEFAULT_PAGE if limit is None else max(1, min(MAX_PAGE, limit))
    before = _nonneg(request, "before")
    rows, next_before = await state.store.activity.list(
        agent,
        from_ts=_nonneg(request, "from"),
        to_ts=_nonneg(request, "to"),
        kind=kind,
        limit=limit,
        before_id=before,
    )
    # Rows are spliced as stored text: re-encoding tens of KB per event would dominate this endpoint.
    text = '{"activity":[' + ",".join(r.to_json_text() for r in rows) + '],"nextBefore":'
    text += ("null" if next_before is None else str(next_before)) + "}"
    return web.Response(text=text, content_type="application/json")


@routes.get("/agents/{name}/activity/stream")
async def stream_activity(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    agent = _agent(request, state)
    require_self_or_director(caller, agent, "watch its activity")
    require_upgrade(request)
    return await serve_socket(request, state, state.activity_streams, agent, caller)
