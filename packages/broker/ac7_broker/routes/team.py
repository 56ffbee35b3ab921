"""Health, the caller's briefing, and the roster."""

from __future__ import annotations

from aiohttp import web

from ac7_broker.auth import caller_of
from ac7_broker.request_body import json_response
from ac7_broker.state import STATE_KEY
from ac7_core import __version__
from ac7_core.config_schema import Slot, TeamConfig

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


def compose_instructions(config: TeamConfig, slot: Slot) -> str:
    """The system-prompt text an agent in `slot` is given."""
    team = config.team
    role = config.roles.get(slot.role)
    lines = [f"You are {slot.name}, the {slot.role} ({slot.authority}) on team {team.name}, coordinated through ac7."]
    if team.directive:
        lines.append(f"Team directive: {team.directive}")
    if team.brief:
        lines.append(f"Team brief: {team.brief}")
    if role is not None and role.description:
        lines.append(f"Your role: {role.description}")
    if role is not None and role.instructions:
        lines.append(role.instructions)
    mates = [f"- {s.name} ({s.role}, {s.authority})" for s in config.slots if s.name != slot.name]
    if mates:
        lines.append("Teammates:\n" + "\n".join(mates))
    lines.append(
        "Talk with the team through the ac7 tools: roster, send (a direct message), broadcast, and recent "
        "(message history). Messages from teammates arrive as channel notifications."
    )
    return "\n\n".join(lines)


@routes.get("/briefing")
async def briefing(request: web.Request) -> web.Response:
    caller = caller_of(request)
    config = request.app[STATE_KEY].config
    role = config.roles.get(caller.slot.role)
    return json_response(
        {
            "name": caller.name,
            "role": {"name": caller.slot.role, "description": role.description if role else ""},
            "authority": caller.slot.authority,
            "instructions": compose_instructions(config, caller.slot),
            "team": {"name": config.team.name, "directive": config.team.directive, "brief": config.team.brief},
            "teammates": [
                {"name": s.name, "role": s.role, "authority": s.authority}
                for s in config.slots
                if s.name != caller.name
            ],
        }
    )


@routes.get("/roster")
async def roster(request: web.Request) -> web.Response:
    caller_of(request)
    state = request.app[STATE_KEY]
    presence = state.presence
    return json_response(
        {
            "teammates": [
                {
                    "name": s.name,
                    "role": s.role,
                    "authority": s.authority,
                    "connected": presence.connected(s.name),
                    "lastSeen": presence.last_seen(s.name),
                    "busy": presence.is_busy(s.name),
                }
                for s in state.config.slots
            ]
        }
    )
