"""`ac7 serve` as a real process: the --demo first run, restarts, and offline edits a running broker picks up."""

from __future__ import annotations

import re
import socket
import stat
import time
from pathlib import Path

from cli_helpers import (
    TOKEN_ANYWHERE_RE,
    BrokerProcess,
    Team,
    add_slot,
    assert_error,
    clean_env,
    http,
    printed_secret,
    read_doc,
    run_ac7,
    sha256_of,
    slot_entry,
    wait_until,
)

from ac7_core.totp import code_at

DIRECTOR_RE = re.compile(r"Director token \(CLI\):\s+(ac7_[A-Za-z0-9_-]{43})")
AGENT_RE = re.compile(r'Agent "builder" token:\s+(ac7_[A-Za-z0-9_-]{43})')
SECRET_RE = re.compile(r"\(secret ([A-Z2-7]{16,})\)")


def roster_status(url: str, token: str) -> int:
    status, _ = http("GET", f"{url}/roster", token=token)
    return status


def totp_login(url: str, slot: str, secret: str) -> tuple[int, object]:
    return http("POST", f"{url}/session/totp", body={"code": code_at(secret, time.time()), "slot": slot})


def test_demo_first_run_creates_the_team_and_prints_working_credentials(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "ac7.json"
    broker = BrokerProcess(config, tmp_path, env, ("--demo",)).start()
    try:
        assert wait_until(lambda: "ac7 history" in broker.stderr(), timeout=60), broker.stderr()
        err = broker.stderr()
        url = broker.url
        assert f"{url}/login" in err
        director = DIRECTOR_RE.search(err)
        agent = AGENT_RE.search(err)
        secret = SECRET_RE.search(err)
        assert director and agent and secret, err
        director_token, agent_token, totp_secret = director.group(1), agent.group(1), secret.group(1)
        # The "Try it" lines are copy-pasteable.
        assert f"AC7_URL={url} AC7_TOKEN={director_token} ac7 roster" in err
        assert f"AC7_URL={url} AC7_TOKEN={agent_token} ac7 history" in err

        # The file keeps only hashes and sealed secrets.
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        text = config.read_text(encoding="utf-8")
        for value in (director_token, agent_token, totp_secret):
            assert value not in text
        doc = read_doc(config)
        assert slot_entry(doc, "director")["authority"] == "director"
        assert slot_entry(doc, "director")["tokenHash"] == sha256_of(director_token)
        assert slot_entry(doc, "builder")["tokenHash"] == sha256_of(agent_token)

        # The printed credentials work, exactly as the instructions say.
        roster = run_ac7("roster", "--json", cwd=tmp_path, env={**env, "AC7_URL": url, "AC7_TOKEN": director_token})
        assert roster.code == 0, str(roster)
        assert '"builder"' in roster.out
        body = "hello from the demo test"
        pushed = run_ac7(
            "push", "--to", "builder", body, cwd=tmp_path, env={**env, "AC7_URL": url, "AC7_TOKEN": director_token}
        )
        assert pushed.code == 0, str(pushed)
        history = run_ac7("history", cwd=tmp_path, env={**env, "AC7_URL": url, "AC7_TOKEN": agent_token})
        assert body in history.out, str(history)
        status, session = totp_login(url, "director", totp_secret)
        assert status == 200, session
        assert isinstance(session, dict)
        assert session["slot"] == "director"
    finally:
        code = broker.stop()
    assert code == 0, broker.stderr()
    assert "Traceback" not in broker.stderr()


def test_demo_second_start_keeps_the_existing_team(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "ac7.json"
    first = BrokerProcess(config, tmp_path, env, ("--demo",)).start()
    try:
        assert wait_until(lambda: "ac7 history" in first.stderr(), timeout=60), first.stderr()
        director = DIRECTOR_RE.search(first.stderr())
        assert director is not None
        token = director.group(1)
    finally:
        assert first.stop() == 0
    hashes = {s["name"]: s["tokenHash"] for s in read_doc(config)["slots"]}
    sealed = slot_entry(read_doc(config), "director")["totpSecret"]

    second = BrokerProcess(config, tmp_path, env, ("--demo",)).start()
    try:
        assert roster_status(second.url, token) == 200
        err = second.stderr()
        assert "Created demo team" not in err
        assert not TOKEN_ANYWHERE_RE.search(err)
        assert {s["name"]: s["tokenHash"] for s in read_doc(config)["slots"]} == hashes
        assert slot_entry(read_doc(config), "director")["totpSecret"] == sealed
    finally:
        assert second.stop() == 0


def test_demo_never_replaces_a_config_made_by_setup(team: Team) -> None:
    before = read_doc(team.config)["slots"]
    broker = BrokerProcess(team.config, team.dir, team.env, ("--demo",)).start()
    try:
        assert roster_status(broker.url, team.tokens["alice"]) == 200
        assert "Created demo team" not in broker.stderr()
        assert read_doc(team.config)["slots"] == before
    finally:
        broker.stop()


def test_serve_finds_the_config_by_default_and_through_ac7_config(team: Team, tmp_path: Path) -> None:
    by_default = BrokerProcess(None, team.dir, team.env).start()
    try:
        assert roster_status(by_default.url, team.tokens["alice"]) == 200
    finally:
        assert by_default.stop() == 0
    work = tmp_path / "work"
    work.mkdir()
    via_env = BrokerProcess(None, work, clean_env(work, {"AC7_CONFIG": str(team.config)})).start()
    try:
        assert roster_status(via_env.url, team.tokens["alice"]) == 200
    finally:
        assert via_env.stop() == 0
    assert not (work / "ac7.json").exists()
    assert not (work / "ac7.db").exists()  # the data lives beside the config, not in the working directory


def test_serve_on_a_busy_port_is_one_line(team: Team) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = team.run("serve", "--port", str(port))
    assert_error(result, "cannot listen", str(port))


def test_serve_without_a_config_points_at_setup(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("serve", "--port", "0", "--config", "missing.json", cwd=tmp_path, env=env)
    assert_error(result, "missing.json", "ac7 setup")
    assert not (tmp_path / "missing.json").exists()


# --- offline edits picked up by a running broker --------------------------------------------------------------


def test_rotate_takes_effect_in_the_running_broker_without_a_restart(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead")
    add_slot(team, "carol", "--role", "lead")
    broker = BrokerProcess(team.config, team.dir, team.env).start()
    try:
        assert broker.proc is not None
        pid = broker.proc.pid
        old = team.tokens["bob"]
        assert roster_status(broker.url, old) == 200
        result = team.run("rotate", "--slot", "bob")
        assert result.code == 0, str(result)
        new = result.out.strip()
        assert wait_until(lambda: roster_status(broker.url, new) == 200, timeout=30)
        assert roster_status(broker.url, old) == 401
        for other in ("alice", "carol"):
            assert roster_status(broker.url, team.tokens[other]) == 200, other
        via_cli = run_ac7("roster", "--url", broker.url, "--token", new, cwd=team.dir, env=team.env)
        assert via_cli.code == 0, str(via_cli)
        assert broker.proc is not None
        assert broker.proc.pid == pid
        assert broker.proc.poll() is None
    finally:
        broker.stop()


def test_enroll_takes_effect_in_the_running_broker(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead", "--totp")
    broker = BrokerProcess(team.config, team.dir, team.env).start()
    try:
        old_secret = team.secrets["bob"]
        result = team.run("enroll", "--slot", "bob", "--no-qr")
        assert result.code == 0, str(result)
        new_secret = printed_secret(result.out)
        # Login failures count towards a lockout, so learn that the broker has reloaded from a later edit (a new
        # slot's token starts working) instead of retrying codes.
        add_slot(team, "probe", "--role", "lead")
        assert wait_until(lambda: roster_status(broker.url, team.tokens["probe"]) == 200, timeout=30)
        if code_at(old_secret, time.time()) != code_at(new_secret, time.time()):
            assert totp_login(broker.url, "bob", old_secret)[0] == 401
        status, session = totp_login(broker.url, "bob", new_secret)
        assert status == 200, session
    finally:
        broker.stop()


def test_slot_add_and_remove_take_effect_in_the_running_broker(team: Team) -> None:
    broker = BrokerProcess(team.config, team.dir, team.env).start()
    try:
        add_slot(team, "dave", "--role", "lead")
        assert wait_until(lambda: roster_status(broker.url, team.tokens["dave"]) == 200, timeout=30)
        removed = team.run("slot", "remove", "dave", "--yes")
        assert removed.code == 0, str(removed)
        assert wait_until(lambda: roster_status(broker.url, team.tokens["dave"]) == 401, timeout=30)
        assert roster_status(broker.url, team.tokens["alice"]) == 200
    finally:
        broker.stop()
