"""Adding ac7's MCP server to the project's `.mcp.json` for one session, and putting the file back exactly.

The original bytes are kept in memory and in a backup file in the session's private directory, with a small
record of what we wrote. If a runner dies without restoring (kill -9), the next run finds the record and puts
the original back, provided nobody has edited the file since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ac7_core.atomic_file import write_atomic
from ac7_core.errors import Ac7Error

log = logging.getLogger("ac7.runner")

SERVER_KEY = "ac7"  # Claude Code names the tools mcp__ac7__<tool>
MCP_FILE = ".mcp.json"
_RECORD = "mcp-record.json"
_BACKUP = "mcp.json.bak"


def write_private_config(session_dir: Path, entry: dict[str, Any]) -> Path:
    """A config holding only ac7's server, for `claude --mcp-config`.

    Claude Code does not start a project `.mcp.json` server until the user approves it (and never in `-p`
    mode), so the runner names ac7's server explicitly. A file of its own, rather than the project's, means
    no other server in the repository's `.mcp.json` gets enabled without the user's approval.
    """
    path = session_dir / "mcp-ac7.json"
    write_atomic(path, json.dumps({"mcpServers": {SERVER_KEY: entry}}).encode("utf-8"))  # 0600: holds the key
    return path


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class McpConfigPatch:
    def __init__(self, project_dir: Path, session_dir: Path, entry: dict[str, Any]) -> None:
        self.target = project_dir / MCP_FILE
        self.session_dir = session_dir
        self.entry = entry
        self._original: bytes | None = None
        self._original_mode: int | None = None
        self._link: str | None = None
        self._written = ""
        self._applied = False

    @property
    def existed(self) -> bool:
        return self._original is not None

    def apply(self) -> None:
        self._link = str(self.target.readlink()) if self.target.is_symlink() else None
        try:
            original = self.target.read_bytes()
            self._original_mode = self.target.stat().st_mode & 0o777
        except FileNotFoundError:
            original = None
        live = _live_patch(self.target, original, self.session_dir)
        if live is not None:
            # Another runner is in this project right now and the file holds its patch: the real original is the
            # one it saved, so that is what we must put back if we are the last to leave.
            original, self._original_mode, self._link = live
        doc: dict[str, Any] = {}
        if original is not None:
            try:
                parsed = json.loads(original)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise Ac7Error(f"refusing to modify {self.target}: it is not valid JSON ({exc})") from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("mcpServers", {}), dict):
                raise Ac7Error(f"refusing to modify {self.target}: expected a JSON object with an mcpServers object")
            doc = parsed
        self._original = original
        servers = dict(doc.get("mcpServers", {}))
        servers[SERVER_KEY] = self.entry
        doc["mcpServers"] = servers
        patched = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        # Backup and record first: if we die after the write below, the next run can still undo it.
        if original is not None:
            write_atomic(self.session_dir / _BACKUP, original)
        self._written = _digest(patched)
        record = {
            "target": str(self.target.absolute()),
            "existed": original is not None,
            "mode": self._original_mode,
            "link": self._link,
            "written": self._written,
            "pid": os.getpid(),
        }
        write_atomic(self.session_dir / _RECORD, json.dumps(record).encode("utf-8"))
        # 0600 while patched: the entry carries the key the bridge uses to talk to this runner. Replacing a symlink
        # (rather than writing through it) leaves the file it points to untouched.
        write_atomic(self.target, patched, mode=0o600)
        self._applied = True

    def restore(self) -> None:
        """Put the original bytes back (or remove the file we created). Idempotent."""
        if not self._applied:
            return
        self._applied = False
        try:
            current = self.target.read_bytes()
        except FileNotFoundError:
            current = None
        # If the file is not what we wrote, someone (another runner, the user) has replaced it since: leave it.
        if current is not None and _digest(current) == self._written:
            _put_back(self.target, self._original, self._original_mode, self._link)
        for name in (_BACKUP, _RECORD):
            (self.session_dir / name).unlink(missing_ok=True)


def _put_back(target: Path, original: bytes | None, mode: int | None, link: str | None = None) -> None:
    if link is not None:
        tmp = target.with_name(f".{target.name}.ac7-link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(link)
        tmp.replace(target)
    elif original is None:
        target.unlink(missing_ok=True)
    else:
        write_atomic(target, original, mode=mode if mode is not None else 0o644)


def _live_patch(
    target: Path, current: bytes | None, own_dir: Path
) -> tuple[bytes | None, int | None, str | None] | None:
    """The original saved by a live runner whose patch `target` holds now, if there is one."""
    if current is None:
        return None
    digest = _digest(current)
    for record_path in own_dir.parent.glob("ac7-runner-*/" + _RECORD):
        if record_path.parent == own_dir:
            continue
        try:
            record = json.loads(record_path.read_text())
            if record.get("written") != digest or Path(record["target"]) != target.absolute():
                continue
            original = (record_path.parent / _BACKUP).read_bytes() if record.get("existed") else None
        except (OSError, ValueError, KeyError):
            continue
        return original, record.get("mode"), record.get("link")
    return None


def recover_stale(session_dir: Path) -> bool:
    """Undo the patch recorded in a dead runner's session dir. Returns True if the file was put back."""
    try:
        record = json.loads((session_dir / _RECORD).read_text())
    except (OSError, ValueError):
        return False
    target = Path(record["target"])
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    if current is None or _digest(current) != record.get("written"):
        log.warning("%s changed since a crashed ac7 session patched it; leaving it as it is", target)
        return False
    original = (session_dir / _BACKUP).read_bytes() if record.get("existed") else None
    _put_back(target, original, record.get("mode"), record.get("link"))
    log.warning("restored %s left patched by a crashed ac7 session", target)
    return True
