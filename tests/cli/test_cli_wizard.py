"""`ac7 setup` as a wizard on a real pseudo-terminal: prompts, the once-only secrets, and the TOTP confirmation."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    TOKEN_RE,
    BrokerProcess,
    PtySession,
    http,
    open_sealed,
    otpauth_parts,
    qr_blocks,
    qr_encodes,
    read_doc,
    sha256_of,
    slot_entry,
)

from ac7_core.totp import STEP_SECONDS, code_at, hotp, step_at

CODE_PROMPT = r"Enter the 6-digit code[^\n]*: $"


@pytest.fixture
def sessions() -> Iterator[list[PtySession]]:
    opened: list[PtySession] = []
    yield opened
    for session in opened:
        session.close()


def start(sessions: list[PtySession], tmp_path: Path, env: dict[str, str], *args: str) -> PtySession:
    session = PtySession(["setup", *args], tmp_path, env)
    sessions.append(session)
    return session


def answer_team_prompts(s: PtySession, *, team: str = "acme", director: str = "alice") -> None:
    s.expect(r"Team name: ")
    s.sendline(team)
    s.expect(r"Team directive \(one line\)[^:]*: ")
    s.sendline("Ship the billing service")
    s.expect(r"Your slot name \(the first director\): ")
    s.sendline(director)
    s.expect(r"Your role \[lead\]: ")
    s.sendline("")  # take the default
    s.expect(r"What that role does \[Plans and reviews\]: ")
    s.sendline("Plans, reviews and merges")


def read_secrets(s: PtySession) -> tuple[str, str, str]:
    token = s.expect(r"(?m)^(ac7_[A-Za-z0-9_-]{43})\n").group(1)
    secret = s.expect(r"(?m)^secret: ([A-Z2-7]+)\n").group(1)
    uri = s.expect(r"(?m)^uri:\s+(otpauth://\S+)\n").group(1)
    return token, secret, uri


def wrong_code(secret: str) -> str:
    now = time.time()
    window = {code_at(secret, now + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in window)


def test_wizard_creates_the_team_and_confirms_the_authenticator(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env)
    answer_team_prompts(s)
    token, secret, uri = read_secrets(s)
    s.expect(CODE_PROMPT)
    s.sendline(code_at(secret, time.time()))
    s.expect(r"Code accepted")
    assert s.wait() == 0, s.buffer
    assert "Traceback" not in s.buffer

    assert TOKEN_RE.match(token)
    assert "Save it now" in s.buffer
    label, query = otpauth_parts(uri)
    assert label == "ac7:alice@acme"
    assert query["secret"] == secret
    # The QR code is drawn on the terminal too, and it carries the same URI.
    blocks = qr_blocks(s.buffer)
    assert len(blocks) == 1
    assert qr_encodes(blocks[0], uri)

    doc = read_doc(tmp_path / "ac7.json")
    assert doc["team"]["name"] == "acme"
    assert doc["team"]["directive"] == "Ship the billing service"
    assert doc["roles"]["lead"]["description"] == "Plans, reviews and merges"
    alice = slot_entry(doc, "alice")
    assert alice["authority"] == "director"
    assert alice["role"] == "lead"
    assert alice["tokenHash"] == sha256_of(token)
    key = (tmp_path / "ac7-kek.bin").read_bytes()
    assert open_sealed(key, alice["totpSecret"], "slots/alice/totpSecret") == secret


def test_a_wrong_code_is_refused_and_a_right_one_then_accepted(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env)
    answer_team_prompts(s)
    _, secret, _ = read_secrets(s)
    s.expect(CODE_PROMPT)
    s.sendline(wrong_code(secret))
    s.expect(r"does not match")
    s.expect(CODE_PROMPT)
    s.sendline(code_at(secret, time.time()))
    s.expect(r"Code accepted")
    assert s.wait() == 0, s.buffer


def test_three_wrong_codes_end_with_the_enroll_hint(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env)
    answer_team_prompts(s)
    _, secret, _ = read_secrets(s)
    for _ in range(3):
        s.expect(CODE_PROMPT)
        s.sendline(wrong_code(secret))
        s.expect(r"does not match")
    s.expect(r"Not confirmed\. To start over with a new secret: ac7 enroll --slot alice")
    assert s.wait() == 0, s.buffer
    assert "Code accepted" not in s.buffer
    assert (tmp_path / "ac7.json").exists()  # the team exists; only the authenticator is unconfirmed


def test_a_blank_code_skips_the_confirmation_with_a_hint(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env)
    answer_team_prompts(s, team="blue", director="dana")
    read_secrets(s)
    s.expect(CODE_PROMPT)
    s.sendline("")
    s.expect(r"ac7 enroll --slot dana")
    assert s.wait() == 0, s.buffer
    assert "Code accepted" not in s.buffer
    assert slot_entry(read_doc(tmp_path / "ac7.json"), "dana")["authority"] == "director"


def test_flags_given_on_a_terminal_are_not_asked_again(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env, "--team", "acme", "--director", "alice", "--no-qr")
    s.expect(r"Team directive \(one line\)[^:]*: ")
    s.sendline("")
    s.expect(r"Your role \[lead\]: ")
    s.sendline("builder")
    s.expect(r"What that role does \[Plans and reviews\]: ")
    s.sendline("")
    _, secret, _ = read_secrets(s)
    s.expect(CODE_PROMPT)
    s.sendline(code_at(secret, time.time()))
    s.expect(r"Code accepted")
    assert s.wait() == 0, s.buffer
    assert "Team name" not in s.buffer
    assert "Your slot name" not in s.buffer
    assert qr_blocks(s.buffer) == []
    doc = read_doc(tmp_path / "ac7.json")
    assert slot_entry(doc, "alice")["role"] == "builder"


def test_non_interactive_on_a_terminal_never_prompts(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env, "--non-interactive", "--director", "alice")
    assert s.wait() == 1, s.buffer
    lines = [line for line in s.buffer.splitlines() if line.strip()]
    assert len(lines) == 1, s.buffer
    assert lines[0].startswith("ac7: ")
    assert "--team" in lines[0]
    assert not (tmp_path / "ac7.json").exists()


def test_on_a_terminal_an_existing_config_is_refused_before_any_prompt(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "ac7.json").write_text("{}\n")
    s = start(sessions, tmp_path, env)
    assert s.wait() == 1, s.buffer
    assert re.fullmatch(r"ac7: [^\n]*already exists[^\n]*\n?", s.buffer), s.buffer
    assert (tmp_path / "ac7.json").read_text() == "{}\n"


def test_an_invalid_slot_name_in_the_wizard_writes_nothing_and_shows_no_traceback(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    s = start(sessions, tmp_path, env)
    s.expect(r"Team name: ")
    s.sendline("acme")
    s.expect(r"Team directive \(one line\)[^:]*: ")
    s.sendline("")
    s.expect(r"Your slot name \(the first director\): ")
    s.sendline("not a valid name!")
    code = s.wait()
    assert code != 0, s.buffer
    assert "Traceback" not in s.buffer
    assert "A-Za-z0-9" in s.buffer  # says what a valid name looks like
    assert not (tmp_path / "ac7.json").exists()
    assert not (tmp_path / "ac7-kek.bin").exists()


def test_the_confirmation_code_cannot_be_replayed_for_a_login(
    sessions: list[PtySession], tmp_path: Path, env: dict[str, str]
) -> None:
    """The code typed into the wizard was seen on screen: it is burned, so it cannot open a web session later."""
    s = start(sessions, tmp_path, env)
    answer_team_prompts(s)
    _, secret, _ = read_secrets(s)
    s.expect(CODE_PROMPT)
    confirmed_at = time.time()
    code = code_at(secret, confirmed_at)
    s.sendline(code)
    s.expect(r"Code accepted")
    assert s.wait() == 0, s.buffer

    broker = BrokerProcess(tmp_path / "ac7.json", tmp_path, env).start()
    try:
        status, body = http("POST", f"{broker.url}/session/totp", body={"code": code, "slot": "alice"})
        assert status == 401, body
        # A later code from the same authenticator works: only the confirmed step was burned.
        later = max(step_at(confirmed_at) + 1, step_at(time.time()))
        assert later * STEP_SECONDS <= time.time() + STEP_SECONDS  # still inside the ±1 step window
        status, body = http("POST", f"{broker.url}/session/totp", body={"code": hotp(secret, later), "slot": "alice"})
        assert status == 200, body
        assert body["slot"] == "alice"
    finally:
        broker.stop()
