"""Crash-safe replacement, exclusive creation, stale-temp cleanup and the inter-process lock."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ac7_core import atomic_file
from ac7_core.atomic_file import create_exclusive, locked, remove_stale_temps, write_atomic
from ac7_core.config_edit import rotate_token
from ac7_core.config_file import load_config, update_config
from ac7_core.tokens import token_matches

CONFIG = (
    "{\n"
    '  "team": {"name": "acme"},\n'
    '  "roles": {"lead": {}},\n'
    '  "slots": [\n'
    '    {"name": "alice", "role": "lead", "authority": "director", "tokenHash": "sha256:' + "a" * 64 + '"},\n'
    '    {"name": "bob", "role": "lead", "token": "ac7_bob-plaintext-token-0123456789"}\n'
    "  ]\n"
    "}\n"
)


def _temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "ac7.json"
    path.write_bytes(b"old contents\n")
    path.chmod(0o600)
    return path


def test_write_atomic_replaces_the_file(target: Path) -> None:
    old_inode = target.stat().st_ino
    write_atomic(target, b"new contents\n")
    assert target.read_bytes() == b"new contents\n"
    assert target.stat().st_ino != old_inode  # replaced by rename, never rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _temps(target.parent) == []


def test_write_atomic_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.json"
    write_atomic(path, b"x" * 200_000)
    assert path.read_bytes() == b"x" * 200_000


def test_temp_file_is_created_exclusively_and_0600(target: Path, monkeypatch: pytest.MonkeyPatch, umask) -> None:  # type: ignore[no-untyped-def]
    umask(0)  # so the creation mode passed to open(2) is exactly what the file gets
    real_open, real_fsync = os.open, os.fsync
    opened: list[dict[str, Any]] = []
    synced: list[tuple[str, int, bytes]] = []

    def spy_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, *args, **kwargs)
        if str(path).endswith(".tmp"):
            opened.append({"path": Path(path), "flags": flags, "mode": stat.S_IMODE(os.fstat(fd).st_mode)})
        return fd

    def spy_fsync(fd: int) -> None:
        st = os.fstat(fd)
        kind = "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
        synced.append((kind, stat.S_IMODE(st.st_mode) if kind == "file" else 0, target.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    write_atomic(target, b"secret stuff")

    assert len(opened) == 1
    temp = opened[0]
    assert temp["path"].parent == target.parent  # same directory, so the rename is atomic
    assert temp["path"].name.startswith(".ac7.json.")
    assert temp["mode"] == 0o600  # never readable by others, not even for an instant
    for flag in (os.O_CREAT, os.O_EXCL, os.O_NOFOLLOW):
        assert temp["flags"] & flag
    # The temp file's data is fsynced before the rename; the directory is fsynced after it.
    assert synced == [("file", 0o600, b"old contents\n"), ("dir", 0, b"secret stuff")]
    assert not temp["path"].exists()


def test_requested_mode_is_exact_despite_the_umask(target: Path, umask) -> None:  # type: ignore[no-untyped-def]
    umask(0o077)
    write_atomic(target, b"public", mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    umask(0)
    write_atomic(target, b"private")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_failed_write_keeps_the_original_and_removes_the_temp(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents\n"
    assert _temps(target.parent) == []


def test_failed_rename_keeps_the_original_and_removes_the_temp(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"new contents")
    assert target.read_bytes() == b"old contents\n"
    assert _temps(target.parent) == []


def test_a_planted_symlink_at_the_temp_name_is_not_followed(
    target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not overwrite")
    monkeypatch.setattr(atomic_file.secrets, "token_hex", lambda n=None: "0" * 12)
    planted = target.with_name(".ac7.json.000000000000.tmp")
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"secret")
    assert victim.read_bytes() == b"do not overwrite"
    assert target.read_bytes() == b"old contents\n"


def test_create_exclusive_creates_0600(tmp_path: Path, umask) -> None:  # type: ignore[no-untyped-def]
    umask(0)
    path = tmp_path / "new.bin"
    create_exclusive(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_nlink == 1  # the temp link is gone
    assert _temps(tmp_path) == []


def test_create_exclusive_refuses_an_existing_file(target: Path) -> None:
    with pytest.raises(FileExistsError):
        create_exclusive(target, b"new contents")
    assert target.read_bytes() == b"old contents\n"
    assert _temps(target.parent) == []


def test_create_exclusive_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        create_exclusive(link, b"data")
    assert not (tmp_path / "nowhere").exists()


def test_remove_stale_temps_only_removes_this_files_temps(tmp_path: Path) -> None:
    path = tmp_path / "ac7.json"
    names = [".ac7.json.abc123.tmp", ".ac7.json.0.tmp", ".other.json.abc.tmp", "ac7.json.bak", ".ac7.json.lock"]
    for name in names:
        (tmp_path / name).write_text("x")
    remove_stale_temps(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_remove_stale_temps_with_glob_characters_in_the_name(tmp_path: Path) -> None:
    # A config called "team[1].json" must clean up its own temps and never another config's.
    path = tmp_path / "team[1].json"
    own = tmp_path / ".team[1].json.abc123.tmp"
    other = tmp_path / ".team1.json.abc123.tmp"  # an in-flight write of a different config, "team1.json"
    own.write_text("x")
    other.write_text("y")
    remove_stale_temps(path)
    assert other.exists()
    assert not own.exists()


# ---- crash between temp write and rename -----------------------------------------------------------------------

CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from ac7_core.config_file import load_config, update_config
from ac7_core.config_edit import rotate_token

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = die
path, key, what = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if what == "rotate":
    update_config(path, lambda d, k: rotate_token(d, "alice"), env={"AC7_KEK": key})
else:
    load_config(path, env={"AC7_KEK": key})
print("survived")
"""


def _crash(path: Path, key: str, what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path), key, what],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "survived" not in proc.stdout


@pytest.mark.parametrize("what", ["rotate", "migrate"])
def test_crash_between_temp_write_and_rename_leaves_the_config_intact(
    tmp_path: Path, kek_env: dict[str, str], what: str
) -> None:
    path = tmp_path / "ac7.json"
    path.write_text(CONFIG, encoding="utf-8")
    path.chmod(0o600)
    if what == "rotate":
        load_config(path, env=kek_env)  # migrate first so only the rotation is pending
    before = path.read_bytes()

    _crash(path, kek_env["AC7_KEK"], what)

    assert path.read_bytes() == before
    stale = _temps(tmp_path)
    assert len(stale) == 1  # the crash really happened after the temp file was written
    assert stat.S_IMODE(stale[0].stat().st_mode) == 0o600
    assert b'"tokenHash"' in stale[0].read_bytes()  # complete new contents, just never renamed
    assert load_config(path, env=kek_env).config.slot("alice") is not None

    # The next successful update (the lock was released by the dead process) removes the stale temp.
    _, token = update_config(path, lambda d, _k: rotate_token(d, "bob"), env=kek_env)
    assert _temps(tmp_path) == []
    bob = load_config(path, env=kek_env).config.slot("bob")
    assert bob is not None and bob.token_hash is not None
    assert token_matches(token, bob.token_hash)


# ---- the lock ---------------------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys
from pathlib import Path
from ac7_core.atomic_file import locked
with locked(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_excludes_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "ac7.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        lock_files = [p for p in tmp_path.iterdir() if p.name != "ac7.json"]
        assert len(lock_files) == 1
        assert stat.S_IMODE(lock_files[0].stat().st_mode) == 0o600
        assert not path.exists()  # the lock lives beside the target, not on it

        fd = os.open(lock_files[0], os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)

        acquired = threading.Event()

        def take() -> None:
            with locked(path):
                acquired.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert not acquired.wait(0.3)
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert acquired.wait(30)
        thread.join(30)
    finally:
        holder.kill()
        holder.wait()


def test_lock_survives_the_target_being_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ac7.json"
    path.write_text("{}")
    with locked(path):
        write_atomic(path, b"{} ")
        (lock_file,) = (p for p in tmp_path.iterdir() if p.name != "ac7.json")
        fd = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
