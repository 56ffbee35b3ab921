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
        self._applied = False

    @property
    def existed(self) -> bool:
        return self._original is not None

    def apply(self) -> None:
        try:
            original = self.target.read_bytes()
            self._original_mode = self.target.stat().st_mode & 0o777
        except FileNotFoundError:
            original = None
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
        record = {
            "target": str(self.target.resolve()),
            "existed": original is not None,
            "mode": self._original_mode,
            "written": _digest(patched),
            "pid": os.getpid(),
        }
        write_atomic(self.session_dir / _RECORD, json.dumps(record).encode("utf-8"))
        # 0600 while patched: the entry carries the key the bridge uses to talk to this runner.
        write_atomic(self.target, patched, mode=0o600)
        self._applied = True

    def restore(self) -> None:
        """Put the original bytes back (or remove the file we created). Idempotent."""
        if not self._applied:
            return
        _put_back(self.target, self._original, self._original_mode)
        self._applied = False
        for name in (_BACKUP, _RECORD):
            (self.session_dir / name).unlink(missing_ok=True)


def _put_back(target: Path, original: bytes | None, mode: int | None) -> None:
    if original is None:
        target.unlink(missing_ok=True)
    else:
        write_atomic(target, original, mode=mode if mode is not None else 0o644)


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
    _put_back(target, original, record.get("mode"))
    log.warning("restored %s left patched by a crashed ac7 session", target)
    return True
