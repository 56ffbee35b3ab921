"""Resolving the key-encryption key: AC7_KEK, AC7_KEK_PASSPHRASE (Argon2id) and the key file."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw

from ac7_core import kek as kek_mod
from ac7_core.config_schema import validate
from ac7_core.errors import Ac7Error
from ac7_core.kek import KekError, resolve_kek
from ac7_core.sealed import unseal

# Bytes chosen so the standard and URL-safe alphabets differ ('+' / '/' vs '-' / '_').
KEY = bytes([0xFB, 0xEF, 0xFF] * 10 + [0xFB, 0xFF])
STD = base64.b64encode(KEY).decode()
URL = base64.urlsafe_b64encode(KEY).decode()


def test_the_chosen_key_exercises_both_alphabets() -> None:
    assert len(KEY) == 32
    assert "+" in STD and "/" in STD and STD.endswith("=")
    assert "-" in URL and "_" in URL


@pytest.mark.parametrize(
    "value",
    [STD, URL, URL.rstrip("="), STD.rstrip("="), f"  {STD}\n"],
    ids=["standard", "urlsafe", "urlsafe-unpadded", "standard-unpadded", "whitespace"],
)
def test_ac7_kek_accepts_standard_and_urlsafe_base64(tmp_path: Path, value: str) -> None:
    resolved = resolve_kek(tmp_path, None, env={"AC7_KEK": value})
    assert resolved.key == KEY
    assert resolved.source == "AC7_KEK"
    assert resolved.new_kdf_block is None
    assert not (tmp_path / kek_mod.KEY_FILE_NAME).exists()


@pytest.mark.parametrize("length", [1, 16, 31, 33, 64])
def test_ac7_kek_wrong_length_is_an_error(tmp_path: Path, length: int) -> None:
    value = base64.b64encode(secrets.token_bytes(length)).decode()
    with pytest.raises(KekError, match="32 bytes") as exc:
        resolve_kek(tmp_path, None, env={"AC7_KEK": value})
    assert "\n" not in str(exc.value)
    assert not (tmp_path / kek_mod.KEY_FILE_NAME).exists()


@pytest.mark.parametrize("value", ["not base64 at all!", "AAAA*AAA", "Zm9v\x00"])
def test_ac7_kek_invalid_base64_is_an_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(KekError, match="AC7_KEK"):
        resolve_kek(tmp_path, None, env={"AC7_KEK": value})


def test_kek_error_is_an_ac7_error() -> None:
    assert issubclass(KekError, Ac7Error)


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AC7_KEK", URL)
    assert resolve_kek(tmp_path, None).key == KEY


def _write_key_file(directory: Path, key: bytes) -> Path:
    path = directory / kek_mod.KEY_FILE_NAME
    path.write_bytes(key)
    path.chmod(0o600)
    return path


def test_precedence_ac7_kek_over_passphrase_over_file(tmp_path: Path) -> None:
    file_key = secrets.token_bytes(32)
    _write_key_file(tmp_path, file_key)
    both = {"AC7_KEK": STD, "AC7_KEK_PASSPHRASE": "correct horse"}

    first = resolve_kek(tmp_path, None, env=both)
    assert (first.key, first.source) == (KEY, "AC7_KEK")

    second = resolve_kek(tmp_path, None, env={"AC7_KEK_PASSPHRASE": "correct horse"})
    assert second.source == "AC7_KEK_PASSPHRASE"
    assert second.key not in (KEY, file_key)
    assert second.new_kdf_block is not None

    third = resolve_kek(tmp_path, None, env={})
    assert third.key == file_key
    assert str(tmp_path / kek_mod.KEY_FILE_NAME) in third.source


@pytest.fixture(scope="module")
def passphrase_block() -> tuple[bytes, dict]:  # type: ignore[type-arg]
    # Module-scoped: one Argon2id derivation shared by the tests that only read it.
    resolved = resolve_kek(Path("/nonexistent-ac7-dir"), None, env={"AC7_KEK_PASSPHRASE": "correct horse"})
    assert resolved.new_kdf_block is not None
    return resolved.key, resolved.new_kdf_block


def test_passphrase_block_has_the_recorded_parameters(passphrase_block) -> None:  # type: ignore[no-untyped-def]
    key, block = passphrase_block
    assert len(key) == 32
    assert set(block) >= {"kdf", "salt", "timeCost", "memoryCost", "parallelism", "check"}
    assert block["kdf"] == "argon2id"
    salt = base64.urlsafe_b64decode(block["salt"] + "=" * (-len(block["salt"]) % 4))
    assert len(salt) >= 16
    assert block["timeCost"] >= 1
    assert block["memoryCost"] >= 8 * 1024
    assert block["parallelism"] >= 1
    # The check value opens under the derived key, so a wrong passphrase is detected at once.
    unseal(key, block["check"], kek_mod.CHECK_FIELD)
    # And the block is acceptable in a config document.
    validate(
        {
            "team": {"name": "t"},
            "roles": {"r": {}},
            "slots": [{"name": "a", "role": "r", "authority": "director", "token": "x" * 20}],
            "kek": block,
        }
    )


def test_passphrase_key_is_argon2id_with_the_recorded_parameters(passphrase_block) -> None:  # type: ignore[no-untyped-def]
    key, block = passphrase_block
    salt = base64.urlsafe_b64decode(block["salt"] + "=" * (-len(block["salt"]) % 4))
    expected = hash_secret_raw(
        b"correct horse",
        salt,
        time_cost=block["timeCost"],
        memory_cost=block["memoryCost"],
        parallelism=block["parallelism"],
        hash_len=32,
        type=Type.ID,
    )
    assert key == expected


def test_same_passphrase_and_block_give_the_same_key(tmp_path: Path, passphrase_block) -> None:  # type: ignore[no-untyped-def]
    key, block = passphrase_block
    again = resolve_kek(tmp_path, block, env={"AC7_KEK_PASSPHRASE": "correct horse"})
    assert again.key == key
    assert again.source == "AC7_KEK_PASSPHRASE"
    assert again.new_kdf_block is None  # nothing new to record
    assert not (tmp_path / kek_mod.KEY_FILE_NAME).exists()


def test_wrong_passphrase_with_a_stored_block_fails(tmp_path: Path, passphrase_block) -> None:  # type: ignore[no-untyped-def]
    _, block = passphrase_block
    with pytest.raises(KekError, match="AC7_KEK_PASSPHRASE") as exc:
        resolve_kek(tmp_path, block, env={"AC7_KEK_PASSPHRASE": "wrong horse"})
    assert "wrong horse" not in str(exc.value)
    assert "\n" not in str(exc.value)


def test_fresh_blocks_use_fresh_salts(passphrase_block) -> None:  # type: ignore[no-untyped-def]
    key, block = passphrase_block
    key2, block2 = kek_mod.new_kdf_block("correct horse")
    assert block2["salt"] != block["salt"]
    assert key2 != key


def test_key_file_created_0600_with_32_bytes_and_reused(tmp_path: Path, umask) -> None:  # type: ignore[no-untyped-def]
    umask(0)  # the file must be 0600 regardless of a permissive umask
    first = resolve_kek(tmp_path, None, env={})
    path = tmp_path / kek_mod.KEY_FILE_NAME
    assert path.read_bytes() == first.key
    assert len(first.key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.new_kdf_block is None

    before = path.stat()
    second = resolve_kek(tmp_path, None, env={})
    assert second.key == first.key
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [kek_mod.KEY_FILE_NAME]  # no temp files left


def test_key_files_differ_between_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert resolve_kek(tmp_path / "a", None, env={}).key != resolve_kek(tmp_path / "b", None, env={}).key


def test_missing_key_file_without_create_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KekError, match="not found"):
        resolve_kek(tmp_path, None, env={}, create=False)
    assert not (tmp_path / kek_mod.KEY_FILE_NAME).exists()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 44])
def test_wrong_size_key_file_is_an_error(tmp_path: Path, size: int) -> None:
    path = _write_key_file(tmp_path, secrets.token_bytes(size))
    original = path.read_bytes()
    with pytest.raises(KekError, match="32") as exc:
        resolve_kek(tmp_path, None, env={})
    assert str(path) in str(exc.value)
    assert path.read_bytes() == original  # never "repaired" by overwriting


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o700, 0o610])
def test_key_file_accessible_to_others_is_an_error(tmp_path: Path, mode: int) -> None:
    path = _write_key_file(tmp_path, secrets.token_bytes(32))
    path.chmod(mode)
    if mode & 0o077:
        with pytest.raises(KekError, match="chmod 600"):
            resolve_kek(tmp_path, None, env={})
    else:
        assert resolve_kek(tmp_path, None, env={}).key == path.read_bytes()


def test_key_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / kek_mod.KEY_FILE_NAME).mkdir()
    with pytest.raises(KekError, match="not a regular file"):
        resolve_kek(tmp_path, None, env={})


def test_losing_the_key_file_creation_race_uses_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = secrets.token_bytes(32)
    real_create = kek_mod.create_exclusive

    def racing_create(path: Path, data: bytes, mode: int = 0o600) -> None:
        # Another process creates the file between our stat() and our create.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, winner)
        os.close(fd)
        real_create(path, data, mode)

    monkeypatch.setattr(kek_mod, "create_exclusive", racing_create)
    assert resolve_kek(tmp_path, None, env={}).key == winner
    assert (tmp_path / kek_mod.KEY_FILE_NAME).read_bytes() == winner


def test_the_key_is_kept_out_of_repr(tmp_path: Path) -> None:
    resolved = resolve_kek(tmp_path, None, env={"AC7_KEK": STD})
    text = repr(resolved)
    assert repr(KEY) not in text
    assert STD not in text and KEY.hex() not in text
    assert "AC7_KEK" in text
