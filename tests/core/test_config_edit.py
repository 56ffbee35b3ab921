"""Edits through update_config: rotation, TOTP enrolment, adding/removing slots, and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ac7_core import tokens
from ac7_core.config_edit import add_slot, enroll_totp, find_slot, remove_slot, rotate_token
from ac7_core.config_file import load_config, update_config
from ac7_core.config_schema import ConfigError
from ac7_core.errors import Ac7Error
from ac7_core.sealed import seal, unseal

ALICE_TOKEN = "ac7_" + "A" * 43
BOB_TOKEN = "ac7_" + "B" * 43
CAROL_TOKEN = "ac7_" + "C" * 43
ALICE_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
DAVE_TOTP = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def _template(alice_sealed: str, dave_sealed: str) -> dict[str, str]:
    alice = (
        '{"name": "alice", "role": "lead", "authority": "director",\n'
        f'       "tokenHash": "{tokens.hash_token(ALICE_TOKEN)}",  "totpSecret": "{alice_sealed}"}}'
    )
    bob = '{ "name" : "bob", "role":"engineer",\t"tokenHash":"' + tokens.hash_token(BOB_TOKEN) + '" }'
    carol = (
        '{\n        "name": "carol",\n        "role": "engineer",\n        "authority": "manager",\n'
        f'        "tokenHash": "{tokens.hash_token(CAROL_TOKEN)}",\n        "_comment": "on call"\n      }}'
    )
    dave = '{"name":"dave","role":"lead","totpSecret":"' + dave_sealed + '"}'
    text = (
        "{\n"
        '  "_comment": "edited by hand",\n'
        '  "team":   {"name": "acme",  "x-team": 1},\n'
        '  "roles": {\n    "lead": {"description": "Plans"},\n    "engineer": {"description": "Builds"}\n  },\n'
        '  "slots": [\n'
        f"      {alice},\n"
        f"      {bob},\n"
        f"      {carol},\n"
        f"      {dave}\n"
        "  ],\n"
        '  "x-top": [1, {"a": "b"}]\n'
        "}\n"
    )
    return {"text": text, "alice": alice, "bob": bob, "carol": carol, "dave": dave}


@pytest.fixture
def team(tmp_path: Path, kek_key: bytes) -> dict[str, Any]:
    parts = _template(
        seal(kek_key, ALICE_TOTP, "slots/alice/totpSecret"), seal(kek_key, DAVE_TOTP, "slots/dave/totpSecret")
    )
    path = tmp_path / "ac7.json"
    path.write_text(parts["text"], encoding="utf-8")
    path.chmod(0o600)
    return {"path": path, **parts}


def _others(team: dict[str, Any], *but: str) -> list[str]:
    return [team[n] for n in ("alice", "bob", "carol", "dave") if n not in but]


def _hash(path: Path, name: str) -> str:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return str(find_slot(doc, name)["tokenHash"])


# ---- rotation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "old_token"), [("bob", BOB_TOKEN), ("carol", CAROL_TOKEN), ("alice", ALICE_TOKEN)])
def test_rotate_token_changes_only_that_hash(
    team: dict[str, Any], kek_env: dict[str, str], name: str, old_token: str
) -> None:
    path: Path = team["path"]
    before = path.read_text(encoding="utf-8")
    loaded, token = update_config(path, lambda d, _k: rotate_token(d, name), env=kek_env)

    assert tokens.TOKEN_RE.match(token)
    new_hash = _hash(path, name)
    assert tokens.token_matches(token, new_hash)
    assert not tokens.token_matches(old_token, new_hash)
    old_hash = tokens.hash_token(old_token)
    assert before.count(old_hash) == 1
    after = path.read_text(encoding="utf-8")
    assert after == before.replace(old_hash, new_hash)  # nothing else in the file changed
    for text in _others(team, name):
        assert text in after
    slot = loaded.config.slot(name)
    assert slot is not None and slot.token_hash == new_hash
    assert loaded.migrated == ()
    # The broker's lookup now finds the new token and not the old one.
    hashes = {s.name: s.token_hash for s in load_config(path, env=kek_env).config.slots if s.token_hash}
    assert tokens.find_token_owner(token, hashes) == name
    assert tokens.find_token_owner(old_token, hashes) is None


def test_rotating_twice_gives_different_tokens(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    _, first = update_config(team["path"], lambda d, _k: rotate_token(d, "bob"), env=kek_env)
    _, second = update_config(team["path"], lambda d, _k: rotate_token(d, "bob"), env=kek_env)
    assert first != second
    assert tokens.token_matches(second, _hash(team["path"], "bob"))
    assert not tokens.token_matches(first, _hash(team["path"], "bob"))


def test_rotate_replaces_a_plaintext_token_in_place(tmp_path: Path, kek_env: dict[str, str], base_doc) -> None:  # type: ignore[no-untyped-def]
    base_doc["slots"][1] = {"name": "bob", "role": "engineer", "token": BOB_TOKEN, "x": 1}
    path = tmp_path / "ac7.json"
    path.write_text(json.dumps(base_doc), encoding="utf-8")
    loaded, token = update_config(path, lambda d, _k: rotate_token(d, "bob"), env=kek_env)
    bob = find_slot(json.loads(path.read_text(encoding="utf-8")), "bob")
    assert list(bob) == ["name", "role", "tokenHash", "x"]
    assert tokens.token_matches(token, bob["tokenHash"])
    assert BOB_TOKEN not in path.read_text(encoding="utf-8")
    assert "slots/bob/token hashed" in loaded.migrated


def test_rotate_gives_a_totp_only_slot_a_token(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    loaded, token = update_config(team["path"], lambda d, _k: rotate_token(d, "dave"), env=kek_env)
    dave = find_slot(json.loads(team["path"].read_text(encoding="utf-8")), "dave")
    assert tokens.token_matches(token, dave["tokenHash"])
    assert loaded.config.slot("dave").totp_secret == DAVE_TOTP  # type: ignore[union-attr]


def test_rotate_unknown_slot_fails_and_leaves_the_file(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    before = team["path"].read_bytes()
    with pytest.raises(Ac7Error, match="no slot named 'zed'"):
        update_config(team["path"], lambda d, _k: rotate_token(d, "zed"), env=kek_env)
    assert team["path"].read_bytes() == before


# ---- TOTP enrolment --------------------------------------------------------------------------------------------


def test_enroll_totp_replaces_the_secret(team: dict[str, Any], kek_env: dict[str, str], kek_key: bytes) -> None:
    path: Path = team["path"]
    loaded, secret = update_config(path, lambda d, k: enroll_totp(d, k, "alice"), env=kek_env)
    assert secret != ALICE_TOTP
    sealed = find_slot(json.loads(path.read_text(encoding="utf-8")), "alice")["totpSecret"]
    assert sealed.startswith("enc-v1:")
    assert unseal(kek_key, sealed, "slots/alice/totpSecret") == secret
    assert secret not in path.read_text(encoding="utf-8")
    assert loaded.config.slot("alice").totp_secret == secret  # type: ignore[union-attr]
    assert load_config(path, env=kek_env).config.slot("alice").totp_secret == secret  # type: ignore[union-attr]
    after = path.read_text(encoding="utf-8")
    for text in _others(team, "alice"):
        assert text in after


def test_enroll_totp_adds_a_secret_to_a_bearer_slot(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    loaded, secret = update_config(team["path"], lambda d, k: enroll_totp(d, k, "bob"), env=kek_env)
    bob = loaded.config.slot("bob")
    assert bob is not None
    assert bob.totp_secret == secret
    assert tokens.token_matches(BOB_TOKEN, bob.token_hash)  # type: ignore[arg-type]


def test_enroll_totp_returns_a_fresh_secret_each_time(base_doc: dict[str, Any]) -> None:
    key = os.urandom(32)
    first = enroll_totp(base_doc, key, "alice")
    sealed_first = base_doc["slots"][0]["totpSecret"]
    second = enroll_totp(base_doc, key, "alice")
    assert first != second
    assert unseal(key, base_doc["slots"][0]["totpSecret"], "slots/alice/totpSecret") == second
    assert base_doc["slots"][0]["totpSecret"] != sealed_first


# ---- adding and removing slots ---------------------------------------------------------------------------------


def test_add_slot_appends_and_keeps_the_others(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_text(encoding="utf-8")
    loaded, token = update_config(path, lambda d, _k: add_slot(d, "erin", "engineer", "manager"), env=kek_env)
    assert token is not None and tokens.TOKEN_RE.match(token)
    doc = json.loads(path.read_text(encoding="utf-8"))
    erin = find_slot(doc, "erin")
    assert erin == {"name": "erin", "role": "engineer", "authority": "manager", "tokenHash": tokens.hash_token(token)}
    assert [s["name"] for s in doc["slots"]] == ["alice", "bob", "carol", "dave", "erin"]
    after = path.read_text(encoding="utf-8")
    for text in _others(team):
        assert text in after
    assert after.startswith(before[: before.index('  "slots"')])
    assert after.endswith(before[before.index('  "x-top"') :])
    assert loaded.config.slot("erin").authority == "manager"  # type: ignore[union-attr]


def test_add_slot_with_a_new_role_needs_a_description(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_bytes()
    with pytest.raises(Ac7Error, match="role 'qa' is not defined") as exc:
        update_config(path, lambda d, _k: add_slot(d, "erin", "qa", "individual-contributor"), env=kek_env)
    assert "engineer, lead" in str(exc.value)
    assert path.read_bytes() == before

    loaded, _ = update_config(
        path, lambda d, _k: add_slot(d, "erin", "qa", "individual-contributor", role_description="Tests"), env=kek_env
    )
    assert loaded.config.roles["qa"].description == "Tests"
    assert loaded.config.slot("erin").role == "qa"  # type: ignore[union-attr]


def test_add_slot_refuses_a_duplicate_name(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    before = team["path"].read_bytes()
    with pytest.raises(Ac7Error, match="already exists"):
        update_config(team["path"], lambda d, _k: add_slot(d, "bob", "engineer", "manager"), env=kek_env)
    assert team["path"].read_bytes() == before


@pytest.mark.parametrize(
    ("name", "authority", "fragment"),
    [
        ("bad name", "manager", "must match"),
        ("", "manager", "must match"),
        ("x" * 65, "manager", "must match"),
        ("ok", "admin", "authority must be one of"),
    ],
)
def test_add_slot_rejects_bad_arguments(base_doc: dict[str, Any], name: str, authority: Any, fragment: str) -> None:
    before = json.dumps(base_doc)
    with pytest.raises(Ac7Error, match=fragment):
        add_slot(base_doc, name, "lead", authority)
    assert json.dumps(base_doc) == before


def test_human_only_slot_needs_a_totp_secret(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_bytes()
    # Without a secret the edit produces an invalid config: it must be refused, not written.
    with pytest.raises(ConfigError, match="needs a token"):
        update_config(path, lambda d, _k: add_slot(d, "hana", "lead", "director", bearer=False), env=kek_env)
    assert path.read_bytes() == before

    def add_human(doc: dict[str, Any], key: bytes) -> tuple[str | None, str]:
        return add_slot(doc, "hana", "lead", "director", bearer=False), enroll_totp(doc, key, "hana")

    loaded, (token, secret) = update_config(path, add_human, env=kek_env)
    assert token is None
    hana = loaded.config.slot("hana")
    assert hana is not None and hana.token_hash is None and hana.totp_secret == secret


def test_remove_slot_keeps_the_others(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_text(encoding="utf-8")
    loaded, _ = update_config(path, lambda d, _k: remove_slot(d, "carol"), env=kek_env)
    after = path.read_text(encoding="utf-8")
    assert team["carol"] not in after
    assert "on call" not in after
    for text in _others(team, "carol"):
        assert text in after
    assert after.startswith(before[: before.index('  "slots"')])
    assert after.endswith(before[before.index('  "x-top"') :])
    assert [s.name for s in loaded.config.slots] == ["alice", "bob", "dave"]
    assert load_config(path, env=kek_env).config.slot("dave").totp_secret == DAVE_TOTP  # type: ignore[union-attr]


def test_remove_slot_refuses_the_last_director(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_bytes()
    with pytest.raises(Ac7Error, match="last director"):
        update_config(path, lambda d, _k: remove_slot(d, "alice"), env=kek_env)
    assert path.read_bytes() == before


def test_remove_a_director_when_another_remains(base_doc: dict[str, Any]) -> None:
    base_doc["slots"][1]["authority"] = "director"
    remove_slot(base_doc, "alice")
    assert [s["name"] for s in base_doc["slots"]] == ["bob"]
    with pytest.raises(Ac7Error, match="last director"):
        remove_slot(base_doc, "bob")
    assert [s["name"] for s in base_doc["slots"]] == ["bob"]


def test_remove_unknown_slot(base_doc: dict[str, Any]) -> None:
    with pytest.raises(Ac7Error, match="no slot named"):
        remove_slot(base_doc, "zed")


def test_find_slot(base_doc: dict[str, Any]) -> None:
    assert find_slot(base_doc, "bob") is base_doc["slots"][1]
    with pytest.raises(Ac7Error):
        find_slot(base_doc, "Bob")


def test_an_edit_that_breaks_the_config_is_not_written(team: dict[str, Any], kek_env: dict[str, str]) -> None:
    path: Path = team["path"]
    before = path.read_bytes()

    def break_it(doc: dict[str, Any], _key: bytes) -> None:
        doc["slots"][0]["authority"] = "overlord"

    with pytest.raises(ConfigError, match=r"\$\.slots\[0\]\.authority"):
        update_config(path, break_it, env=kek_env)
    assert path.read_bytes() == before


# ---- concurrent writers ----------------------------------------------------------------------------------------

WORKERS = [f"w{i}" for i in range(6)]
ROUNDS = 3

ROTATE_SCRIPT = """
import os, sys, time
from pathlib import Path
from ac7_core.config_file import update_config
from ac7_core.config_edit import rotate_token

path, name, key, go, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def edit(doc, _key):
    token = rotate_token(doc, name)
    time.sleep(0.02)  # widen the read-modify-write window: without the lock, updates would be lost
    return token

deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
for _ in range(rounds):
    _, token = update_config(path, edit, env={"AC7_KEK": key})
    print(token, flush=True)
"""


@pytest.fixture
def crowd(tmp_path: Path) -> Path:
    doc = {
        "team": {"name": "acme"},
        "roles": {"r": {}},
        "slots": [
            {"name": "boss", "role": "r", "authority": "director", "tokenHash": tokens.hash_token(ALICE_TOKEN)},
            *({"name": n, "role": "r", "tokenHash": tokens.hash_token(f"ac7_initial-token-{n}")} for n in WORKERS),
        ],
    }
    path = tmp_path / "ac7.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def _check_final(path: Path, kek_env: dict[str, str], issued: dict[str, list[str]]) -> None:
    config = load_config(path, env=kek_env).config
    for name, minted in issued.items():
        assert len(minted) == ROUNDS, (name, minted)
        slot = config.slot(name)
        assert slot is not None and slot.token_hash is not None
        assert tokens.token_matches(minted[-1], slot.token_hash), f"rotation of {name} was lost"
        for stale in minted[:-1]:
            assert not tokens.token_matches(stale, slot.token_hash)
    boss = config.slot("boss")
    assert boss is not None and tokens.token_matches(ALICE_TOKEN, boss.token_hash)  # type: ignore[arg-type]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_rotations_in_separate_processes_all_persist(
    crowd: Path, tmp_path: Path, kek_env: dict[str, str]
) -> None:
    go = tmp_path / "go"
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", ROTATE_SCRIPT, str(crowd), name, kek_env["AC7_KEK"], str(go), str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in WORKERS
    }
    go.touch()
    issued: dict[str, list[str]] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            issued[name] = out.split()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _check_final(crowd, kek_env, issued)


def test_concurrent_rotations_in_threads_all_persist(crowd: Path, kek_env: dict[str, str]) -> None:
    barrier = threading.Barrier(len(WORKERS))
    issued: dict[str, list[str]] = {name: [] for name in WORKERS}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        def edit(doc: dict[str, Any], _key: bytes) -> str:
            token = rotate_token(doc, name)
            time.sleep(0.01)
            return token

        try:
            barrier.wait(30)
            for _ in range(ROUNDS):
                issued[name].append(update_config(crowd, edit, env=kek_env)[1])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in WORKERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    _check_final(crowd, kek_env, issued)
