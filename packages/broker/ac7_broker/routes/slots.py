"""Credential changes through the API: token rotation and TOTP enrolment (self or director)."""

from __future__ import annotations

from aiohttp import web

from ac7_broker.auth import caller_of, require_self_or_director
from ac7_broker.errors import not_found
from ac7_broker.request_body import json_response, no_body
from ac7_broker.state import STATE_KEY
from ac7_core.config_edit import enroll_totp, rotate_token
from ac7_core.totp import provisioning_uri

routes = web.RouteTableDef()


@routes.post("/slots/{name}/rotate-token")
async def rotate(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    name = request.match_info["name"]
    require_self_or_director(caller, name, "rotate its token")
    if state.slot(name) is None:
        raise not_found(f"no slot named {name!r}")
    await no_body(request, state.settings.max_body)
    token = await state.edit_config(lambda doc, _key: rotate_token(doc, name))
    return json_response({"token": token})


@routes.post("/slots/{name}/totp")
async def enroll(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    caller = caller_of(request)
    name = request.match_info["name"]
    require_self_or_director(caller, name, "enrol its authenticator")
    if state.slot(name) is None:
        raise not_found(f"no slot named {name!r}")
    await no_body(request, state.settings.max_body)
    secret = await state.edit_config(lambda doc, key: enroll_totp(doc, key, name))
    uri = provisioning_uri(secret, f"{name}@{state.config.team.name}", "ac7")
    return json_response({"secret": secret, "uri": uri})
