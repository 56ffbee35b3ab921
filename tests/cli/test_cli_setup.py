"""`ac7 setup` in its non-interactive form: what lands on disk (DESIGN §3), what is printed once, what it refuses."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import pytest
from cli_helpers import (
    SEALED_RE,
    TOKEN_ANYWHERE_RE,
    TOKEN_RE,
    Team,
    assert_error,
    assert_usage_error,
    clean_env,
    open_sealed,
    otpauth_parts,
    printed_secret,
    printed_uri,
    qr_blocks,
    qr_encodes,
    random_kek_b64,
    read_doc,
    run_ac7,
    sha256_of,
    slot_entry,
)
from cryptography.exceptions import InvalidTag

from ac7_core.totp import code_at, match_step, new_secret

SETUP = ("setup", "--team", "acme", "--director", "alice")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_config_and_key_file_as_the_design_says(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(
        *SETUP, "--directive", "Ship the billing service", "--brief", "Longer context", "--no-qr", cwd=tmp_path, env=env
    )
    assert result.code == 0, str(result)
    lines = result.out.splitlines()
    assert len(lines) == 3, str(result)
    token = lines[0]
    assert TOKEN_RE.match(token), token
    secret = printed_secret(result.out)

    config = tmp_path / "ac7.json"
    assert mode(config) == 0o600
    text = config.read_text(encoding="utf-8")
    assert token not in text
    assert secret not in text
    doc = read_doc(config)
    assert doc["team"] == {"name": "acme", "directive": "Ship the billing service", "brief": "Longer context"}
    assert "kek" not in doc
    assert len(doc["slots"]) == 1
    alice = slot_entry(doc, "alice")
    assert alice["authority"] == "director"
    assert alice["role"] in doc["roles"]
    assert "token" not in alice
    assert alice["tokenHash"] == sha256_of(token)
    assert SEALED_RE.match(alice["totpSecret"]), alice["totpSecret"]

    key_file = tmp_path / "ac7-kek.bin"
    assert mode(key_file) == 0o600
    key = key_file.read_bytes()
    assert len(key) == 32
    assert open_sealed(key, alice["totpSecret"], "slots/alice/totpSecret") == secret
    # Bound to its field: the same ciphertext does not open as another field.
    with pytest.raises(InvalidTag):
        open_sealed(key, alice["totpSecret"], "slots/bob/totpSecret")
    assert "Created" in result.err


def test_prints_a_working_totp_enrolment(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    secret = printed_secret(result.out)
    label, query = otpauth_parts(printed_uri(result.out))
    assert label == "ac7:alice@acme"
    assert query["secret"] == secret
    assert query["issuer"] == "ac7"
    assert query.get("algorithm", "SHA1") == "SHA1"
    assert query.get("digits", "6") == "6"
    assert query.get("period", "30") == "30"
    now = time.time()
    assert match_step(secret, code_at(secret, now), now=now) is not None
    # ...and the check is real: another secret's code is refused (unless it happens to coincide).
    other = new_secret()
    other_code = code_at(other, now)
    if all(code_at(secret, now + d) != other_code for d in (-30, 0, 30)):
        assert match_step(secret, other_code, now=now) is None


def test_token_and_uri_are_on_stdout_and_framing_on_stderr(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    token = result.out.splitlines()[0]
    assert TOKEN_RE.match(token)
    assert "otpauth://totp/" in result.out
    assert not TOKEN_ANYWHERE_RE.search(result.err), "the token is printed once, on stdout only"
    assert "once" in result.err.lower()


def test_draws_the_enrolment_qr_code_on_stderr(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    blocks = qr_blocks(result.err)
    assert len(blocks) == 1, result.err
    uri = printed_uri(result.out)
    assert qr_encodes(blocks[0], uri), "the QR code must encode the printed otpauth URI"
    assert not qr_encodes(blocks[0], uri.replace("alice@acme", "alice@acmf"))  # the decoder can tell them apart
    assert qr_blocks(result.out) == []


def test_no_qr_draws_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert qr_blocks(result.err) == []
    assert qr_blocks(result.out) == []
    assert "otpauth://" in result.out


def test_refuses_to_overwrite_an_existing_config(team: Team) -> None:
    before = team.config.read_bytes()
    key_before = (team.dir / "ac7-kek.bin").read_bytes()
    result = team.run(*SETUP, "--no-qr")
    assert_error(result, "already exists")
    assert result.out == ""
    assert team.config.read_bytes() == before
    assert (team.dir / "ac7-kek.bin").read_bytes() == key_before


def test_refuses_to_overwrite_any_file_at_the_config_path(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "ac7.json").write_text("not even json\n")
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert_error(result, "already exists")
    assert (tmp_path / "ac7.json").read_text() == "not even json\n"
    assert not (tmp_path / "ac7-kek.bin").exists()


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (("setup", "--director", "alice"), "--team"),
        (("setup", "--team", "acme"), "--director"),
        (("setup",), "--team"),
    ],
)
def test_without_a_terminal_missing_flags_are_one_line_errors(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], missing: str
) -> None:
    result = run_ac7(*args, cwd=tmp_path, env=env)
    assert_error(result, missing)
    assert result.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_non_interactive_flag_with_full_flags_needs_no_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, "--non-interactive", "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert read_doc(tmp_path / "ac7.json")["team"]["name"] == "acme"


def test_role_and_description_flags(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(
        *SETUP, "--role", "architect", "--role-description", "Designs the system", "--no-qr", cwd=tmp_path, env=env
    )
    assert result.code == 0, str(result)
    doc = read_doc(tmp_path / "ac7.json")
    assert doc["roles"]["architect"]["description"] == "Designs the system"
    assert slot_entry(doc, "alice")["role"] == "architect"


def test_default_role_is_lead(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    doc = read_doc(tmp_path / "ac7.json")
    assert slot_entry(doc, "alice")["role"] == "lead"
    assert doc["roles"]["lead"]["description"] == "Plans and reviews"


def test_invalid_director_name_is_a_usage_error(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("setup", "--team", "acme", "--director", "not ok!", cwd=tmp_path, env=env)
    assert_usage_error(result, "--director")
    assert not (tmp_path / "ac7.json").exists()


def test_empty_team_name_is_a_one_line_error(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("setup", "--team", "", "--director", "alice", cwd=tmp_path, env=env)
    assert_error(result, "team")
    assert not (tmp_path / "ac7.json").exists()


def test_with_ac7_kek_no_key_file_is_created(tmp_path: Path) -> None:
    kek = random_kek_b64()
    env = clean_env(tmp_path, {"AC7_KEK": kek})
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert "AC7_KEK" in result.err
    assert not (tmp_path / "ac7-kek.bin").exists()
    doc = read_doc(tmp_path / "ac7.json")
    assert "kek" not in doc
    secret = printed_secret(result.out)
    assert open_sealed(base64.b64decode(kek), slot_entry(doc, "alice")["totpSecret"], "slots/alice/totpSecret") == (
        secret
    )
    # The same key opens it again; without it the CLI says what is missing, in one line, and mints no key file.
    listed = run_ac7("slot", "list", cwd=tmp_path, env=env)
    assert listed.code == 0, str(listed)
    assert "alice" in listed.out
    without = run_ac7("slot", "list", cwd=tmp_path, env=clean_env(tmp_path))
    assert_error(without, "key file not found")
    assert not (tmp_path / "ac7-kek.bin").exists()


def test_with_a_wrong_length_ac7_kek_nothing_is_written(tmp_path: Path) -> None:
    env = clean_env(tmp_path, {"AC7_KEK": base64.b64encode(b"x" * 16).decode()})
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert_error(result, "32 bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_with_a_passphrase_the_config_carries_a_kek_block_and_no_key_file(tmp_path: Path) -> None:
    env = clean_env(tmp_path, {"AC7_KEK_PASSPHRASE": "correct horse battery staple"})
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert not (tmp_path / "ac7-kek.bin").exists()
    doc = read_doc(tmp_path / "ac7.json")
    block = doc["kek"]
    assert block["kdf"] == "argon2id"
    assert {"salt", "timeCost", "memoryCost", "parallelism"} <= set(block)
    assert "correct horse" not in (tmp_path / "ac7.json").read_text()
    assert SEALED_RE.match(slot_entry(doc, "alice")["totpSecret"])

    again = run_ac7("slot", "list", "--json", cwd=tmp_path, env=env)
    assert again.code == 0, str(again)
    assert '"alice"' in again.out
    wrong = run_ac7("slot", "list", cwd=tmp_path, env=clean_env(tmp_path, {"AC7_KEK_PASSPHRASE": "wrong"}))
    assert_error(wrong, "AC7_KEK_PASSPHRASE")
    assert not (tmp_path / "ac7-kek.bin").exists()


def test_config_flag_puts_config_and_key_in_that_directory(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "teams").mkdir()
    result = run_ac7(*SETUP, "--no-qr", "--config", "teams/acme.json", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert (tmp_path / "teams" / "acme.json").is_file()
    assert (tmp_path / "teams" / "ac7-kek.bin").is_file()
    assert not (tmp_path / "ac7.json").exists()
    assert not (tmp_path / "ac7-kek.bin").exists()


def test_ac7_config_env_is_honoured_and_the_flag_wins(tmp_path: Path) -> None:
    env = clean_env(tmp_path, {"AC7_CONFIG": str(tmp_path / "from-env.json")})
    result = run_ac7(*SETUP, "--no-qr", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert (tmp_path / "from-env.json").is_file()
    assert not (tmp_path / "ac7.json").exists()

    flag = run_ac7(*SETUP, "--no-qr", "--config", "from-flag.json", cwd=tmp_path, env=env)
    assert flag.code == 0, str(flag)
    assert (tmp_path / "from-flag.json").is_file()


def test_setup_help_exits_zero(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("setup", "--help", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert "--team" in result.out
    assert "--no-qr" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == []
