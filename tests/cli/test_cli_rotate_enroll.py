"""`ac7 rotate --slot` and `ac7 enroll --slot`: one secret replaced, printed once, and nothing else touched."""

from __future__ import annotations

import time

from cli_helpers import (
    SEALED_RE,
    TOKEN_ANYWHERE_RE,
    TOKEN_RE,
    Team,
    add_slot,
    assert_error,
    assert_usage_error,
    open_sealed,
    otpauth_parts,
    printed_secret,
    printed_uri,
    qr_blocks,
    qr_encodes,
    read_doc,
    sha256_of,
    slot_entry,
)

from ac7_core.tokens import token_matches
from ac7_core.totp import code_at, match_step


def _three_slots(team: Team) -> None:
    add_slot(team, "bob", "--role", "engineer", "--role-description", "Writes code")
    add_slot(team, "carol", "--role", "engineer", "--totp")


# --- rotate ----------------------------------------------------------------------------------------------------


def test_rotate_prints_exactly_the_new_token_on_stdout(team: Team) -> None:
    _three_slots(team)
    result = team.run("rotate", "--slot", "bob")
    assert result.code == 0, str(result)
    token = result.out.removesuffix("\n")
    assert result.out == token + "\n"
    assert TOKEN_RE.match(token)
    assert token != team.tokens["bob"]
    assert not TOKEN_ANYWHERE_RE.search(result.err)
    framing = result.err.lower()
    assert "once" in framing
    assert "save it" in framing
    assert "bob" in result.err


def test_rotate_replaces_only_that_slots_hash(team: Team) -> None:
    _three_slots(team)
    before_text = team.text()
    old_hash = slot_entry(read_doc(team.config), "bob")["tokenHash"]
    assert old_hash == sha256_of(team.tokens["bob"])

    result = team.run("rotate", "--slot", "bob")
    assert result.code == 0, str(result)
    token = result.out.strip()
    after_text = team.text()
    new_hash = slot_entry(read_doc(team.config), "bob")["tokenHash"]

    assert new_hash == sha256_of(token)
    assert not token_matches(team.tokens["bob"], new_hash), "the old token must no longer match"
    assert token not in after_text
    # Surgical: swap the hash back and the file is byte-for-byte what it was (every other slot, key order, format).
    assert after_text.count(new_hash) == 1
    assert after_text.replace(new_hash, old_hash) == before_text
    # The other slots' credentials still match.
    doc = read_doc(team.config)
    assert token_matches(team.tokens["alice"], slot_entry(doc, "alice")["tokenHash"])
    assert token_matches(team.tokens["carol"], slot_entry(doc, "carol")["tokenHash"])


def test_rotate_twice_gives_two_different_tokens(team: Team) -> None:
    first = team.run("rotate", "--slot", "alice")
    second = team.run("rotate", "--slot", "alice")
    assert first.code == second.code == 0
    assert first.out != second.out
    assert slot_entry(read_doc(team.config), "alice")["tokenHash"] == sha256_of(second.out.strip())


def test_rotate_an_unknown_slot_is_an_error_and_changes_nothing(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("rotate", "--slot", "nobody")
    assert_error(result, "nobody")
    assert result.out == ""
    assert team.config.read_bytes() == before


def test_rotate_without_slot_is_a_usage_error(team: Team) -> None:
    assert_usage_error(team.run("rotate"), "--slot")


# --- enroll ----------------------------------------------------------------------------------------------------


def test_enroll_gives_a_new_sealed_secret_and_retires_the_old_one(team: Team) -> None:
    _three_slots(team)
    old_secret = team.secrets["carol"]
    before_text = team.text()
    old_sealed = slot_entry(read_doc(team.config), "carol")["totpSecret"]

    result = team.run("enroll", "--slot", "carol")
    assert result.code == 0, str(result)
    secret = printed_secret(result.out)
    uri = printed_uri(result.out)
    assert secret != old_secret
    label, query = otpauth_parts(uri)
    assert label == "ac7:carol@acme"
    assert query["secret"] == secret
    blocks = qr_blocks(result.err)
    assert len(blocks) == 1
    assert qr_encodes(blocks[0], uri)

    after_text = team.text()
    assert secret not in after_text
    new_sealed = slot_entry(read_doc(team.config), "carol")["totpSecret"]
    assert SEALED_RE.match(new_sealed)
    assert new_sealed != old_sealed
    stored = open_sealed((team.dir / "ac7-kek.bin").read_bytes(), new_sealed, "slots/carol/totpSecret")
    assert stored == secret
    now = time.time()
    assert match_step(stored, code_at(secret, now), now=now) is not None
    old_codes = {code_at(old_secret, now + d) for d in (-30, 0, 30)}
    new_codes = {code_at(secret, now + d) for d in (-30, 0, 30)}
    for code in old_codes - new_codes:  # (a coincidental collision between the two secrets proves nothing)
        assert match_step(stored, code, now=now) is None
    # Only that field changed; the bearer token and every other slot are untouched.
    assert after_text.replace(new_sealed, old_sealed) == before_text


def test_enroll_a_slot_that_had_no_totp(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead")
    result = team.run("enroll", "--slot", "bob", "--no-qr")
    assert result.code == 0, str(result)
    assert qr_blocks(result.err) == []
    secret = printed_secret(result.out)
    bob = slot_entry(read_doc(team.config), "bob")
    assert open_sealed((team.dir / "ac7-kek.bin").read_bytes(), bob["totpSecret"], "slots/bob/totpSecret") == secret
    assert bob["tokenHash"] == sha256_of(team.tokens["bob"])


def test_enroll_prints_no_bearer_token(team: Team) -> None:
    result = team.run("enroll", "--slot", "alice", "--no-qr")
    assert result.code == 0, str(result)
    assert not TOKEN_ANYWHERE_RE.search(result.out + result.err)
    assert slot_entry(read_doc(team.config), "alice")["tokenHash"] == sha256_of(team.tokens["alice"])


def test_enroll_an_unknown_slot_is_an_error_and_changes_nothing(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("enroll", "--slot", "nobody")
    assert_error(result, "nobody")
    assert result.out == ""
    assert team.config.read_bytes() == before


def test_enroll_without_slot_is_a_usage_error(team: Team) -> None:
    assert_usage_error(team.run("enroll"), "--slot")
