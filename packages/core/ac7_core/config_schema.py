"""The team config's schema: validation of the raw JSON document with precise errors, and its typed view.

Validation works on the raw document (plaintext or sealed secrets alike) and reports the first problem as a JSON
path plus a reason. Unknown keys are allowed everywhere and survive rewrites untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ac7_core.errors import Ac7Error
from ac7_core.sealed import SEALED_RE
from ac7_core.tokens import TOKEN_HASH_RE
from ac7_core.totp import SECRET_RE

Authority = Literal["director", "manager", "individual-contributor"]
AUTHORITIES: tuple[Authority, ...] = ("director", "manager", "individual-contributor")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
MIN_PLAINTEXT_TOKEN = 16
MIN_TOTP_SECRET_BYTES = 16
HTTPS_MODES = ("off", "custom")
DEFAULT_VAPID_SUBJECT = "mailto:admin@ac7.local"


class ConfigError(Ac7Error):
    """One problem with a config document, located by JSON path."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class Team:
    name: str
    directive: str
    brief: str


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    instructions: str


@dataclass(frozen=True)
class Slot:
    name: str
    role: str
    authority: Authority
    token_hash: str | None
    totp_secret: str | None = field(default=None, repr=False)  # plaintext base32, decrypted at load

    @property
    def is_director(self) -> bool:
        return self.authority == "director"


@dataclass(frozen=True)
class WebPush:
    public_key: str
    private_key: str = field(repr=False)  # plaintext, decrypted at load
    subject: str = DEFAULT_VAPID_SUBJECT


@dataclass(frozen=True)
class Https:
    mode: Literal["off", "custom"] = "off"
    cert_path: str | None = None
    key_path: str | None = None


@dataclass(frozen=True)
class TeamConfig:
    team: Team
    roles: Mapping[str, Role]
    slots: tuple[Slot, ...]
    web_push: WebPush | None
    https: Https

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)


def _q(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


class _Checker:
    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be an object, got {_type_name(value)}")
        return cast(dict[str, Any], value)

    def string(
        self,
        parent: dict[str, Any],
        key: str,
        where: str,
        *,
        required: bool = False,
        max_len: int = 4096,
        min_len: int = 0,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str | None:
        path = f"{where}.{key}"
        if key not in parent:
            if required:
                raise ConfigError(path, "is required")
            return None
        value = parent[key]
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_type_name(value)}")
        if len(value) < min_len:
            raise ConfigError(path, "must not be empty" if min_len == 1 else f"must be at least {min_len} characters")
        if len(value) > max_len:
            raise ConfigError(path, f"must be at most {max_len} characters, got {len(value)}")
        if pattern is not None and not pattern.match(value):
            raise ConfigError(path, hint or f"has an invalid format: {_q(value)}")
        return value

    def integer(self, parent: dict[str, Any], key: str, where: str, lo: int, hi: int) -> int:
        path = f"{where}.{key}"
        value = parent.get(key)
        if key not in parent:
            raise ConfigError(path, "is required")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, f"must be an integer, got {_type_name(value)}")
        if not lo <= value <= hi:
            raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
        return value


def _secret_field(
    c: _Checker, parent: dict[str, Any], key: str, where: str, plain: re.Pattern[str], hint: str
) -> str | None:
    value = c.string(parent, key, where, max_len=1024, min_len=1)
    if value is not None and not (SEALED_RE.match(value) or plain.match(value)):
        raise ConfigError(f"{where}.{key}", f"must be {hint} or an enc-v1 value")
    return value


def _check_totp_secret(value: str | None, where: str) -> None:
    """A plaintext base32 secret must decode, and to at least 128 bits (RFC 4226 §4), or no code could verify."""
    if value is None or SEALED_RE.match(value):
        return
    try:
        # Decoded exactly as pyotp will (pad to a multiple of 8, nothing else), so what passes here verifies later.
        raw = base64.b32decode(value + "=" * (-len(value) % 8))
    except (binascii.Error, ValueError):
        raise ConfigError(where, "is not valid base32 (its length cannot be decoded)") from None
    if len(raw) < MIN_TOTP_SECRET_BYTES:
        raise ConfigError(where, f"must hold at least {MIN_TOTP_SECRET_BYTES * 8} bits, got {len(raw) * 8}")


def validate(doc: Any) -> None:
    """Raise ConfigError for the first problem in the raw config document."""
    c = _Checker(doc)
    root = c.obj(doc, "$")

    team = c.obj(root.get("team"), "$.team") if "team" in root else None
    if team is None:
        raise ConfigError("$.team", "is required")
    c.string(team, "name", "$.team", required=True, min_len=1, max_len=128)
    c.string(team, "directive", "$.team", max_len=512)
    c.string(team, "brief", "$.team", max_len=8192)

    roles = c.obj(root.get("roles", {}), "$.roles")
    for role_name, role in roles.items():
        where = f"$.roles.{role_name}"
        if not NAME_RE.match(role_name):
            raise ConfigError(where, "role names must match ^[A-Za-z0-9._-]{1,64}$")
        role_obj = c.obj(role, where)
        c.string(role_obj, "description", where, max_len=512)
        c.string(role_obj, "instructions", where, max_len=16384)

    if "slots" not in root:
        raise ConfigError("$.slots", "is required")
    slots = root["slots"]
    if not isinstance(slots, list):
        raise ConfigError("$.slots", f"must be an array, got {_type_name(slots)}")
    if not slots:
        raise ConfigError("$.slots", "must hold at least one slot")
    seen_names: dict[str, int] = {}
    seen_hashes: dict[str, str] = {}
    directors = 0
    for i, raw in enumerate(slots):
        where = f"$.slots[{i}]"
        slot = c.obj(raw, where)
        name = c.string(slot, "name", where, required=True, pattern=NAME_RE, hint="must match ^[A-Za-z0-9._-]{1,64}$")
        assert name is not None
        if name in seen_names:
            raise ConfigError(f"{where}.name", f"duplicate slot name {_q(name)} (also $.slots[{seen_names[name]}])")
        seen_names[name] = i
        role = c.string(slot, "role", where, required=True, min_len=1, max_len=64)
        if role not in roles:
            raise ConfigError(f"{where}.role", f"role {_q(role)} is not defined in $.roles")
        authority = slot.get("authority", "individual-contributor")
        if authority not in AUTHORITIES:
            raise ConfigError(f"{where}.authority", f"must be one of {', '.join(AUTHORITIES)}, got {_q(authority)}")
        directors += authority == "director"
        if "token" in slot and "tokenHash" in slot:
            raise ConfigError(where, "has both token and tokenHash; keep only one")
        token = c.string(slot, "token", where, max_len=256)
        if token is not None and len(token) < MIN_PLAINTEXT_TOKEN:
            raise ConfigError(
                f"{where}.token",
                f"plaintext token is shorter than {MIN_PLAINTEXT_TOKEN} characters; mint one with ac7 rotate",
            )
        token_hash = c.string(
            slot,
            "tokenHash",
            where,
            pattern=TOKEN_HASH_RE,
            hint="must be sha256: followed by 64 lowercase hex digits",
        )
        totp = _secret_field(
            c, slot, "totpSecret", where, SECRET_RE, "a base32 secret (A-Z, 2-7, at least 26 characters)"
        )
        _check_totp_secret(totp, f"{where}.totpSecret")
        if token is None and token_hash is None and "totpSecret" not in slot:
            raise ConfigError(where, "needs a token, a tokenHash, or (for a human-only slot) a totpSecret")
        if token_hash is not None:
            if token_hash in seen_hashes:
                raise ConfigError(f"{where}.tokenHash", f"same token as slot {_q(seen_hashes[token_hash])}")
            seen_hashes[token_hash] = name
    if directors == 0:
        raise ConfigError("$.slots", "at least one slot must have authority director")

    if "webPush" in root:
        wp = c.obj(root["webPush"], "$.webPush")
        c.string(wp, "vapidPublicKey", "$.webPush", required=True, pattern=_B64URL_RE, hint="must be base64url")
        if "vapidPrivateKey" not in wp:
            raise ConfigError("$.webPush.vapidPrivateKey", "is required")
        _secret_field(c, wp, "vapidPrivateKey", "$.webPush", _B64URL_RE, "a base64url private key")
        subject = c.string(wp, "vapidSubject", "$.webPush", max_len=512)
        if subject is not None and not subject.startswith(("mailto:", "https://")):
            raise ConfigError("$.webPush.vapidSubject", "must be a mailto: or https:// URL")

    if "https" in root:
        https = c.obj(root["https"], "$.https")
        mode = https.get("mode", "off")
        if mode not in HTTPS_MODES:
            raise ConfigError("$.https.mode", f"must be one of {', '.join(HTTPS_MODES)}, got {_q(mode)}")
        if mode == "custom":
            c.string(https, "certPath", "$.https", required=True, min_len=1)
            c.string(https, "keyPath", "$.https", required=True, min_len=1)

    if "kek" in root:
        kek = c.obj(root["kek"], "$.kek")
        if kek.get("kdf") != "argon2id":
            raise ConfigError("$.kek.kdf", f"must be argon2id, got {_q(kek.get('kdf'))}")
        c.string(
            kek,
            "salt",
            "$.kek",
            required=True,
            min_len=22,
            max_len=128,
            pattern=_B64URL_RE,
            hint="must be base64url",
        )
        c.integer(kek, "timeCost", "$.kek", 1, 64)
        c.integer(kek, "memoryCost", "$.kek", 8 * 1024, 4 * 1024 * 1024)
        c.integer(kek, "parallelism", "$.kek", 1, 64)
        c.string(kek, "check", "$.kek", pattern=SEALED_RE, hint="must be an enc-v1 value")


def totp_field(slot_name: str) -> str:
    return f"slots/{slot_name}/totpSecret"


VAPID_FIELD = "webPush/vapidPrivateKey"
