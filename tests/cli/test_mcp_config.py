"""The session's `.mcp.json` patch: merge, byte-for-byte restore, refusing what it cannot safely edit, and
recovering after a runner that died without restoring (`mcp_config`, `session_dir`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_claude import World

from ac7_cli.runner import session_dir
from ac7_cli.runner.mcp_config import SERVER_KEY, McpConfigPatch, recover_stale, write_private_config
from ac7_core.errors import Ac7Error

ENTRY: dict[str, Any] = {
    "command": "/venv/bin/ac7",
    "args": ["mcp-bridge"],
    "env": {"AC7_RUNNER_SOCKET": "/tmp/ac7-runner-1-x/bridge.sock", "AC7_RUNNER_KEY": "k" * 43},
}
ORIGINAL = b'{"mcpServers":{"db":{"command":"pg-mcp"}},\n\n  "other": [1, 2.50, "\\u00e9"]  }'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def sdir(tmp_path: Path) -> Path:
    path = tmp_path / "session"
    path.mkdir(mode=0o700)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- apply and restore --------------------------------------------------------------------------------------------


def test_merge_keeps_everything_and_restore_is_byte_for_byte(project: Path, sdir: Path) -> None:
    target = project / ".mcp.json"
    target.write_bytes(ORIGINAL)
    target.chmod(0o640)
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    assert patch.existed
    doc = json.loads(target.read_bytes())
    assert doc["mcpServers"] == {"db": {"command": "pg-mcp"}, SERVER_KEY: ENTRY}
    assert doc["other"] == [1, 2.5, "é"]
    assert _mode(target) == 0o600  # it holds the bridge key while patched
    patch.restore()
    assert target.read_bytes() == ORIGINAL
    assert _mode(target) == 0o640
    assert list(sdir.iterdir()) == []  # backup and record gone
    assert sorted(p.name for p in project.iterdir()) == [".mcp.json"]  # no temp files
    patch.restore()  # idempotent
    assert target.read_bytes() == ORIGINAL


def test_a_created_file_is_removed_again(project: Path, sdir: Path) -> None:
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    assert not patch.existed
    assert json.loads((project / ".mcp.json").read_bytes()) == {"mcpServers": {SERVER_KEY: ENTRY}}
    patch.restore()
    assert list(project.iterdir()) == []


def test_an_existing_ac7_server_is_replaced_for_the_session_and_put_back(project: Path, sdir: Path) -> None:
    original = b'{"mcpServers": {"ac7": {"command": "old"}, "x": {"command": "y"}}}'
    (project / ".mcp.json").write_bytes(original)
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    assert json.loads((project / ".mcp.json").read_bytes())["mcpServers"] == {"ac7": ENTRY, "x": {"command": "y"}}
    patch.restore()
    assert (project / ".mcp.json").read_bytes() == original


def test_no_mcp_servers_key_is_added_for_the_session(project: Path, sdir: Path) -> None:
    original = b'{"note": "no servers yet"}'
    (project / ".mcp.json").write_bytes(original)
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    assert json.loads((project / ".mcp.json").read_bytes()) == {"note": "no servers yet", "mcpServers": {"ac7": ENTRY}}
    patch.restore()
    assert (project / ".mcp.json").read_bytes() == original


def test_restore_before_apply_does_nothing(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    McpConfigPatch(project, sdir, ENTRY).restore()
    assert (project / ".mcp.json").read_bytes() == ORIGINAL


def test_a_symlinked_mcp_json_is_still_a_symlink_afterwards(project: Path, sdir: Path, tmp_path: Path) -> None:
    # A shared .mcp.json kept elsewhere (a dotfiles repo) and linked into the project: after the session the link
    # must still be a link to that file, not a private copy that stops following it.
    shared = tmp_path / "shared-mcp.json"
    shared.write_bytes(ORIGINAL)
    (project / ".mcp.json").symlink_to(shared)
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    patch.restore()
    assert (project / ".mcp.json").is_symlink(), "the symlink was replaced by a regular file"
    assert (project / ".mcp.json").resolve() == shared.resolve()
    assert shared.read_bytes() == ORIGINAL


@pytest.mark.parametrize(
    "content",
    [
        b'{"mcpServers": {"db": {"command": "x"}},}',  # trailing comma
        b"",
        b"\xff\xfe not utf-8",
        b"// a comment\n{}",
    ],
    ids=["trailing-comma", "empty", "not-utf8", "comment"],
)
def test_an_invalid_mcp_json_is_refused_and_untouched(project: Path, sdir: Path, content: bytes) -> None:
    (project / ".mcp.json").write_bytes(content)
    patch = McpConfigPatch(project, sdir, ENTRY)
    with pytest.raises(Ac7Error, match=r"refusing to modify .*\.mcp\.json.*not valid JSON"):
        patch.apply()
    assert (project / ".mcp.json").read_bytes() == content
    assert list(sdir.iterdir()) == []
    patch.restore()  # nothing was applied: nothing to undo
    assert (project / ".mcp.json").read_bytes() == content


@pytest.mark.parametrize(
    "content",
    [b'{"mcpServers": []}', b'{"mcpServers": "ac7"}', b'{"mcpServers": null}', b"[]", b'"text"', b"42"],
)
def test_a_non_object_document_or_mcp_servers_is_refused_and_untouched(
    project: Path, sdir: Path, content: bytes
) -> None:
    (project / ".mcp.json").write_bytes(content)
    with pytest.raises(Ac7Error, match="mcpServers object"):
        McpConfigPatch(project, sdir, ENTRY).apply()
    assert (project / ".mcp.json").read_bytes() == content
    assert list(sdir.iterdir()) == []


def test_the_private_config_holds_only_ac7_and_is_0600(sdir: Path) -> None:
    path = write_private_config(sdir, ENTRY)
    assert path.parent == sdir
    assert json.loads(path.read_bytes()) == {"mcpServers": {SERVER_KEY: ENTRY}}
    assert _mode(path) == 0o600


# --- recover_stale: a runner that died while patched ---------------------------------------------------------------


def _die_patched(project: Path, sdir: Path) -> None:
    """What a kill -9'd runner leaves: the patch applied, never restored."""
    McpConfigPatch(project, sdir, ENTRY).apply()


def test_recover_stale_puts_the_original_back(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    (project / ".mcp.json").chmod(0o644)
    _die_patched(project, sdir)
    assert recover_stale(sdir) is True
    assert (project / ".mcp.json").read_bytes() == ORIGINAL
    assert _mode(project / ".mcp.json") == 0o644
    assert recover_stale(sdir) in (False, True)  # a second call never harms
    assert (project / ".mcp.json").read_bytes() == ORIGINAL


def test_recover_stale_removes_a_file_the_dead_runner_created(project: Path, sdir: Path) -> None:
    _die_patched(project, sdir)
    assert recover_stale(sdir) is True
    assert not (project / ".mcp.json").exists()


def test_recover_stale_leaves_a_file_edited_since_alone(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    _die_patched(project, sdir)
    edited = b'{"mcpServers": {}, "edited": true}'
    (project / ".mcp.json").write_bytes(edited)
    assert recover_stale(sdir) is False
    assert (project / ".mcp.json").read_bytes() == edited


def test_recover_stale_does_not_recreate_a_file_deleted_since(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    _die_patched(project, sdir)
    (project / ".mcp.json").unlink()
    assert recover_stale(sdir) is False
    assert not (project / ".mcp.json").exists()


def test_recover_stale_without_a_record_does_nothing(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    assert recover_stale(sdir) is False
    (sdir / "mcp-record.json").write_text("{not json")
    assert recover_stale(sdir) is False
    assert (project / ".mcp.json").read_bytes() == ORIGINAL


def test_recover_stale_after_a_clean_restore_does_nothing(project: Path, sdir: Path) -> None:
    (project / ".mcp.json").write_bytes(ORIGINAL)
    patch = McpConfigPatch(project, sdir, ENTRY)
    patch.apply()
    patch.restore()
    edited = b'{"mcpServers": {"later": {"command": "x"}}}'
    (project / ".mcp.json").write_bytes(edited)
    assert recover_stale(sdir) is False
    assert (project / ".mcp.json").read_bytes() == edited


# --- session_dir.clean_stale: which directories count as stale --------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_stale_recovers_dead_runners_and_keeps_live_ones(tmp_path: Path, project: Path) -> None:
    root = tmp_path / "tmproot"
    root.mkdir()
    (project / ".mcp.json").write_bytes(ORIGINAL)
    dead = root / f"{session_dir.PREFIX}{_dead_pid()}-abc"
    dead.mkdir(mode=0o700)
    _die_patched(project, dead)
    live = session_dir.create(root)  # this process: alive
    other_live = root / f"{session_dir.PREFIX}{os.getppid()}-def"
    other_live.mkdir()
    not_ours = root / f"{session_dir.PREFIX}notapid-x"
    not_ours.mkdir()
    assert session_dir.clean_stale(root) == 1
    assert not dead.exists()
    assert live.exists() and other_live.exists() and not_ours.exists()
    assert (project / ".mcp.json").read_bytes() == ORIGINAL


def test_a_deep_temp_dir_moves_the_session_dir_and_cleanup_looks_there_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    fallback = tmp_path / "short"
    fallback.mkdir()
    monkeypatch.setattr(session_dir, "FALLBACK_ROOT", fallback)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))  # what TMPDIR=<deep> gives gettempdir()
    made = session_dir.create(None)
    assert made.parent == fallback and stat.S_IMODE(made.stat().st_mode) == 0o700
    assert list(deep.iterdir()) == []
    roomy = session_dir.create(tmp_path)  # a short enough root is used as it is
    assert roomy.parent == tmp_path
    dead = fallback / f"{session_dir.PREFIX}{_dead_pid()}-abc"
    dead.mkdir(mode=0o700)
    assert session_dir.clean_stale(tmp_path) == 0  # a named root: only that root
    assert dead.exists()
    assert session_dir.clean_stale(None) == 1  # the system temp dir, and the fallback
    assert not dead.exists() and made.exists()


# --- through the real runner ----------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World.running(tmp_path / "world") as w:
        yield w


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b'{"mcpServers": {,}}', "not valid JSON"), (b'{"mcpServers": ["ac7"]}', "mcpServers object")],
    ids=["invalid-json", "servers-not-an-object"],
)
def test_the_runner_refuses_an_mcp_json_it_cannot_edit_in_one_line(world: World, content: bytes, fragment: str) -> None:
    target = world.project / ".mcp.json"
    target.write_bytes(content)
    run = world.run(fake={"EXIT": "0"})
    assert run.code == 1, str(run)
    assert "Traceback" not in run.err, str(run)
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ac7: refusing to modify"), str(run)
    assert fragment in lines[0]
    assert target.read_bytes() == content
    assert run.record() is None
    assert world.leftovers() == []
