"""Web Push subscriptions (DESIGN §4): the VAPID public key, and registering and removing a browser."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ac7_broker.auth import caller_of
from ac7_broker.errors import ApiError, bad_request, not_found
from ac7_broker.request_body import json_object, json_response, no_body, read_json
from ac7_broker.state import STATE_KEY
from ac7_broker.web_push import MAX_SUBSCRIPTIONS_PER_SLOT
from ac7_broker.web_push_crypto import parse_auth, parse_p256dh
from ac7_broker.web_push_endpoints import check_endpoint

routes = web.RouteTableDef()

_MAX_KEY_CHARS = 128
_MAX_ID_CHARS = 64


@routes.get("/push/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    keys = state.config.web_push
    if keys is None:
        raise ApiError(503, "unavailable", "web push is not configured on this broker")
    return json_response({"publicKey": keys.public_key})


def _key(keys: dict[str, Any], name: str) -> str:
    value = keys.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_KEY_CHARS:
        raise bad_request(f"keys.{name} must be a base64url string")
    return value


@routes.post("/push/subscriptions")
async def subscribe(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    # expirationTime: browsers' PushSubscription.toJSON() includes it, so the UI can post that object as it is.
    body = json_object(await read_json(request, state.settings.max_body), {"endpoint", "keys", "expirationTime"})
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str):
        raise bad_request("endpoint must be a string")
    try:
        check_endpoint(endpoint, allow_insecure=state.settings.push_allow_insecure_endpoints)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    expiration = body.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int | float)):
        raise bad_request("expirationTime must be a number or null")
    keys = json_object(body.get("keys"), {"p256dh", "auth"}) if isinstance(body.get("keys"), dict) else None
    if keys is None:
        raise bad_request("keys must be an object {p256dh, auth}")
    p256dh, auth = _key(keys, "p256dh"), _key(keys, "auth")
    try:
        parse_p256dh(p256dh)
    except ValueError as exc:
        raise bad_request(f"keys.p256dh {exc}") from None
    try:
        parse_auth(auth)
    except ValueError as exc:
        raise bad_request(f"keys.auth {exc}") from None
    sub = await state.store.push.upsert(caller.name, endpoint, p256dh, auth, max_per_slot=MAX_SUBSCRIPTIONS_PER_SLOT)
    return json_response({"id": sub.id}, status=201)


@routes.delete("/push/subscriptions/{id}")
async def unsubscribe(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    await no_body(request, state.settings.max_body)
    sub_id = request.match_info["id"]
    # Someone else's subscription reads exactly like a missing one: ids are not to be probed.
    if len(sub_id) > _MAX_ID_CHARS or not await state.store.push.delete_for_owner(sub_id, caller.name):
        raise not_found("no such push subscription")
    return web.Response(status=204)
