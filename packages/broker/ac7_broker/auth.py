"""Who is calling: a bearer token (wins) or a session cookie; and the per-route authority checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from ac7_broker.errors import forbidden, unauthenticated
from ac7_core.config_schema import Slot

SESSION_COOKIE = "ac7_session"
SECURE_SESSION_COOKIE = "__Host-ac7_session"


@dataclass(frozen=True)
class Caller:
    slot: Slot
    via: Literal["bearer", "session"]
    credential: str  # identifies the credential, so sockets it opened can be closed when it is revoked
    session_id: str | None = None
    expires_at: int | None = None

    @property
    def name(self) -> str:
        return self.slot.name


CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("ac7_caller")


def cookie_name(secure: bool) -> str:
    return SECURE_SESSION_COOKIE if secure else SESSION_COOKIE


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header; any other Authorization header is a 401."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def caller_of(request: web.Request) -> Caller:
    caller: Caller | None = request.get(CALLER_KEY)
    if caller is None:
        raise unauthenticated()
    return caller


def require_self(caller: Caller, name: str, what: str) -> None:
    if caller.name != name:
        raise forbidden(f"only {name!r} itself may {what}")


def require_self_or_director(caller: Caller, name: str, what: str) -> None:
    if caller.name != name and not caller.slot.is_director:
        raise forbidden(f"only {name!r} itself or a director may {what}")


def require_bearer(caller: Caller, what: str) -> None:
    if caller.via != "bearer":
        raise forbidden(f"{what} requires a bearer token")
