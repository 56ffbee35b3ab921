"""`ac7 claude-code` sessions end to end with the fake claude: what a kill -9'd runner leaves and the next run
cleans, what a concurrent live runner keeps, briefing failures, and which `--trace-host` values are accepted."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fake_claude import ORIGINAL_MCP, Run, World, flag_values, free_port

pytestmark = pytest.mark.slow

EDITED_MCP = b'{"mcpServers": {"mine": {"command": "my-server"}}, "edited": "after the crash"}\n'


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World.running(tmp_path) as w:
        yield w


def _session_dirs(record: dict[str, Any]) -> tuple[str, str]:
    """(CA dir, session dir) names of the runner that started this fake claude."""
    ca_dir = Path(record["node_extra_ca_certs"]["path"]).parent.name
    session_dir = Path(flag_values(record["argv"], "--mcp-config")[0]).parent.name
    return ca_dir, session_dir


def _ac7_entry(mcp_json_text: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(mcp_json_text)["mcpServers"]["ac7"]
    return entry


def _crash_a_runner(world: World) -> tuple[Run, dict[str, Any]]:
    """Start a session and kill -9 the runner while claude sleeps; then end the orphaned claude too."""
    run = world.start(fake={"SLEEP": "1"})
    record = run.wait_record()
    run.proc.send_signal(signal.SIGKILL)
    assert run.wait() == -9
    run.kill_child()
    return run, record


def assert_one_line_error(run: Run, *fragments: str) -> str:
    assert "Traceback" not in run.err, str(run)
    assert run.code == 1, str(run)
    lines = run.err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line\n{run}"
    assert lines[0].startswith("ac7: "), str(run)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_untouched(world: World, run: Run, original: bytes = ORIGINAL_MCP) -> None:
    assert (world.project / ".mcp.json").read_bytes() == original, str(run)
    assert world.leftovers() == [], world.leftovers()
    assert run.record() is None, "claude was started"


# --- stale state from a runner that was kill -9'd ------------------------------------------------------------------


def test_the_next_run_cleans_up_after_a_kill_9d_runner(world: World) -> None:
    crashed, old = _crash_a_runner(world)
    old_ca, old_session = _session_dirs(old)
    # What kill -9 leaves: the patched file, the CA directory (public certificate only) and the session dir.
    assert (world.project / ".mcp.json").read_bytes() != ORIGINAL_MCP
    assert "ac7" in json.loads((world.project / ".mcp.json").read_bytes())["mcpServers"]
    assert {old_ca, old_session} <= set(world.leftovers()), world.leftovers()
    assert old_ca.startswith(f"ac7-ca-{crashed.pid}-") and old_session.startswith(f"ac7-runner-{crashed.pid}-")

    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    new = run.record()
    assert new is not None
    # While the new session ran, the crashed runner's directories were already gone ...
    assert old_ca not in new["tmpdir"] and old_session not in new["tmpdir"], new["tmpdir"]
    # ... and .mcp.json had been restored before this session patched it: the user's servers, plus exactly this
    # session's ac7 entry (were the crashed session's patch taken for the original, it would be restored below).
    during = json.loads(new["mcp_json"]["text"])
    assert set(during["mcpServers"]) == {"other", "ac7"}
    assert during["x-note"] == "keep me"
    new_session = _session_dirs(new)[1]
    assert Path(_ac7_entry(new["mcp_json"]["text"])["env"]["AC7_RUNNER_SOCKET"]).parent.name == new_session
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP, str(run)
    assert world.leftovers() == []


def test_a_kill_9d_runner_that_created_mcp_json_leaves_none_after_the_next_run(world: World) -> None:
    (world.project / ".mcp.json").unlink()
    _crash_a_runner(world)
    assert (world.project / ".mcp.json").exists()
    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    assert not (world.project / ".mcp.json").exists(), str(run)
    assert world.leftovers() == []


def test_an_mcp_json_edited_after_the_crash_is_left_as_the_user_wrote_it(world: World) -> None:
    _, old = _crash_a_runner(world)
    old_ca, old_session = _session_dirs(old)
    (world.project / ".mcp.json").write_bytes(EDITED_MCP)  # the user fixes things up by hand

    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    new = run.record()
    assert new is not None
    assert old_ca not in new["tmpdir"] and old_session not in new["tmpdir"]
    during = json.loads(new["mcp_json"]["text"])
    assert during["edited"] == "after the crash" and set(during["mcpServers"]) == {"mine", "ac7"}
    assert (world.project / ".mcp.json").read_bytes() == EDITED_MCP, str(run)
    assert world.leftovers() == []


def test_a_live_runners_state_is_not_mistaken_for_stale(world: World) -> None:
    first = world.start(agent="dan", fake={"SLEEP": "1"})
    live = first.wait_record()
    live_ca, live_session = _session_dirs(live)

    second = world.run(agent="ivy", fake={"EXIT": "0"})
    assert second.code == 0, str(second)
    listing = second.record()["tmpdir"]  # type: ignore[index]
    assert live_ca in listing and live_session in listing
    # The first session still has its CA file, its bridge socket and its .mcp.json entry.
    assert Path(live["node_extra_ca_certs"]["path"]).exists()
    assert Path(live["runner_socket"]["path"]).exists()
    assert {live_ca, live_session} == set(world.leftovers())

    first.send(signal.SIGTERM)
    assert first.wait() == 128 + 15, str(first)
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert world.leftovers() == []


# --- the briefing ----------------------------------------------------------------------------------------------------


def test_no_broker_is_one_line_with_the_hint_and_touches_nothing(world: World) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = world.run("--skip-doctor", extra_env={"AC7_URL": url}, fake={"EXIT": "0"})
    assert_one_line_error(run, "is `ac7 serve` running", url)
    assert_untouched(world, run)


def test_a_rejected_token_is_one_line_naming_401_and_touches_nothing(world: World) -> None:
    wrong = "ac7_" + "A" * 43
    run = world.run("--skip-doctor", extra_env={"AC7_TOKEN": wrong}, fake={"EXIT": "0"})
    line = assert_one_line_error(run, "401")
    assert wrong not in line
    assert_untouched(world, run)


def test_the_briefing_reaches_claude_as_its_system_prompt(world: World) -> None:
    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    briefing = world.briefing("ivy")
    assert flag_values(record["argv"], "--append-system-prompt") == [briefing["instructions"]]
    assert "Ship the billing service" in briefing["instructions"]


# --- --trace-host ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["com", "COM", "com.", " org "])
def test_a_top_level_trace_host_is_refused(world: World, host: str) -> None:
    run = world.run("--trace-host", "example.com", "--trace-host", host, fake={"EXIT": "0"})
    assert_one_line_error(run, "--trace-host")
    assert_untouched(world, run)


@pytest.mark.parametrize("host", ["*.example.com", ".com", "exa mple.com"])
def test_a_trace_host_that_is_not_a_host_is_one_line_not_a_traceback(world: World, host: str) -> None:
    run = world.run("--trace-host", host, fake={"EXIT": "0"})
    assert_one_line_error(run)
    assert_untouched(world, run)


def _ca_permits(record: dict[str, Any]) -> set[str]:
    cert = x509.load_pem_x509_certificate(record["node_extra_ca_certs"]["text"].encode())
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    return {str(name.value) for name in constraints.permitted_subtrees or []}


def test_a_trace_host_domain_is_traced_and_in_the_ca_constraints(world: World) -> None:
    run = world.run("--trace-host", "example.com", fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    assert "example.com" in _ca_permits(run.record())  # type: ignore[arg-type]
    assert "example.com" in next(line for line in run.err.splitlines() if "tracing" in line)


@pytest.mark.parametrize(("host", "base"), [("localhost", "localhost"), ("127.0.0.1", "127.0.0.1")])
def test_a_trace_host_localhost_or_ip_is_accepted_and_traced(world: World, host: str, base: str) -> None:
    # ANTHROPIC_BASE_URL unset: only --trace-host puts the fake API's host in scope, so the request reaching the
    # broker as an llm_exchange shows the flag took effect.
    marker = f"trace-host-{uuid.uuid4().hex}"
    api = world.api.url.replace("localhost", base)
    run = world.run(
        "--trace-host",
        host,
        extra_env={"ANTHROPIC_BASE_URL": None},
        fake={"REQUEST": api, "MARKER": marker, "EXIT": "0"},
    )
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    assert record["request"].get("status") == 200, record["request"]
    assert host in _ca_permits(record) or any(host in p for p in _ca_permits(record))
    assert len(world.exchanges_with(marker)) == 1, str(run)


def test_without_a_trace_host_the_fake_api_is_a_blind_tunnel(world: World) -> None:
    # The counterpart of the test above: localhost not in scope, so the proxy relays the TLS bytes untouched;
    # the fake claude (trusting only the session CA) then refuses the fake API's own certificate.
    run = world.run(extra_env={"ANTHROPIC_BASE_URL": None}, fake={"REQUEST": world.api.url, "EXIT": "0"})
    assert run.code == 0, str(run)
    assert "CERTIFICATE_VERIFY_FAILED" in run.record()["request"]["error"]  # type: ignore[index]
    assert world.activity() == []


def test_ipv6_loopback_trace_host_is_accepted(world: World) -> None:
    run = world.run("--trace-host", "::1", fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    assert "::1" in next(line for line in run.err.splitlines() if "tracing" in line)


def test_a_tmpdir_too_deep_for_the_bridge_socket_moves_the_session_dir_to_tmp(world: World) -> None:
    """The bridge socket lives in the session dir; under a TMPDIR too deep for sun_path (107 bytes) the session dir
    moves to /tmp, the agent still gets its team tools, and nothing is left anywhere afterwards."""
    deep = world.root / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    run = world.run(extra_env={"TMPDIR": str(deep)}, fake={"MCP": "1", "EXIT": "0"})
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    mcp = record["mcp"]
    assert "error" not in mcp and set(mcp["tools"]) == {"roster", "send", "broadcast", "recent"}, f"{mcp}\n{run}"
    (private,) = record["mcp_configs"]
    socket_path = Path(json.loads(private["text"])["mcpServers"]["ac7"]["env"]["AC7_RUNNER_SOCKET"])
    assert socket_path.parent.parent == Path("/tmp") and socket_path.parent.name.startswith("ac7-runner-")
    assert len(os.fsencode(socket_path)) <= 107
    assert record["node_extra_ca_certs"]["path"].startswith(str(deep))  # only the session dir moved
    assert not socket_path.parent.exists()
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert list(deep.iterdir()) == [], list(deep.iterdir())
