"""The runner's private per-session directory (0700), and cleaning up after runners that were killed."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ac7_cli.runner.bridge_link import SOCKET_NAME, SUN_PATH_MAX
from ac7_cli.runner.mcp_config import recover_stale

log = logging.getLogger("ac7.runner")
PREFIX = "ac7-runner-"


# The bridge's Unix socket lives in the session dir, and sockaddr_un.sun_path holds 107 bytes plus a NUL. A TMPDIR
# nested deeply enough (CI workspaces, macOS's /var/folders/…) leaves no room for it, so the dir moves to /tmp.
_SOCKET_ROOM = len(os.fsencode(f"/{SOCKET_NAME}"))
FALLBACK_ROOT = Path("/tmp")  # noqa: S108 - only for mkdtemp, which makes a random-named 0700 dir


def create(tmp_root: Path | None = None) -> Path:
    # The pid in the name lets a later run tell a live session from a dead one.
    prefix = f"{PREFIX}{os.getpid()}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    if len(os.fsencode(path)) + _SOCKET_ROOM <= SUN_PATH_MAX or not FALLBACK_ROOT.is_dir():
        return path
    path.rmdir()
    short = Path(tempfile.mkdtemp(prefix=prefix, dir=FALLBACK_ROOT))
    log.info("the temp dir is too deep for a Unix socket path; the session dir is %s instead", short)
    return short


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(tmp_root: Path | None = None) -> int:
    """Remove session dirs of runners that no longer run, restoring any .mcp.json they left patched."""
    # The system temp dir, and /tmp where create() may have moved a session dir. A caller that names its own
    # tmp_root (the tests) gets only that root, so it never touches other runs' directories.
    roots = dict.fromkeys([Path(tmp_root or tempfile.gettempdir()), *([FALLBACK_ROOT] if tmp_root is None else [])])
    entries = [entry for root in roots for entry in root.glob(f"{PREFIX}*")]
    removed = 0
    for entry in entries:
        try:
            pid = int(entry.name[len(PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid) or not entry.is_dir() or entry.stat().st_uid != os.getuid():
            continue
        with contextlib.suppress(OSError, KeyError, ValueError):
            recover_stale(entry)
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d session dir(s) left by ended ac7 runners", removed)
    return removed
