"""Resolving the key-encryption key (KEK) that seals secrets in the team config.

Order: ``AC7_KEK`` (base64 of 32 bytes) → ``AC7_KEK_PASSPHRASE`` (Argon2id with the salt and costs recorded in the
config's ``kek`` block) → ``<configDir>/ac7-kek.bin`` (32 raw bytes, 0600, created on first use).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from ac7_core.atomic_file import create_exclusive
from ac7_core.errors import Ac7Error
from ac7_core.sealed import KEY_LEN, SealError, seal, unseal

KEY_FILE_NAME = "ac7-kek.bin"
CHECK_FIELD = "kek/check"
_CHECK_PLAINTEXT = "ac7 key check"

# RFC 9106 §4 second recommended option (64 MiB, t=3), with p=1 because the broker box has two cores.
DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_PARALLELISM = 1


class KekError(Ac7Error):
    """The KEK could not be resolved; the message says from where and why."""


@dataclass(frozen=True)
class Kek:
    key: bytes = field(repr=False)
    source: str
    # A freshly generated Argon2id block the config does not hold yet; whoever writes the config records it.
    new_kdf_block: dict[str, Any] | None = None


def _decode_b64(text: str) -> bytes:
    text = text.strip()
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KekError("AC7_KEK is not valid base64") from None


def key_from_env(value: str) -> bytes:
    key = _decode_b64(value)
    if len(key) != KEY_LEN:
        raise KekError(f"AC7_KEK must decode to exactly {KEY_LEN} bytes, got {len(key)}")
    return key


def _derive(passphrase: str, salt: bytes, time_cost: int, memory_kib: int, parallelism: int) -> bytes:
    return hash_secret_raw(
        passphrase.encode("utf-8"),
        salt,
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=KEY_LEN,
        type=Type.ID,
    )


def new_kdf_block(passphrase: str) -> tuple[bytes, dict[str, Any]]:
    """Fresh salt and costs for a passphrase, plus a check value that tells a wrong passphrase at once."""
    salt = secrets.token_bytes(16)
    key = _derive(passphrase, salt, DEFAULT_TIME_COST, DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM)
    block = {
        "kdf": "argon2id",
        "salt": base64.urlsafe_b64encode(salt).rstrip(b"=").decode("ascii"),
        "timeCost": DEFAULT_TIME_COST,
        "memoryCost": DEFAULT_MEMORY_KIB,
        "parallelism": DEFAULT_PARALLELISM,
        "check": seal(key, _CHECK_PLAINTEXT, CHECK_FIELD),
    }
    return key, block


def key_from_passphrase(passphrase: str, block: Mapping[str, Any]) -> bytes:
    """Derive the key with the config's recorded parameters (already schema-checked) and verify it."""
    salt_text = str(block["salt"])
    salt = base64.urlsafe_b64decode(salt_text + "=" * (-len(salt_text) % 4))
    key = _derive(passphrase, salt, int(block["timeCost"]), int(block["memoryCost"]), int(block["parallelism"]))
    check = block.get("check")
    if isinstance(check, str):
        try:
            unseal(key, check, CHECK_FIELD)
        except SealError:
            raise KekError("AC7_KEK_PASSPHRASE does not match this config (kek/check failed to decrypt)") from None
    return key


def key_from_file(path: Path, *, create: bool) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise KekError(f"{path}: key file not found (set AC7_KEK or AC7_KEK_PASSPHRASE, or restore it)") from None
        key = secrets.token_bytes(KEY_LEN)
        try:
            create_exclusive(path, key)
        except FileExistsError:
            pass  # another process created it first; use theirs so both agree
        else:
            return key
        st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise KekError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KekError(f"{path}: key file is accessible to other users (mode {st.st_mode & 0o777:04o}); chmod 600 it")
    data = path.read_bytes()
    if len(data) != KEY_LEN:
        raise KekError(f"{path}: key file must hold exactly {KEY_LEN} raw bytes, got {len(data)}")
    return data


def resolve_kek(
    config_dir: Path,
    kdf_block: Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    create: bool = True,
) -> Kek:
    """Resolve the KEK for a config in `config_dir` whose ``kek`` block (if any) is `kdf_block`."""
    env = os.environ if env is None else env
    if env.get("AC7_KEK"):
        return Kek(key_from_env(env["AC7_KEK"]), "AC7_KEK")
    passphrase = env.get("AC7_KEK_PASSPHRASE")
    if passphrase:
        if kdf_block is not None:
            return Kek(key_from_passphrase(passphrase, kdf_block), "AC7_KEK_PASSPHRASE")
        key, block = new_kdf_block(passphrase)
        return Kek(key, "AC7_KEK_PASSPHRASE", new_kdf_block=block)
    path = config_dir / KEY_FILE_NAME
    return Kek(key_from_file(path, create=create), f"key file {path}")
