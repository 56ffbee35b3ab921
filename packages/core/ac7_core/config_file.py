"""Reading, migrating and rewriting the team config file.

Every write happens under an inter-process lock, re-reads the file first (so concurrent writers never lose each
other's changes), and replaces the file atomically with a surgical rewrite that keeps untouched text byte-identical.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ac7_core import json_splice
from ac7_core.atomic_file import create_exclusive, locked, remove_stale_temps, write_atomic
from ac7_core.config_schema import (
    AUTHORITIES,
    DEFAULT_VAPID_SUBJECT,
    VAPID_FIELD,
    ConfigError,
    Https,
    Role,
    Slot,
    Team,
    TeamConfig,
    WebPush,
    totp_field,
    validate,
)
from ac7_core.errors import Ac7Error
from ac7_core.kek import Kek, resolve_kek
from ac7_core.sealed import is_sealed, seal, unseal
from ac7_core.tokens import hash_token

DEFAULT_CONFIG_NAME = "ac7.json"
# Far above any real team config; stops a mistaken path (a log file, /dev/zero) from eating memory.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileSignature:
    """What cheaply identifies one version of a file: a rename-replace always changes the inode."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_signature(path: Path) -> FileSignature | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return FileSignature(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: TeamConfig
    doc: dict[str, Any]  # the raw document as on disk (secrets hashed/sealed)
    signature: FileSignature | None  # of the file this was read from or written to
    migrated: tuple[str, ...]  # what this load changed on disk (empty on a clean load)
    kek: Kek


class ConfigWatcher:
    """Tells when the config file has changed since it was last loaded or written."""

    def __init__(self, path: Path, signature: FileSignature | None) -> None:
        self.path = path
        self._seen = signature

    def changed(self) -> bool:
        return file_signature(self.path) != self._seen

    def mark_seen(self, signature: FileSignature | None) -> None:
        self._seen = signature


def _read(path: Path) -> tuple[str, FileSignature | None]:
    # Signature first: if the file changes after we stat it, the next poll sees a newer signature and reloads.
    signature = file_signature(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise Ac7Error(f"{path}: config not found (create one with: ac7 setup --config {path})") from None
    except IsADirectoryError:
        raise Ac7Error(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise Ac7Error(f"{path}: permission denied") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; is this a team config?")
    try:
        return data.decode("utf-8"), signature
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 (byte offset {exc.start})") from None


def _validated(doc: Any, source: str) -> None:
    try:
        validate(doc)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.where}", exc.reason) from None


def parse(text: str, source: str) -> dict[str, Any]:
    """Parse and validate config text; errors read `<source>: <json path>: <reason>`."""
    try:
        doc = json.loads(text)
        json_splice.check_duplicate_keys(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except json_splice.DuplicateKeyError as exc:
        raise ConfigError(source, str(exc)) from None
    except RecursionError:
        raise ConfigError(source, "JSON nested too deeply") from None
    _validated(doc, source)
    assert isinstance(doc, dict)
    return doc


def _replace_key(entry: dict[str, Any], old: str, new: str, value: Any) -> None:
    """Swap `old` for `new` at the same position, so a rewritten entry keeps its key order."""
    items = [(new, value) if k == old else (k, v) for k, v in entry.items()]
    if old not in entry:
        items.append((new, value))
    entry.clear()
    entry.update(items)


def set_token_hash(slot: dict[str, Any], token: str) -> None:
    key = "token" if "token" in slot else "tokenHash"
    _replace_key(slot, key, "tokenHash", hash_token(token))


def migrate(doc: dict[str, Any], key: bytes) -> list[str]:
    """Hash plaintext tokens and seal plaintext secrets in place; return what changed (never the values)."""
    changes: list[str] = []
    for slot in doc["slots"]:
        name = slot["name"]
        if "token" in slot:
            set_token_hash(slot, slot["token"])
            changes.append(f"slots/{name}/token hashed")
        secret = slot.get("totpSecret")
        if isinstance(secret, str) and not is_sealed(secret):
            slot["totpSecret"] = seal(key, secret, totp_field(name))
            changes.append(f"{totp_field(name)} encrypted")
    web_push = doc.get("webPush")
    if isinstance(web_push, dict):
        private = web_push.get("vapidPrivateKey")
        if isinstance(private, str) and not is_sealed(private):
            web_push["vapidPrivateKey"] = seal(key, private, VAPID_FIELD)
            changes.append(f"{VAPID_FIELD} encrypted")
    return changes


def build(doc: Mapping[str, Any], key: bytes) -> TeamConfig:
    """The typed view of a validated, migrated document, with secrets decrypted."""
    team = doc["team"]
    roles = {
        name: Role(name, str(r.get("description", "")), str(r.get("instructions", "")))
        for name, r in doc.get("roles", {}).items()
    }
    slots = []
    for s in doc["slots"]:
        authority = s.get("authority", "individual-contributor")
        assert authority in AUTHORITIES
        secret = s.get("totpSecret")
        slots.append(
            Slot(
                name=s["name"],
                role=s["role"],
                authority=authority,
                token_hash=s.get("tokenHash"),
                totp_secret=None if secret is None else unseal(key, secret, totp_field(s["name"])),
            )
        )
    web_push = None
    if "webPush" in doc:
        wp = doc["webPush"]
        web_push = WebPush(
            wp["vapidPublicKey"],
            unseal(key, wp["vapidPrivateKey"], VAPID_FIELD),
            wp.get("vapidSubject", DEFAULT_VAPID_SUBJECT),
        )
    https_doc = doc.get("https", {})
    https = Https(https_doc.get("mode", "off"), https_doc.get("certPath"), https_doc.get("keyPath"))
    return TeamConfig(
        team=Team(team["name"], team.get("directive", ""), team.get("brief", "")),
        roles=roles,
        slots=tuple(slots),
        web_push=web_push,
        https=https,
    )


def _holds_sealed(doc: dict[str, Any]) -> bool:
    values = [s.get("totpSecret") for s in doc["slots"]] + [doc.get("webPush", {}).get("vapidPrivateKey")]
    return any(isinstance(v, str) and is_sealed(v) for v in values)


def _prepare(
    text: str, path: Path, kek: Kek | None, env: Mapping[str, str] | None
) -> tuple[dict[str, Any], Kek, list[str]]:
    doc = parse(text, str(path))
    if kek is None or (kek.new_kdf_block is not None and "kek" in doc):
        # Mint a key file only for a config that holds nothing sealed yet: for one that does, a fresh key could
        # never open it, and "key file not found" is the truthful error. A passphrase key derived with fresh
        # parameters is re-derived when another process recorded its own parameters first (we re-read under
        # the lock), so every process ends up with the key the file's `kek` block describes.
        kek = resolve_kek(path.parent, doc.get("kek"), env=env, create=not _holds_sealed(doc))
    changes = migrate(doc, kek.key)
    if kek.new_kdf_block is not None and "kek" not in doc:
        doc["kek"] = kek.new_kdf_block
        changes.append("kek parameters recorded")
    return doc, kek, changes


def _commit(path: Path, text: str, doc: dict[str, Any]) -> FileSignature | None:
    new_text = json_splice.rewrite(text, doc)
    # Re-validate what we are about to write: a bug in an edit must never replace a good config with a bad one.
    parse(new_text, str(path))
    remove_stale_temps(path)
    write_atomic(path, new_text.encode("utf-8"))
    return file_signature(path)


def load_config(path: Path, *, kek: Kek | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load, validate and decrypt the config; migrate plaintext secrets on disk if there are any."""
    text, signature = _read(path)
    doc, kek, changes = _prepare(text, path, kek, env)
    config = build(doc, kek.key)  # decrypt before any write: a wrong KEK must not touch the file
    if not changes:
        return LoadedConfig(path, config, doc, signature, (), kek)
    loaded, _ = update_config(path, lambda _doc, _key: None, kek=kek, env=env)
    return loaded


def update_config[T](
    path: Path,
    edit: Callable[[dict[str, Any], bytes], T],
    *,
    kek: Kek | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[LoadedConfig, T]:
    """Apply `edit(doc, key)` to the current file under the lock and write the result back atomically."""
    with locked(path):
        text, signature = _read(path)
        doc, kek, changes = _prepare(text, path, kek, env)
        result = edit(doc, kek.key)
        _validated(doc, str(path))
        config = build(doc, kek.key)
        if json_splice.rewrite(text, doc) != text:
            signature = _commit(path, text, doc)
        return LoadedConfig(path, config, doc, signature, tuple(changes), kek), result


def create_config(path: Path, doc: dict[str, Any], *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Write a brand-new config (secrets may be given in plaintext; they are hashed/sealed first).

    Raises Ac7Error if a file already exists at `path`: setup never overwrites a team.
    """
    if path.exists():
        raise Ac7Error(f"{path}: a config already exists; refusing to overwrite it")
    doc = copy.deepcopy(doc)
    _validated(doc, str(path))
    kek = resolve_kek(path.parent, doc.get("kek"), env=env)
    migrate(doc, kek.key)
    if kek.new_kdf_block is not None:
        doc["kek"] = kek.new_kdf_block
    _validated(doc, str(path))  # hashing can reveal problems (two slots given the same token)
    config = build(doc, kek.key)
    text = json_splice.render_new(doc)
    try:
        create_exclusive(path, text.encode("utf-8"))
    except FileExistsError:
        raise Ac7Error(f"{path}: a config already exists; refusing to overwrite it") from None
    return LoadedConfig(path, config, doc, file_signature(path), (), kek)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("AC7_CONFIG") or DEFAULT_CONFIG_NAME)
