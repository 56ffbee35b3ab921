"""Loading the team config: migration, idempotence, KEK errors, file modes and live-reload signatures."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ac7_core import config_file, config_schema, tokens
from ac7_core.config_edit import rotate_token
from ac7_core.config_file import ConfigWatcher, create_config, file_signature, load_config, update_config
from ac7_core.errors import Ac7Error
from ac7_core.kek import KEY_FILE_NAME, KekError, key_from_passphrase
from ac7_core.sealed import SealError, seal, unseal

TOKEN = "ac7_" + "T" * 43
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
BOB_TOTP = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
VAPID_PRIVATE = "priv-ate_KEY-0123456789abcdefABCDEF"
VAPID_PUBLIC = "BPub-lic_KEY0123456789"
CAROL_HASH = "sha256:" + "c" * 64
CAROL = '{ "name":"carol",  "role" : "engineer",\n\t"tokenHash": "' + CAROL_HASH + '", "x-note" : [1,2] }'

PLAIN = (
    "{\n"
    '  "_comment": "team config; hand-edited",\n'
    '  "team": {"name": "acme", "directive": "Ship billing", "x-extra": {"keep": true}},\n'
    '  "roles": {"lead": {"description": "Plans"}, "engineer": {"description": "Builds", "x-role": 1}},\n'
    '  "slots": [\n'
    '    {"name": "alice", "role": "lead", "authority": "director",\n'
    f'     "token": "{TOKEN}", "totpSecret": "{TOTP}", "x-slot": "keep me"}},\n'
    f'    {{"name": "bob", "role": "engineer", "authority": "manager", "totpSecret": "{BOB_TOTP}"}},\n'
    f"    {CAROL}\n"
    "  ],\n"
    f'  "webPush": {{"vapidPublicKey": "{VAPID_PUBLIC}", "vapidPrivateKey": "{VAPID_PRIVATE}"}},\n'
    '  "x-top": {"anything": [null, 1.5]}\n'
    "}\n"
)
SECRETS = (TOKEN, TOTP, BOB_TOTP, VAPID_PRIVATE)


@pytest.fixture
def plain_path(tmp_path: Path) -> Path:
    path = tmp_path / "ac7.json"
    path.write_text(PLAIN, encoding="utf-8")
    path.chmod(0o600)
    return path


def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _slot(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["slots"] if s["name"] == name)


# ---- migration -------------------------------------------------------------------------------------------------


def test_load_migrates_plaintext_secrets_on_disk(plain_path: Path, kek_env: dict[str, str], kek_key: bytes) -> None:
    loaded = load_config(plain_path, env=kek_env)
    text = plain_path.read_text(encoding="utf-8")
    doc = json.loads(text)
    alice, bob = _slot(doc, "alice"), _slot(doc, "bob")

    assert "token" not in alice
    assert alice["tokenHash"] == tokens.hash_token(TOKEN)
    assert list(alice) == ["name", "role", "authority", "tokenHash", "totpSecret", "x-slot"]  # key order kept
    assert alice["totpSecret"].startswith("enc-v1:")
    assert bob["totpSecret"].startswith("enc-v1:")
    assert doc["webPush"]["vapidPrivateKey"].startswith("enc-v1:")
    assert unseal(kek_key, alice["totpSecret"], "slots/alice/totpSecret") == TOTP
    assert unseal(kek_key, bob["totpSecret"], "slots/bob/totpSecret") == BOB_TOTP
    assert unseal(kek_key, doc["webPush"]["vapidPrivateKey"], "webPush/vapidPrivateKey") == VAPID_PRIVATE
    for secret in SECRETS:
        assert secret not in text

    assert set(loaded.migrated) == {
        "slots/alice/token hashed",
        "slots/alice/totpSecret encrypted",
        "slots/bob/totpSecret encrypted",
        "webPush/vapidPrivateKey encrypted",
    }
    joined = " ".join(loaded.migrated)
    for secret in SECRETS:
        assert secret not in joined
    assert loaded.doc == doc
    assert loaded.signature == file_signature(plain_path)


def test_loaded_config_holds_plaintext_secrets_in_memory(plain_path: Path, kek_env: dict[str, str]) -> None:
    for _ in range(2):  # the migrating load and the clean one agree
        config = load_config(plain_path, env=kek_env).config
        alice, bob, carol = config.slots
        assert (alice.name, alice.role, alice.authority, alice.is_director) == ("alice", "lead", "director", True)
        assert alice.totp_secret == TOTP
        assert alice.token_hash == tokens.hash_token(TOKEN)
        assert tokens.token_matches(TOKEN, alice.token_hash)
        assert (bob.authority, bob.token_hash, bob.totp_secret) == ("manager", None, BOB_TOTP)
        assert (carol.authority, carol.token_hash, carol.totp_secret) == ("individual-contributor", CAROL_HASH, None)
        assert config.slot("bob") is bob
        assert config.slot("nobody") is None
        assert config.web_push is not None
        assert config.web_push.private_key == VAPID_PRIVATE
        assert config.web_push.public_key == VAPID_PUBLIC
        assert config.web_push.subject == config_schema.DEFAULT_VAPID_SUBJECT
        assert (config.team.name, config.team.directive, config.team.brief) == ("acme", "Ship billing", "")
        assert config.roles["engineer"].description == "Builds"
        assert config.https == config_schema.Https("off", None, None)
        assert TOTP not in repr(config)
        assert VAPID_PRIVATE not in repr(config)


def test_second_load_migrates_nothing_and_leaves_bytes_alone(plain_path: Path, kek_env: dict[str, str]) -> None:
    load_config(plain_path, env=kek_env)
    before_bytes = plain_path.read_bytes()
    before_sig = file_signature(plain_path)
    again = load_config(plain_path, env=kek_env)
    assert again.migrated == ()
    assert plain_path.read_bytes() == before_bytes
    assert file_signature(plain_path) == before_sig
    assert again.signature == before_sig
    assert again.config.slot("alice").totp_secret == TOTP  # type: ignore[union-attr]


def test_unknown_keys_and_comments_survive_migration(plain_path: Path, kek_env: dict[str, str]) -> None:
    load_config(plain_path, env=kek_env)
    text = plain_path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["_comment"] == "team config; hand-edited"
    assert doc["team"]["x-extra"] == {"keep": True}
    assert doc["roles"]["engineer"]["x-role"] == 1
    assert _slot(doc, "alice")["x-slot"] == "keep me"
    assert doc["x-top"] == {"anything": [None, 1.5]}
    # Untouched parts keep their exact text.
    assert CAROL in text
    assert text.startswith(PLAIN[: PLAIN.index('    {"name": "alice"')])
    assert text.endswith(PLAIN[PLAIN.index('  "x-top"') :])


@pytest.mark.parametrize("original_mode", [0o644, 0o600, 0o640])
def test_rewrite_is_0600_whatever_the_umask_and_original_mode(
    plain_path: Path,
    kek_env: dict[str, str],
    umask,
    original_mode: int,  # type: ignore[no-untyped-def]
) -> None:
    umask(0o022)
    plain_path.chmod(original_mode)
    load_config(plain_path, env=kek_env)
    assert stat.S_IMODE(plain_path.stat().st_mode) == 0o600
    assert [p.name for p in plain_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_load_without_migration_does_not_change_the_mode(tmp_path: Path, base_doc, kek_env, write_json) -> None:  # type: ignore[no-untyped-def]
    path = write_json(base_doc)
    path.chmod(0o640)
    load_config(path, env=kek_env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_key_file_lives_beside_the_config(plain_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(plain_path, env={})
    key_file = plain_path.parent / KEY_FILE_NAME
    assert key_file.read_bytes() == loaded.kek.key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(elsewhere.iterdir()) == []
    again = load_config(plain_path, env={})
    assert again.migrated == ()
    assert again.config.slot("alice").totp_secret == TOTP  # type: ignore[union-attr]


def test_no_key_file_is_minted_for_a_config_that_already_holds_sealed_values(
    plain_path: Path, kek_env: dict[str, str]
) -> None:
    load_config(plain_path, env=kek_env)  # sealed under AC7_KEK; no key file exists
    before = plain_path.read_bytes()
    with pytest.raises(KekError, match="not found"):
        load_config(plain_path, env={})
    assert not (plain_path.parent / KEY_FILE_NAME).exists()  # a fresh key could never open these values
    assert plain_path.read_bytes() == before


def test_env_defaults_to_os_environ(plain_path: Path, kek_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AC7_KEK", kek_env["AC7_KEK"])
    load_config(plain_path)
    assert not (plain_path.parent / KEY_FILE_NAME).exists()
    assert load_config(plain_path, env=kek_env).migrated == ()


def test_explicit_kek_is_used(plain_path: Path, kek_env: dict[str, str]) -> None:
    first = load_config(plain_path, env=kek_env)
    again = load_config(plain_path, kek=first.kek, env={"AC7_KEK": "garbage that would fail"})
    assert again.config.slot("alice").totp_secret == TOTP  # type: ignore[union-attr]


# ---- wrong keys and tampering ----------------------------------------------------------------------------------


def test_wrong_kek_names_the_field_and_leaves_the_file(
    plain_path: Path, kek_env: dict[str, str], other_kek_env: dict[str, str]
) -> None:
    load_config(plain_path, env=kek_env)
    before = plain_path.read_bytes()
    with pytest.raises(Ac7Error) as exc:
        load_config(plain_path, env=other_kek_env)
    message = str(exc.value)
    assert "slots/alice/totpSecret" in message
    assert "\n" not in message
    assert plain_path.read_bytes() == before


def test_wrong_kek_with_pending_migration_leaves_the_file(
    plain_path: Path, kek_env: dict[str, str], other_kek_env: dict[str, str], kek_key: bytes
) -> None:
    # alice is already sealed; bob's secret and the token are still plaintext. A wrong key must not
    # migrate bob (under the wrong key) before discovering alice cannot be opened.
    text = PLAIN.replace(TOTP, seal(kek_key, TOTP, "slots/alice/totpSecret"))
    plain_path.write_text(text, encoding="utf-8")
    with pytest.raises(SealError, match="slots/alice/totpSecret"):
        load_config(plain_path, env=other_kek_env)
    assert plain_path.read_text(encoding="utf-8") == text
    assert load_config(plain_path, env=kek_env).config.slot("bob").totp_secret == BOB_TOTP  # type: ignore[union-attr]


def test_ciphertext_pasted_into_another_slot_fails_naming_the_target(plain_path: Path, kek_env: dict[str, str]) -> None:
    load_config(plain_path, env=kek_env)
    text = plain_path.read_text(encoding="utf-8")
    doc = json.loads(text)
    alice_ct, bob_ct = _slot(doc, "alice")["totpSecret"], _slot(doc, "bob")["totpSecret"]
    pasted = text.replace(bob_ct, alice_ct)
    plain_path.write_text(pasted, encoding="utf-8")
    with pytest.raises(SealError) as exc:
        load_config(plain_path, env=kek_env)
    assert "slots/bob/totpSecret" in str(exc.value)
    assert "alice" not in str(exc.value)
    assert plain_path.read_text(encoding="utf-8") == pasted


def test_vapid_ciphertext_pasted_into_a_slot_fails(plain_path: Path, kek_env: dict[str, str]) -> None:
    load_config(plain_path, env=kek_env)
    text = plain_path.read_text(encoding="utf-8")
    doc = json.loads(text)
    plain_path.write_text(text.replace(_slot(doc, "bob")["totpSecret"], doc["webPush"]["vapidPrivateKey"]))
    with pytest.raises(SealError, match="slots/bob/totpSecret"):
        load_config(plain_path, env=kek_env)


@pytest.mark.parametrize("part", [1, 2, 3])
def test_tampered_ciphertext_is_an_error(plain_path: Path, kek_env: dict[str, str], part: int) -> None:
    load_config(plain_path, env=kek_env)
    text = plain_path.read_text(encoding="utf-8")
    value = json.loads(text)["webPush"]["vapidPrivateKey"]
    parts = value.split(":")
    parts[part] = ("A" if parts[part][0] != "A" else "B") + parts[part][1:]
    plain_path.write_text(text.replace(value, ":".join(parts)), encoding="utf-8")
    with pytest.raises(SealError, match="webPush/vapidPrivateKey"):
        load_config(plain_path, env=kek_env)


def test_bad_ac7_kek_is_a_kek_error_and_leaves_the_file(plain_path: Path) -> None:
    with pytest.raises(KekError, match="32 bytes"):
        load_config(plain_path, env={"AC7_KEK": "AAAA"})
    assert plain_path.read_text(encoding="utf-8") == PLAIN


# ---- passphrase KEK --------------------------------------------------------------------------------------------


def test_passphrase_kek_records_its_block_and_reloads(plain_path: Path) -> None:
    first = load_config(plain_path, env={"AC7_KEK_PASSPHRASE": "correct horse"})
    assert "kek parameters recorded" in first.migrated
    doc = _doc(plain_path)
    block = doc["kek"]
    assert block["kdf"] == "argon2id"
    assert {"salt", "timeCost", "memoryCost", "parallelism", "check"} <= set(block)
    assert "correct horse" not in plain_path.read_text(encoding="utf-8")
    assert not (plain_path.parent / KEY_FILE_NAME).exists()
    assert unseal(first.kek.key, _slot(doc, "alice")["totpSecret"], "slots/alice/totpSecret") == TOTP

    before = plain_path.read_bytes()
    again = load_config(plain_path, env={"AC7_KEK_PASSPHRASE": "correct horse"})
    assert again.migrated == ()
    assert again.kek.key == first.kek.key
    assert again.config.slot("alice").totp_secret == TOTP  # type: ignore[union-attr]
    assert plain_path.read_bytes() == before

    with pytest.raises(KekError, match="AC7_KEK_PASSPHRASE"):
        load_config(plain_path, env={"AC7_KEK_PASSPHRASE": "wrong horse"})
    assert plain_path.read_bytes() == before


# ---- other load errors -----------------------------------------------------------------------------------------


def test_duplicate_plaintext_tokens_are_rejected_and_the_file_untouched(
    tmp_path: Path, base_doc: dict[str, Any], kek_env: dict[str, str], write_json
) -> None:  # type: ignore[no-untyped-def]
    for slot in base_doc["slots"]:
        del slot["tokenHash"]
        slot["token"] = TOKEN
    path = write_json(base_doc)
    before = path.read_bytes()
    with pytest.raises(config_schema.ConfigError, match="same token"):
        load_config(path, env=kek_env)
    assert path.read_bytes() == before


def test_missing_file_suggests_setup(tmp_path: Path, kek_env: dict[str, str]) -> None:
    with pytest.raises(Ac7Error) as exc:
        load_config(tmp_path / "nope.json", env=kek_env)
    assert "ac7 setup" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_directory_is_not_a_config(tmp_path: Path, kek_env: dict[str, str]) -> None:
    with pytest.raises(Ac7Error, match="directory"):
        load_config(tmp_path, env=kek_env)


def test_huge_file_is_rejected(tmp_path: Path, kek_env: dict[str, str]) -> None:
    path = tmp_path / "ac7.json"
    path.write_bytes(b" " * (config_file.MAX_CONFIG_BYTES + 1))
    with pytest.raises(Ac7Error, match="larger than"):
        load_config(path, env=kek_env)


def test_default_config_path() -> None:
    assert config_file.default_config_path({}) == Path("ac7.json")
    assert config_file.default_config_path({"AC7_CONFIG": "/etc/ac7/team.json"}) == Path("/etc/ac7/team.json")


def test_default_config_path_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_file.default_config_path() == Path("ac7.json")
    monkeypatch.setenv("AC7_CONFIG", "/srv/x.json")
    assert config_file.default_config_path() == Path("/srv/x.json")


def test_https_custom_and_vapid_subject_are_typed(
    tmp_path: Path, base_doc: dict[str, Any], kek_env: dict[str, str], write_json
) -> None:  # type: ignore[no-untyped-def]
    base_doc["https"] = {"mode": "custom", "certPath": "/c.pem", "keyPath": "/k.pem"}
    base_doc["webPush"] = {"vapidPublicKey": "abc", "vapidPrivateKey": "def", "vapidSubject": "https://acme.test"}
    base_doc["team"]["brief"] = "context"
    config = load_config(write_json(base_doc), env=kek_env).config
    assert config.https == config_schema.Https("custom", "/c.pem", "/k.pem")
    assert config.web_push is not None
    assert config.web_push.subject == "https://acme.test"
    assert config.team.brief == "context"


# ---- live reload -----------------------------------------------------------------------------------------------


@pytest.fixture
def loaded_path(plain_path: Path, kek_env: dict[str, str]) -> tuple[Path, config_file.LoadedConfig]:
    return plain_path, load_config(plain_path, env=kek_env)


def test_watcher_ignores_a_no_op(loaded_path) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    assert not watcher.changed()
    os.utime(path, ns=(path.stat().st_atime_ns + 10**9, path.stat().st_mtime_ns))  # atime only
    path.read_bytes()
    assert not watcher.changed()


def test_watcher_detects_a_rename_replace(loaded_path) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    st = path.stat()
    tmp = path.with_name("replacement.json")
    tmp.write_bytes(path.read_bytes())  # same size, same content
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the inode differs
    tmp.replace(path)
    assert watcher.changed()


def test_watcher_detects_an_in_place_edit_with_a_different_size(loaded_path) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    st = path.stat()
    with path.open("ab") as fh:
        fh.write(b"\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same inode, same mtime: only the size differs
    assert path.stat().st_ino == st.st_ino
    assert watcher.changed()


def test_watcher_detects_an_in_place_edit_with_the_same_size(loaded_path) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    st = path.stat()
    data = path.read_bytes()
    with path.open("r+b") as fh:
        fh.write(data.replace(b"Ship billing", b"Ship BILLING"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == st.st_size
    assert watcher.changed()


def test_watcher_detects_deletion(loaded_path) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    path.unlink()
    assert watcher.changed()


def test_mark_seen_suppresses_our_own_write(loaded_path, kek_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    watcher = ConfigWatcher(path, loaded.signature)
    updated, _ = update_config(path, lambda d, _k: rotate_token(d, "carol"), env=kek_env)
    assert watcher.changed()
    assert updated.signature == file_signature(path)
    watcher.mark_seen(updated.signature)
    assert not watcher.changed()
    # A later external edit is still noticed.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Ship billing", "Ship it all"), encoding="utf-8")
    assert watcher.changed()


def test_update_that_changes_nothing_keeps_the_signature(loaded_path, kek_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    path, loaded = loaded_path
    before = path.read_bytes()
    updated, result = update_config(path, lambda _d, _k: 42, env=kek_env)
    assert result == 42
    assert updated.signature == loaded.signature == file_signature(path)
    assert path.read_bytes() == before


# ---- create_config ---------------------------------------------------------------------------------------------


def _plain_doc() -> dict[str, Any]:
    return {
        "_comment": "new team",
        "team": {"name": "acme"},
        "roles": {"lead": {"description": "Plans"}},
        "slots": [
            {"name": "alice", "role": "lead", "authority": "director", "token": TOKEN, "totpSecret": TOTP},
            {"name": "bob", "role": "lead", "totpSecret": BOB_TOTP},
        ],
        "webPush": {"vapidPublicKey": VAPID_PUBLIC, "vapidPrivateKey": VAPID_PRIVATE},
    }


def test_create_config_hashes_and_seals_and_writes_0600(
    tmp_path: Path, kek_env: dict[str, str], kek_key: bytes, umask
) -> None:  # type: ignore[no-untyped-def]
    umask(0o022)
    path = tmp_path / "ac7.json"
    given = _plain_doc()
    loaded = create_config(path, given, env=kek_env)
    assert given == _plain_doc()  # the caller's document is not modified
    text = path.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text
    doc = json.loads(text)
    alice = _slot(doc, "alice")
    assert "token" not in alice
    assert alice["tokenHash"] == tokens.hash_token(TOKEN)
    assert unseal(kek_key, alice["totpSecret"], "slots/alice/totpSecret") == TOTP
    assert unseal(kek_key, _slot(doc, "bob")["totpSecret"], "slots/bob/totpSecret") == BOB_TOTP
    assert unseal(kek_key, doc["webPush"]["vapidPrivateKey"], "webPush/vapidPrivateKey") == VAPID_PRIVATE
    assert doc["_comment"] == "new team"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert text.endswith("\n")
    assert loaded.config.slot("alice").totp_secret == TOTP  # type: ignore[union-attr]
    assert loaded.signature == file_signature(path)
    assert loaded.doc == doc
    assert [p.name for p in tmp_path.iterdir()] == ["ac7.json"]  # no temp files, no key file (AC7_KEK set)
    # And it loads cleanly without migrating anything.
    before = path.read_bytes()
    assert load_config(path, env=kek_env).migrated == ()
    assert path.read_bytes() == before


def test_create_config_refuses_an_existing_file(tmp_path: Path, kek_env: dict[str, str]) -> None:
    path = tmp_path / "ac7.json"
    path.write_text("precious", encoding="utf-8")
    with pytest.raises(Ac7Error, match="already exists"):
        create_config(path, _plain_doc(), env=kek_env)
    assert path.read_text(encoding="utf-8") == "precious"


def test_create_config_refuses_a_file_that_appears_concurrently(
    tmp_path: Path, kek_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ac7.json"
    real = config_file.create_exclusive

    def racing(target: Path, data: bytes, mode: int = 0o600) -> None:
        target.write_text("the other setup won", encoding="utf-8")
        real(target, data, mode)

    monkeypatch.setattr(config_file, "create_exclusive", racing)
    with pytest.raises(Ac7Error, match="already exists"):
        create_config(path, _plain_doc(), env=kek_env)
    assert path.read_text(encoding="utf-8") == "the other setup won"


def test_create_config_validates_first(tmp_path: Path, kek_env: dict[str, str]) -> None:
    doc = _plain_doc()
    doc["slots"][0]["authority"] = "manager"  # no director
    with pytest.raises(config_schema.ConfigError, match="director"):
        create_config(tmp_path / "ac7.json", doc, env=kek_env)
    assert list(tmp_path.iterdir()) == []


def test_create_config_with_a_passphrase_records_the_block(tmp_path: Path) -> None:
    path = tmp_path / "ac7.json"
    env = {"AC7_KEK_PASSPHRASE": "correct horse"}
    created = create_config(path, _plain_doc(), env=env)
    assert _doc(path)["kek"]["kdf"] == "argon2id"
    assert not (tmp_path / KEY_FILE_NAME).exists()
    loaded = load_config(path, env=env)
    assert loaded.migrated == ()
    assert loaded.kek.key == created.kek.key
    assert loaded.config.slot("bob").totp_secret == BOB_TOTP  # type: ignore[union-attr]


def test_create_config_never_writes_a_config_that_does_not_load(tmp_path: Path, kek_env: dict[str, str]) -> None:
    # Two slots given the same plaintext token pass validation before hashing, and collide after it.
    path = tmp_path / "ac7.json"
    doc = _plain_doc()
    doc["slots"][1]["token"] = TOKEN  # same as alice's
    try:
        create_config(path, doc, env=kek_env)
    except config_schema.ConfigError as exc:
        assert "same token" in str(exc)
        assert not path.exists()
        return
    try:
        load_config(path, env=kek_env)
    except Ac7Error as exc:
        pytest.fail(f"create_config wrote a config that load_config rejects: {exc}")


RACING_LOAD = """
import sys
from pathlib import Path
from ac7_core.config_file import load_config
load_config(Path(sys.argv[1]), env={"AC7_KEK_PASSPHRASE": "correct horse"})
"""


def test_concurrent_first_loads_with_a_passphrase_agree_on_the_key(
    tmp_path: Path, base_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes load a config that has no kek block yet; the one that loses the race must not keep a key
    that does not match the block the winner recorded (it would seal later secrets with it)."""
    path = tmp_path / "ac7.json"
    path.write_text(json.dumps(base_doc, indent=2), encoding="utf-8")
    env = {"AC7_KEK_PASSPHRASE": "correct horse"}
    real_resolve = config_file.resolve_kek
    raced: list[bool] = []

    def resolve_then_lose_the_race(*args: Any, **kwargs: Any) -> Any:
        resolved = real_resolve(*args, **kwargs)
        if not raced:  # another process records its own block between our resolve and our write
            raced.append(True)
            subprocess.run([sys.executable, "-c", RACING_LOAD, str(path)], check=True, timeout=60)
        return resolved

    monkeypatch.setattr(config_file, "resolve_kek", resolve_then_lose_the_race)
    try:
        loaded = load_config(path, env=env)
    except Ac7Error:
        return  # refusing (and letting the caller retry) is safe
    assert raced
    recorded = _doc(path)["kek"]
    assert loaded.kek.key == key_from_passphrase("correct horse", recorded)
