"""Crash-safe file replacement and an inter-process lock for read-modify-write cycles."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

SECRET_MODE = 0o600


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    tmp = _temp_name(path)
    # O_EXCL + O_NOFOLLOW: never write through a file or symlink someone planted at the temp name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (with odd umasks) the file may need exact bits
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Replace `path` with `data`: readers see the old bytes or the new, never a mix, even after a crash."""
    tmp = _write_temp(path, data, mode)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Write a new file atomically; raise FileExistsError rather than replace an existing one."""
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)  # link(2) fails if the target exists, so two creators cannot both win
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def remove_stale_temps(path: Path) -> None:
    """Delete temp files a crashed writer left beside `path`. Call only while holding `locked(path)`."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock for `path` across processes.

    The lock lives on a sibling file: the target itself is replaced by rename, so a lock on its inode would
    stop protecting anything the moment the first writer finished.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, SECRET_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
