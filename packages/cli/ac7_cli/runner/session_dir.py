"""The runner's private per-session directory (0700), and cleaning up after runners that were killed."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ac7_cli.runner.mcp_config import recover_stale

log = logging.getLogger("ac7.runner")
PREFIX = "ac7-runner-"


def create(tmp_root: Path | None = None) -> Path:
    # The pid in the name lets a later run tell a live session from a dead one.
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=tmp_root))


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
    root = Path(tmp_root or tempfile.gettempdir())
    removed = 0
    for entry in root.glob(f"{PREFIX}*"):
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
