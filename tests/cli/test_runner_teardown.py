"""`ac7 claude-code` tears everything down on every exit path (DESIGN §6).

The real runner runs as a subprocess against a real broker, with the fake claude (tests/cli/fake_claude.py) as the
agent, a project holding a hand-formatted `.mcp.json`, and TMPDIR pointed at a test directory. After each path:
`.mcp.json` is byte-identical (or absent again), nothing `ac7-*` is left in TMPDIR, the broker shows the agent not
busy (the fake claims busy itself in a session with no traced request, so only the runner's teardown can clear
it), and a traced request the fake made just before the end reached the broker as activity (the uploader was
flushed at teardown).
"""

from __future__ import annotations

import json
import re
import signal
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_claude import ORIGINAL_MCP, TIMEOUT, Run, World, messages_request

pytestmark = pytest.mark.slow

# A frame of the runner's own code in a traceback (the fake claude's traceback, when it raises, is its own).
RUNNER_FRAME = re.compile(r'File "[^"]*(?:ac7_cli|ac7_core|site-packages|lib/python3)')


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World.running(tmp_path) as w:
        yield w


def _marker() -> str:
    return f"teardown-marker-{uuid.uuid4().hex}"


def assert_torn_down(world: World, run: Run, *, original: bytes | None = ORIGINAL_MCP, agent: str = "ivy") -> None:
    assert not RUNNER_FRAME.search(run.err), f"the runner printed a traceback\n{run}"
    target = world.project / ".mcp.json"
    if original is None:
        assert not target.exists(), f".mcp.json was created and never removed\n{run}"
    else:
        assert target.read_bytes() == original, f".mcp.json not restored byte for byte\n{run}"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644, "the file mode was not restored"
    assert world.leftovers() == [], f"left in TMPDIR: {world.leftovers()}\n{run}"
    assert not list(world.project.glob(".mcp.json.*")), list(world.project.iterdir())  # no temp files
    assert world.busy(agent) is False, f"the broker still shows {agent} busy after teardown\n{run}"
    assert not run.child_alive(), "the fake claude outlived the runner"


def assert_traced(world: World, run: Run, marker: str, agent: str = "ivy") -> None:
    record = run.record()
    assert record is not None
    assert record["request"].get("status") == 200 and record["request"]["complete"], record["request"]
    # The runner has exited: the event is in the broker now, or at best in the spool for a later run; no waiting.
    events = world.exchanges_with(marker, agent)
    assert len(events) == 1, f"the traced request is not in the broker's activity\n{run}"
    entry = events[0]["entry"]
    assert entry["response"]["stopReason"] == "end_turn"
    assert entry["truncated"] is False


@pytest.fixture(autouse=True)
def _original_mode(world: World) -> None:
    (world.project / ".mcp.json").chmod(0o644)


# --- the child exits by itself -----------------------------------------------------------------------------------


def test_child_exit_0_is_the_runners_and_the_last_trace_is_flushed(world: World) -> None:
    # The request is the fake's last act before exiting, so its trace is still in the uploader (batched for up to
    # 500 ms) when teardown starts: only the flush at teardown gets it to the broker.
    marker = _marker()
    run = world.run(fake={**world.request_vars(marker), "EXIT": "0"})
    assert run.code == 0, str(run)
    assert_traced(world, run, marker)
    assert_torn_down(world, run)


def test_child_exit_7_is_the_runners_and_busy_is_cleared(world: World) -> None:
    # No traced request in this session, so nothing but the runner's teardown reports on busy: the fake claude's
    # own claim stays until then.
    run = world.run(fake={**world.busy_vars(), "EXIT": "7"})
    assert run.code == 7, str(run)
    assert run.record()["busy"] == {"after": True}  # type: ignore[index]
    assert_torn_down(world, run)


@pytest.mark.parametrize(
    ("fake", "code"),
    [({"RAISE": "1"}, 1), ({"DIE": "SIGKILL"}, 128 + 9), ({"DIE": "SIGABRT"}, 128 + 6)],
    ids=["raises", "killed", "aborts"],
)
def test_child_crash_is_the_runners_exit_code(world: World, fake: dict[str, str], code: int) -> None:
    run = world.run(fake={**world.busy_vars(), **fake})
    assert run.code == code, str(run)
    assert_torn_down(world, run)


def test_child_exit_without_an_mcp_json_removes_the_one_created(world: World) -> None:
    (world.project / ".mcp.json").unlink()
    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    during = run.record()["mcp_json"]  # type: ignore[index]
    assert during["exists"] and "ac7" in json.loads(during["text"])["mcpServers"]
    assert_torn_down(world, run, original=None)


# --- signals to the runner -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "on_signal", "code"),
    [
        (signal.SIGTERM, "die", 128 + 15),
        (signal.SIGTERM, "exit:0", 0),
        (signal.SIGINT, "die", 128 + 2),
        (signal.SIGINT, "exit:3", 3),
        (signal.SIGHUP, "die", 128 + 1),
        (signal.SIGHUP, "exit:5", 5),
    ],
    ids=["TERM-dies", "TERM-exits-0", "INT-dies", "INT-exits-3", "HUP-dies", "HUP-exits-5"],
)
def test_a_signal_to_the_runner_reaches_claude_and_everything_is_torn_down(
    world: World, sig: signal.Signals, on_signal: str, code: int
) -> None:
    run = world.start(fake={**world.busy_vars(), "SLEEP": "1", "ON_SIGNAL": on_signal})
    record = run.wait_record()
    assert record["busy"] == {"after": True}, str(run)
    assert record["mcp_json"]["text"].encode() != ORIGINAL_MCP  # patched while claude runs
    assert run.running()
    run.send(sig)  # the runner alone, as `kill -TERM <pid>` would (no terminal: SIGINT must be forwarded too)
    assert run.wait() == code, str(run)
    assert [s["signal"] for s in run.signals()] == [int(sig)], f"claude should hear {sig.name} exactly once\n{run}"
    assert_torn_down(world, run)


def test_sigterm_right_after_a_traced_request_flushes_its_trace(world: World) -> None:
    # The signal follows the request as soon as the fake claude has recorded it, well inside the uploader's
    # batching delay: the trace reaches the broker only if teardown flushes.
    marker = _marker()
    run = world.start(fake={**world.request_vars(marker), "SLEEP": "1"})
    run.wait_record()
    run.send(signal.SIGTERM)
    assert run.wait() == 128 + 15, str(run)
    assert [s["signal"] for s in run.signals()] == [int(signal.SIGTERM)]
    assert_traced(world, run, marker)
    assert_torn_down(world, run)


def test_sigterm_without_an_mcp_json_removes_the_one_created(world: World) -> None:
    (world.project / ".mcp.json").unlink()
    run = world.start(fake={**world.busy_vars(), "SLEEP": "1"})
    run.wait_record()
    run.send(signal.SIGTERM)
    assert run.wait() == 128 + 15, str(run)
    assert_torn_down(world, run, original=None)


# --- an exception in the runner after .mcp.json was patched --------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"#!/nonexistent/interpreter\necho hi\n", b"\x7fELF\x02\x01\x01 this is no program\n"],
    ids=["bad-interpreter", "not-a-program"],
)
def test_an_exception_after_the_patch_is_one_line_and_tears_down(world: World, content: bytes) -> None:
    # The doctor accepts the file (it exists and is executable); starting it fails in the runner, after the
    # trace host, the bridge link, presence and the .mcp.json patch are all up.
    broken = world.root / "broken" / "claude"
    broken.parent.mkdir()
    broken.write_bytes(content)
    broken.chmod(0o755)
    world.set_busy("ivy")  # as if an LLM call were in flight: teardown must still report not busy
    run = world.run(extra_env={"CLAUDE_PATH": str(broken)})
    assert run.code == 1, str(run)
    assert "merged the 'ac7' MCP server" in run.err, "the failure should come after the patch\n" + str(run)
    lines = run.err.strip().splitlines()
    assert lines[-1].startswith("ac7: cannot start"), str(run)
    assert str(broken) in lines[-1]
    assert run.record() is None
    assert_torn_down(world, run)


# --- two runners in one project -------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_to_end", ["first-started", "last-started"])
def test_two_overlapping_runners_in_one_project_leave_mcp_json_as_it_was(world: World, first_to_end: str) -> None:
    # Two agents of the team working in one checkout: their sessions overlap. Whichever ends first, once both
    # have ended the project's .mcp.json must be the user's file again (never one runner's patch, which holds
    # a dead socket path and that runner's bridge key).
    a = world.start(agent="ivy", fake={"SLEEP": "1"})
    a.wait_record()
    b = world.start(agent="dan", fake={"SLEEP": "1"})
    b.wait_record()
    order = [a, b] if first_to_end == "first-started" else [b, a]
    for run in order:
        run.send(signal.SIGTERM)
        assert run.wait() == 128 + 15, str(run)
    final = (world.project / ".mcp.json").read_bytes()
    assert final == ORIGINAL_MCP, f"left behind:\n{final.decode()}\n{a}\n{b}"
    assert world.leftovers() == []


# --- a second signal while teardown is still flushing ---------------------------------------------------------------


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_a_second_signal_during_a_slow_teardown_still_tears_down(world: World, second: signal.Signals) -> None:
    # The broker goes away mid-session, so at teardown the uploader keeps retrying a trace until its deadline:
    # exit takes seconds, and a user (or a supervisor) signals again. Teardown must still finish: claude's exit
    # code, nothing left in TMPDIR, and the trace kept in the spool for the next run rather than lost.
    run = world.start(fake={"SLEEP": "1"})
    record = run.wait_record()
    world.stop_broker()
    marker = _marker()
    context = ssl.create_default_context(cafile=record["env"]["NODE_EXTRA_CA_CERTS"])
    answer = messages_request(world.api.url, marker, context, {"https": record["env"]["HTTPS_PROXY"]})
    assert answer.get("status") == 200, answer  # traced; its upload now has nowhere to go
    run.send(signal.SIGTERM)
    deadline = time.monotonic() + TIMEOUT
    while run.running() and (world.project / ".mcp.json").read_bytes() != ORIGINAL_MCP:
        assert time.monotonic() < deadline, str(run)
        time.sleep(0.02)
    run.send(second)  # teardown has begun (.mcp.json is back) and is waiting on the unreachable broker
    assert run.wait() == 128 + 15, str(run)
    assert not RUNNER_FRAME.search(run.err), str(run)
    assert world.leftovers() == [], f"left in TMPDIR: {world.leftovers()}\n{run}"
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert marker in world.spooled(), f"the trace was lost\n{run}"
