"""`ac7 slot add|list|remove`: offline edits of the team config, secrets printed once, never listed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_helpers import (
    SEALED_RE,
    TOKEN_ANYWHERE_RE,
    TOKEN_RE,
    Team,
    add_slot,
    assert_error,
    assert_usage_error,
    clean_env,
    open_sealed,
    otpauth_parts,
    printed_secret,
    printed_uri,
    qr_blocks,
    qr_encodes,
    read_doc,
    run_ac7,
    sha256_of,
    slot_entry,
)

from ac7_core.totp import code_at, match_step

# --- add -------------------------------------------------------------------------------------------------------


def test_add_prints_the_token_once_and_stores_only_its_hash(team: Team) -> None:
    before = read_doc(team.config)
    result = team.run("slot", "add", "bob", "--role", "lead")
    assert result.code == 0, str(result)
    assert result.out.count("\n") == 1
    token = result.out.strip()
    assert TOKEN_RE.match(token)
    assert not TOKEN_ANYWHERE_RE.search(result.err)
    assert "once" in result.err.lower()
    text = team.text()
    assert token not in text
    doc = read_doc(team.config)
    bob = slot_entry(doc, "bob")
    assert bob == {"name": "bob", "role": "lead", "authority": "individual-contributor", "tokenHash": sha256_of(token)}
    assert slot_entry(doc, "alice") == slot_entry(before, "alice")
    assert "otpauth://" not in result.out  # no TOTP unless asked for


def test_add_creates_a_new_role_with_role_description(team: Team) -> None:
    result = team.run("slot", "add", "bob", "--role", "engineer", "--role-description", "Writes and tests code")
    assert result.code == 0, str(result)
    doc = read_doc(team.config)
    assert doc["roles"]["engineer"]["description"] == "Writes and tests code"
    assert slot_entry(doc, "bob")["role"] == "engineer"
    assert "lead" in doc["roles"]  # the existing role is untouched


def test_add_with_an_unknown_role_is_an_error_naming_the_fix(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("slot", "add", "bob", "--role", "engineer")
    line = assert_error(result, "engineer", "--role-description")
    assert "lead" in line  # lists the roles that do exist
    assert result.out == ""
    assert team.config.read_bytes() == before


def test_add_a_duplicate_name_is_an_error(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead")
    before = team.config.read_bytes()
    result = team.run("slot", "add", "bob", "--role", "lead")
    assert_error(result, "bob", "already exists")
    assert result.out == ""
    assert team.config.read_bytes() == before


def test_add_an_invalid_name_is_an_error(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("slot", "add", "bad name!", "--role", "lead")
    assert_error(result, "A-Za-z0-9")
    assert team.config.read_bytes() == before


def test_add_human_gives_no_token_but_a_totp_enrolment(team: Team) -> None:
    result = team.run("slot", "add", "hana", "--role", "lead", "--human")
    assert result.code == 0, str(result)
    assert not TOKEN_ANYWHERE_RE.search(result.out + result.err)
    secret = printed_secret(result.out)
    uri = printed_uri(result.out)
    label, query = otpauth_parts(uri)
    assert label == "ac7:hana@acme"
    assert query["secret"] == secret
    blocks = qr_blocks(result.err)
    assert len(blocks) == 1
    assert qr_encodes(blocks[0], uri)
    hana = slot_entry(read_doc(team.config), "hana")
    assert "tokenHash" not in hana
    assert "token" not in hana
    assert SEALED_RE.match(hana["totpSecret"])
    key = (team.dir / "ac7-kek.bin").read_bytes()
    assert open_sealed(key, hana["totpSecret"], "slots/hana/totpSecret") == secret
    now = time.time()
    assert match_step(secret, code_at(secret, now), now=now) is not None


def test_add_with_totp_gives_both_credentials(team: Team) -> None:
    result = team.run("slot", "add", "bob", "--role", "lead", "--totp", "--no-qr")
    assert result.code == 0, str(result)
    token = result.out.splitlines()[0]
    assert TOKEN_RE.match(token)
    secret = printed_secret(result.out)
    assert qr_blocks(result.err) == []
    bob = slot_entry(read_doc(team.config), "bob")
    assert bob["tokenHash"] == sha256_of(token)
    assert open_sealed((team.dir / "ac7-kek.bin").read_bytes(), bob["totpSecret"], "slots/bob/totpSecret") == secret


@pytest.mark.parametrize("authority", ["director", "manager", "individual-contributor"])
def test_add_records_the_authority(team: Team, authority: str) -> None:
    add_slot(team, "bob", "--role", "lead", "--authority", authority)
    assert slot_entry(read_doc(team.config), "bob")["authority"] == authority


def test_add_with_an_unknown_authority_is_a_usage_error(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("slot", "add", "bob", "--role", "lead", "--authority", "boss")
    assert_usage_error(result, "--authority")
    assert team.config.read_bytes() == before


def test_add_without_role_is_a_usage_error(team: Team) -> None:
    assert_usage_error(team.run("slot", "add", "bob"), "--role")


def test_add_keeps_other_slots_text_byte_identical(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead")
    before = team.text()
    add_slot(team, "carol", "--role", "lead")
    after = team.text()
    # Everything up to the end of bob's entry is unchanged.
    bob_end = before.index(slot_entry(read_doc(team.config), "bob")["tokenHash"])
    assert after[:bob_end] == before[:bob_end]


# --- list ------------------------------------------------------------------------------------------------------


def test_list_shows_every_slot_and_never_a_secret(big_team: Team) -> None:
    result = big_team.run("slot", "list")
    assert result.code == 0, str(result)
    rows = [line.split() for line in result.out.splitlines()]
    assert rows[0] == ["NAME", "ROLE", "AUTHORITY", "BEARER", "TOTP"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name == {
        "alice": ["alice", "lead", "director", "yes", "yes"],
        "bob": ["bob", "engineer", "individual-contributor", "yes", "-"],
        "carol": ["carol", "engineer", "manager", "yes", "-"],
        "hana": ["hana", "lead", "individual-contributor", "-", "yes"],
    }
    _assert_no_secrets(big_team, result.out + result.err)


def test_list_json_is_machine_readable_and_never_a_secret(big_team: Team) -> None:
    result = big_team.run("slot", "list", "--json")
    assert result.code == 0, str(result)
    rows = json.loads(result.out)
    assert rows == [
        {"name": "alice", "role": "lead", "authority": "director", "bearer": True, "totp": True},
        {"name": "bob", "role": "engineer", "authority": "individual-contributor", "bearer": True, "totp": False},
        {"name": "carol", "role": "engineer", "authority": "manager", "bearer": True, "totp": False},
        {"name": "hana", "role": "lead", "authority": "individual-contributor", "bearer": False, "totp": True},
    ]
    _assert_no_secrets(big_team, result.out + result.err)


def _assert_no_secrets(team: Team, output: str) -> None:
    assert "sha256:" not in output
    assert "enc-v1" not in output
    assert not TOKEN_ANYWHERE_RE.search(output)
    for value in [*team.tokens.values(), *team.secrets.values()]:
        assert value not in output
    for entry in read_doc(team.config)["slots"]:
        for key in ("tokenHash", "totpSecret"):
            if key in entry:
                assert entry[key] not in output
                assert entry[key].split(":")[-1] not in output


LEGACY = """{
  "_comment": "an old config, written by hand",
  "team": {"name": "old"},
  "roles": {"lead": {"description": "Plans"}},
  "slots": [
    {"name": "alice", "role": "lead", "authority": "director", "token": "ac7_plaintext-from-an-old-config",
     "totpSecret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "x-custom": 1}
  ]
}
"""


def test_list_on_a_legacy_config_migrates_it_and_prints_no_secret(tmp_path: Path) -> None:
    config = tmp_path / "ac7.json"
    config.write_text(LEGACY, encoding="utf-8")
    config.chmod(0o600)
    result = run_ac7("slot", "list", "--json", cwd=tmp_path, env=clean_env(tmp_path))
    assert result.code == 0, str(result)
    assert json.loads(result.out) == [
        {"name": "alice", "role": "lead", "authority": "director", "bearer": True, "totp": True}
    ]
    assert "plaintext-from-an-old-config" not in result.out + result.err
    assert "JBSWY3DP" not in result.out + result.err
    text = config.read_text(encoding="utf-8")
    assert "plaintext-from-an-old-config" not in text
    assert "JBSWY3DP" not in text
    doc = read_doc(config)
    alice = slot_entry(doc, "alice")
    assert alice["tokenHash"] == sha256_of("ac7_plaintext-from-an-old-config")
    assert SEALED_RE.match(alice["totpSecret"])
    assert open_sealed((tmp_path / "ac7-kek.bin").read_bytes(), alice["totpSecret"], "slots/alice/totpSecret") == (
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    )
    assert alice["x-custom"] == 1
    assert doc["_comment"] == "an old config, written by hand"
    assert text.startswith('{\n  "_comment": "an old config, written by hand",\n  "team": {"name": "old"},\n')


def test_list_does_not_modify_the_file(big_team: Team) -> None:
    before = big_team.config.read_bytes()
    assert big_team.run("slot", "list").code == 0
    assert big_team.config.read_bytes() == before


# --- remove ----------------------------------------------------------------------------------------------------


def test_remove_with_yes_removes_only_that_slot(big_team: Team) -> None:
    before = read_doc(big_team.config)
    result = big_team.run("slot", "remove", "bob", "--yes")
    assert result.code == 0, str(result)
    assert "bob" in result.err
    after = read_doc(big_team.config)
    assert [s["name"] for s in after["slots"]] == ["alice", "carol", "hana"]
    for name in ("alice", "carol", "hana"):
        assert slot_entry(after, name) == slot_entry(before, name)


def test_remove_confirms_on_stdin_when_not_given_yes(big_team: Team) -> None:
    declined = big_team.run("slot", "remove", "bob", stdin="n\n")
    assert declined.code != 0, str(declined)
    assert "Traceback" not in declined.err
    assert "bob" in [s["name"] for s in read_doc(big_team.config)["slots"]]
    accepted = big_team.run("slot", "remove", "bob", stdin="y\n")
    assert accepted.code == 0, str(accepted)
    assert "bob" not in [s["name"] for s in read_doc(big_team.config)["slots"]]


def test_remove_without_yes_and_without_an_answer_is_a_one_line_error(big_team: Team) -> None:
    """No --yes and nothing on stdin (a script): the slot stays, and the failure reads like every other ac7 error."""
    before = big_team.config.read_bytes()
    result = big_team.run("slot", "remove", "bob", stdin="")
    assert big_team.config.read_bytes() == before
    assert_error(result)


def test_remove_the_last_director_is_refused(big_team: Team) -> None:
    before = big_team.config.read_bytes()
    result = big_team.run("slot", "remove", "alice", "--yes")
    assert_error(result, "alice", "last director")
    assert big_team.config.read_bytes() == before


def test_remove_a_director_is_allowed_when_another_remains(big_team: Team) -> None:
    add_slot(big_team, "dora", "--role", "lead", "--authority", "director")
    result = big_team.run("slot", "remove", "alice", "--yes")
    assert result.code == 0, str(result)
    assert [s["name"] for s in read_doc(big_team.config)["slots"]] == ["bob", "carol", "hana", "dora"]


def test_remove_an_unknown_slot_is_an_error(team: Team) -> None:
    before = team.config.read_bytes()
    result = team.run("slot", "remove", "nobody", "--yes")
    assert_error(result, "nobody")
    assert team.config.read_bytes() == before
