"""Edits to a raw config document, for use inside `update_config` (the CLI and the broker share them)."""

from __future__ import annotations

from typing import Any

from ac7_core.config_file import set_token_hash
from ac7_core.config_schema import AUTHORITIES, NAME_RE, Authority, totp_field
from ac7_core.errors import Ac7Error
from ac7_core.sealed import seal
from ac7_core.tokens import mint_token
from ac7_core.totp import new_secret


def find_slot(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for slot in doc["slots"]:
        if slot["name"] == name:
            assert isinstance(slot, dict)
            return slot
    raise Ac7Error(f"no slot named {name!r}")


def rotate_token(doc: dict[str, Any], name: str) -> str:
    """Give slot `name` a new bearer token (returned once); its old token stops matching."""
    token = mint_token()
    set_token_hash(find_slot(doc, name), token)
    return token


def enroll_totp(doc: dict[str, Any], key: bytes, name: str) -> str:
    """Give slot `name` a new TOTP secret (returned in plaintext for enrolment); the old one stops working."""
    slot = find_slot(doc, name)
    secret = new_secret()
    slot["totpSecret"] = seal(key, secret, totp_field(name))
    return secret


def add_slot(
    doc: dict[str, Any],
    name: str,
    role: str,
    authority: Authority,
    *,
    bearer: bool = True,
    role_description: str | None = None,
) -> str | None:
    """Append a slot; returns its bearer token (or None for a human-only slot, which needs a TOTP secret)."""
    if not NAME_RE.match(name):
        raise Ac7Error(f"slot name {name!r} must match ^[A-Za-z0-9._-]{{1,64}}$")
    if authority not in AUTHORITIES:
        raise Ac7Error(f"authority must be one of {', '.join(AUTHORITIES)}")
    if any(s["name"] == name for s in doc["slots"]):
        raise Ac7Error(f"a slot named {name!r} already exists")
    roles = doc.setdefault("roles", {})
    if role not in roles:
        if role_description is None:
            known = ", ".join(sorted(roles)) or "none"
            raise Ac7Error(f"role {role!r} is not defined (known: {known}); pass --role-description to create it")
        roles[role] = {"description": role_description}
    entry: dict[str, Any] = {"name": name, "role": role, "authority": authority}
    token = None
    if bearer:
        token = mint_token()
        set_token_hash(entry, token)
    doc["slots"].append(entry)
    return token


def remove_slot(doc: dict[str, Any], name: str) -> None:
    slot = find_slot(doc, name)
    others = [s for s in doc["slots"] if s is not slot]
    if not any(s.get("authority") == "director" for s in others):
        raise Ac7Error(f"refusing to remove {name!r}: it is the team's last director")
    doc["slots"] = others
