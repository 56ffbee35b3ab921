"""The CLI's conventions across verbs: --help everywhere, --config / AC7_CONFIG, and one-line `ac7:` errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import (
    Team,
    add_slot,
    assert_error,
    assert_no_traceback,
    assert_usage_error,
    clean_env,
    read_doc,
    run_ac7,
    setup_team,
    sha256_of,
)

VERBS = [
    ("setup",),
    ("slot",),
    ("slot", "add"),
    ("slot", "list"),
    ("slot", "remove"),
    ("rotate",),
    ("enroll",),
    ("serve",),
    ("push",),
    ("roster",),
    ("history",),
    ("prune-traces",),
]

# Verbs that read the team config, with the arguments that make them otherwise valid.
CONFIG_VERBS = [
    ("slot", "list"),
    ("slot", "list", "--json"),
    ("slot", "add", "bob", "--role", "lead"),
    ("slot", "remove", "bob", "--yes"),
    ("rotate", "--slot", "alice"),
    ("enroll", "--slot", "alice"),
    ("serve", "--port", "0"),
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_for_every_verb_exits_zero(tmp_path: Path, env: dict[str, str], verb: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = run_ac7(*verb, flag, cwd=tmp_path, env=env)
        assert result.code == 0, str(result)
        assert result.out.startswith(f"Usage: ac7 {' '.join(verb)}"), str(result)
        assert result.err == ""
    assert list(tmp_path.iterdir()) == []


def test_top_level_help_lists_every_verb(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("--help", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    for verb in {v[0] for v in VERBS}:
        assert f"  {verb} " in result.out, verb


def test_version(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("--version", cwd=tmp_path, env=env)
    assert result.code == 0, str(result)
    assert result.out.startswith("ac7")


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("slot", "rename", "x"),
        ("rotate",),
        ("enroll",),
        ("prune-traces",),
        ("history", "--limit", "0", "--token", "ac7_x"),
        ("push", "--token", "ac7_x"),
        ("roster",),
        ("serve", "--port", "70000"),
        ("setup", "--bogus"),
        ("slot", "list", "--config", "."),
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    assert_usage_error(run_ac7(*args, cwd=tmp_path, env=env))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", CONFIG_VERBS, ids=" ".join)
def test_a_missing_config_points_at_ac7_setup(tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    result = run_ac7(*args, cwd=tmp_path, env=env)
    assert_error(result, "ac7.json", "ac7 setup")
    # Nothing that looks like a team was created (an edit's lock file, .ac7.json.lock, may remain).
    assert not (tmp_path / "ac7.json").exists()
    assert not (tmp_path / "ac7-kek.bin").exists()
    assert not any(p.suffix in (".db", ".json", ".bin") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args", CONFIG_VERBS, ids=" ".join)
def test_broken_json_is_one_line_with_line_and_column(team: Team, args: tuple[str, ...]) -> None:
    broken = team.text().replace('"alice",', '"alice"', 1)  # drop a comma inside the slot entry
    team.config.write_text(broken, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(broken)
    result = team.run(*args)
    line = assert_error(result, "ac7.json", "invalid JSON")
    assert f"line {expected.value.lineno}" in line
    assert f"column {expected.value.colno}" in line
    assert team.text() == broken


def test_a_schema_error_names_the_json_path(team: Team) -> None:
    doc = read_doc(team.config)
    doc["slots"][0]["authority"] = "emperor"
    team.config.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    assert_error(team.run("slot", "list"), "ac7.json", "$.slots[0].authority")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "ac7.json").write_bytes(b"\xff\xfe{}")
    assert_error(run_ac7("slot", "list", cwd=tmp_path, env=env), "UTF-8")


def test_a_tampered_secret_names_the_field(team: Team) -> None:
    doc = read_doc(team.config)
    sealed = doc["slots"][0]["totpSecret"]
    prefix, iv, tag, ciphertext = sealed.split(":")
    flipped = ("B" if ciphertext[0] == "A" else "A") + ciphertext[1:]
    team.config.write_text(team.text().replace(sealed, f"{prefix}:{iv}:{tag}:{flipped}"), encoding="utf-8")
    before = team.config.read_bytes()
    assert_error(team.run("rotate", "--slot", "alice"), "slots/alice/totpSecret")
    assert team.config.read_bytes() == before


def test_a_key_file_readable_by_others_is_refused(team: Team) -> None:
    (team.dir / "ac7-kek.bin").chmod(0o644)
    assert_error(team.run("slot", "list"), "ac7-kek.bin", "600")


def test_a_key_file_of_the_wrong_length_is_refused(team: Team) -> None:
    key_file = team.dir / "ac7-kek.bin"
    key_file.write_bytes(key_file.read_bytes()[:16])
    assert_error(team.run("slot", "list"), "ac7-kek.bin", "32")


def test_a_missing_key_file_is_not_silently_replaced(team: Team) -> None:
    (team.dir / "ac7-kek.bin").unlink()
    before = team.config.read_bytes()
    assert_error(team.run("enroll", "--slot", "alice"), "ac7-kek.bin")
    assert not (team.dir / "ac7-kek.bin").exists()
    assert team.config.read_bytes() == before


def test_an_invalid_ac7_kek_is_one_line(team: Team) -> None:
    env = clean_env(team.dir, {"AC7_KEK": "!!! not base64 !!!"})
    assert_error(team.run("slot", "list", env=env), "AC7_KEK")


# --- --config and AC7_CONFIG ----------------------------------------------------------------------------------


def _team_elsewhere(tmp_path: Path) -> tuple[Path, Team]:
    """A team in tmp_path/elsewhere, and an empty working directory tmp_path/work."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path / "work", setup_team(tmp_path / "elsewhere")


def test_the_default_config_is_ac7_json_in_the_working_directory(tmp_path: Path) -> None:
    work, team = _team_elsewhere(tmp_path)
    # From the team's own directory the default finds it; from elsewhere it does not.
    assert "alice" in run_ac7("slot", "list", cwd=team.dir, env=team.env).out
    assert_error(run_ac7("slot", "list", cwd=work, env=clean_env(work)), "ac7.json")


@pytest.mark.parametrize(
    "args",
    [
        ("slot", "list"),
        ("slot", "add", "bob", "--role", "lead", "--no-qr"),
        ("rotate", "--slot", "alice"),
        ("enroll", "--slot", "alice", "--no-qr"),
    ],
    ids=" ".join,
)
def test_config_flag_and_env_are_honoured_by_every_config_verb(tmp_path: Path, args: tuple[str, ...]) -> None:
    work, team = _team_elsewhere(tmp_path)
    via_flag = run_ac7(*args, "--config", str(team.config), cwd=work, env=clean_env(work))
    assert via_flag.code == 0, str(via_flag)
    if args[1:2] == ("add",):
        team.run("slot", "remove", "bob", "--yes")
    via_env = run_ac7(*args, cwd=work, env=clean_env(work, {"AC7_CONFIG": str(team.config)}))
    assert via_env.code == 0, str(via_env)
    assert list(work.iterdir()) == []


def test_config_flag_beats_ac7_config(tmp_path: Path) -> None:
    work, team = _team_elsewhere(tmp_path)
    (tmp_path / "other").mkdir()
    other = setup_team(tmp_path / "other", team="other", director="zed")
    env = clean_env(work, {"AC7_CONFIG": str(other.config)})
    from_env = run_ac7("slot", "list", "--json", cwd=work, env=env)
    from_flag = run_ac7("slot", "list", "--json", "--config", str(team.config), cwd=work, env=env)
    assert [r["name"] for r in json.loads(from_env.out)] == ["zed"]
    assert [r["name"] for r in json.loads(from_flag.out)] == ["alice"]


def test_relative_config_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    work, team = _team_elsewhere(tmp_path)
    rel = os.path.relpath(team.config, work)
    result = run_ac7("rotate", "--slot", "alice", "--config", rel, cwd=work, env=clean_env(work))
    assert result.code == 0, str(result)
    assert read_doc(team.config)["slots"][0]["tokenHash"] == sha256_of(result.out.strip())
    assert list(work.iterdir()) == []


def test_errors_never_print_a_traceback_or_a_secret(team: Team) -> None:
    add_slot(team, "bob", "--role", "lead")
    failing = [
        ("slot", "add", "bob", "--role", "lead"),
        ("slot", "remove", "nobody", "--yes"),
        ("rotate", "--slot", "nobody"),
        ("enroll", "--slot", "nobody"),
        ("setup", "--team", "acme", "--director", "alice"),
    ]
    for args in failing:
        result = team.run(*args)
        assert_error(result)
        assert_no_traceback(result)
        for secret in [*team.tokens.values(), *team.secrets.values()]:
            assert secret not in result.err
