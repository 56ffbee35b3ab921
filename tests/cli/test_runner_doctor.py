"""`ac7 claude-code --doctor` and the silent preflight before every run (DESIGN §6 "Doctor")."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fake_claude import ORIGINAL_MCP, Run, World, free_port

from ac7_cli.runner.doctor import Check, report, run_checks

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\[(PASS|WARN|FAIL)\] (\S.*?) — (\S.*)$")
# What each check is about (DESIGN §6), by a word its name carries.
TOPICS = ("claude", "temp", "loopback", "CA", "broker", "TLS", "user")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World.running(tmp_path) as w:
        yield w


def parse(run: Run) -> dict[str, tuple[str, str]]:
    """{check name: (status, detail)} from `--doctor` output, asserting its shape."""
    lines = run.out.rstrip("\n").split("\n")
    assert lines[-1] in ("doctor: OK", "doctor: FAIL"), str(run)
    assert lines[-2] == "", str(run)
    checks: dict[str, tuple[str, str]] = {}
    for line in lines[:-2]:
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}\n{run}"
        checks[match.group(2)] = (match.group(1), match.group(3))
    for topic in TOPICS:
        assert any(topic.lower() in name.lower() for name in checks), f"no {topic} check in {list(checks)}"
    return checks


def status_of(checks: dict[str, tuple[str, str]], topic: str) -> tuple[str, str]:
    (found,) = [v for k, v in checks.items() if topic.lower() in k.lower()]
    return found


def doctor(world: World, *args: str, **kw: Any) -> Run:
    run = world.run("--doctor", *args, fake={"EXIT": "0"}, upstream_ca=False, **kw)
    assert "Traceback" not in run.err, str(run)
    # The doctor only looks: it starts nothing and changes nothing.
    assert run.record() is None
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert world.leftovers() == []
    return run


def test_all_pass(world: World) -> None:
    run = doctor(world)
    assert run.code == 0, str(run)
    checks = parse(run)
    assert {s for s, _ in checks.values()} == {"PASS"}, checks
    assert run.out.rstrip().endswith("doctor: OK")
    assert status_of(checks, "claude")[1] == str(world.claude)
    assert "ivy" in status_of(checks, "broker")[1]


def test_no_claude_binary_fails(world: World) -> None:
    empty = world.root / "empty-bin"
    empty.mkdir()
    run = doctor(world, extra_env={"CLAUDE_PATH": None, "PATH": str(empty)})
    assert run.code == 1, str(run)
    checks = parse(run)
    assert status_of(checks, "claude")[0] == "FAIL"
    assert run.out.rstrip().endswith("doctor: FAIL")


def test_a_claude_path_that_is_not_executable_fails(world: World) -> None:
    plain = world.root / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    run = doctor(world, extra_env={"CLAUDE_PATH": str(plain)})
    assert run.code == 1, str(run)
    status, detail = status_of(parse(run), "claude")
    assert status == "FAIL" and "CLAUDE_PATH" in detail


def test_an_unreachable_broker_fails(world: World) -> None:
    run = doctor(world, extra_env={"AC7_URL": f"http://127.0.0.1:{free_port()}"})
    assert run.code == 1, str(run)
    checks = parse(run)
    assert status_of(checks, "broker")[0] == "FAIL"
    assert status_of(checks, "claude")[0] == "PASS"  # one failure does not hide the other checks


def test_a_rejected_token_fails_naming_401(world: World) -> None:
    run = doctor(world, extra_env={"AC7_TOKEN": "ac7_" + "B" * 43})
    assert run.code == 1, str(run)
    status, detail = status_of(parse(run), "broker")
    assert status == "FAIL" and "401" in detail
    assert "B" * 43 not in run.out


def test_no_token_fails(world: World) -> None:
    run = doctor(world, agent=None)
    assert run.code == 1, str(run)
    assert status_of(parse(run), "broker")[0] == "FAIL"


def test_unsafe_tls_is_a_warning_not_a_failure(world: World) -> None:
    run = doctor(world, "--unsafe-tls")
    assert run.code == 0, str(run)
    checks = parse(run)
    assert status_of(checks, "TLS")[0] == "WARN"
    assert run.out.rstrip().endswith("doctor: OK")


def test_node_tls_reject_unauthorized_0_in_the_environment_is_a_warning(world: World) -> None:
    run = doctor(world, extra_env={"NODE_TLS_REJECT_UNAUTHORIZED": "0"})
    assert run.code == 0, str(run)
    assert status_of(parse(run), "TLS")[0] == "WARN"


# --- root, in process (the runner's euid cannot be faked from outside) --------------------------------------------


def _user_check(checks: list[Check]) -> Check:
    (check,) = [c for c in checks if "user" in c.name.lower()]
    return check


def test_root_without_is_sandbox_warns(world: World) -> None:
    env = {"CLAUDE_PATH": str(world.claude)}
    checks = run_checks(world.url, world.tokens["ivy"], env=env, geteuid=lambda: 0)
    user = _user_check(checks)
    assert user.status == "WARN"
    assert "IS_SANDBOX" in user.detail
    assert "[WARN]" in report(checks) and report(checks).endswith("doctor: OK")


@pytest.mark.parametrize(("euid", "sandbox"), [(0, "1"), (1000, None)], ids=["root-in-sandbox", "not-root"])
def test_root_in_a_sandbox_or_not_root_passes(world: World, euid: int, sandbox: str | None) -> None:
    env = {"CLAUDE_PATH": str(world.claude), **({"IS_SANDBOX": sandbox} if sandbox else {})}
    checks = run_checks(world.url, world.tokens["ivy"], env=env, geteuid=lambda: euid)
    assert _user_check(checks).status == "PASS"
    assert {c.status for c in checks} == {"PASS"}, report(checks)


def test_root_in_the_cli_output(world: World) -> None:
    # The tests may or may not run as root; without IS_SANDBOX the user check is WARN exactly when they do.
    run = doctor(world, extra_env={"IS_SANDBOX": None})
    assert run.code == 0, str(run)
    assert status_of(parse(run), "user")[0] == ("WARN" if os.geteuid() == 0 else "PASS")


# --- the silent preflight before a run -----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["no-claude", "bad-token", "no-broker"])
def test_a_failed_preflight_stops_the_run_before_anything_is_touched(world: World, failure: str) -> None:
    broken = world.root / "not-executable"
    broken.write_text("#!/bin/sh\n")
    extra: Mapping[str, str | None] = {
        "no-claude": {"CLAUDE_PATH": str(broken)},
        "bad-token": {"AC7_TOKEN": "ac7_" + "C" * 43},
        "no-broker": {"AC7_URL": f"http://127.0.0.1:{free_port()}"},
    }[failure]
    run = world.run(extra_env=extra, fake={"EXIT": "0"})
    assert run.code == 1, str(run)
    assert "Traceback" not in run.err, str(run)
    assert run.out == ""
    lines = run.err.rstrip("\n").split("\n")
    assert lines[-1].startswith("ac7: preflight failed"), str(run)
    assert any(line.startswith("[FAIL] ") for line in lines), "the report goes to stderr\n" + str(run)
    assert "doctor: FAIL" in lines
    assert run.record() is None
    assert (world.project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert world.leftovers() == []


def test_a_passing_preflight_is_silent(world: World) -> None:
    run = world.run(fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    assert "[PASS]" not in run.err and "doctor:" not in run.err, str(run)


def test_skip_doctor_bypasses_the_preflight(world: World) -> None:
    # With the broker unreachable the preflight would stop the run with its report; skipped, the run goes on to
    # the briefing, which fails with its own one-line error.
    run = world.run("--skip-doctor", extra_env={"AC7_URL": f"http://127.0.0.1:{free_port()}"}, fake={"EXIT": "0"})
    assert run.code == 1, str(run)
    assert "[FAIL]" not in run.err and "preflight" not in run.err, str(run)
    assert "is `ac7 serve` running" in run.err
