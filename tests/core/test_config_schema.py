"""Malformed configs: one case per rule, each reported as `<file>: <json path>: <reason>` on one line."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ac7_core import config_schema, tokens, totp
from ac7_core.config_file import load_config, parse
from ac7_core.config_schema import ConfigError, validate
from ac7_core.errors import Ac7Error

H1 = tokens.hash_token("ac7_" + "1" * 43)
H2 = tokens.hash_token("ac7_" + "2" * 43)
BAD_SECRET = "notbase32secret!!"

BASE: dict[str, Any] = {
    "team": {"name": "acme"},
    "roles": {"lead": {"description": "Plans"}, "engineer": {"description": "Builds"}},
    "slots": [
        {"name": "alice", "role": "lead", "authority": "director", "tokenHash": H1},
        {"name": "bob", "role": "engineer", "tokenHash": H2},
    ],
}

Mutator = Callable[[dict[str, Any]], Any]  # edits in place, or returns a replacement root


def _set(*path: Any, value: Any) -> Mutator:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _del(*path: Any) -> Mutator:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


def _all(*mutators: Mutator) -> Mutator:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutators:
            m(doc)

    return mutate


KEK_BLOCK = {
    "kdf": "argon2id",
    "salt": "A" * 22,
    "timeCost": 3,
    "memoryCost": 65536,
    "parallelism": 1,
    "check": "enc-v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA:AAAA",
}
WEB_PUSH = {"vapidPublicKey": "BPub_lic-key", "vapidPrivateKey": "priv_ate-key"}

# (id, mutation of BASE, JSON path, reason fragment)
# fmt: off
DOC_CASES: list[tuple[str, Mutator, str, str]] = [
    ("not-an-object", lambda d: [d], "$", "must be an object, got an array"),
    ("missing-team", _del("team"), "$.team", "is required"),
    ("team-not-object", _set("team", value="acme"), "$.team", "must be an object, got a string"),
    ("team-name-missing", _set("team", value={}), "$.team.name", "is required"),
    ("team-name-empty", _set("team", "name", value=""), "$.team.name", "must not be empty"),
    ("team-name-too-long", _set("team", "name", value="x" * 129), "$.team.name", "at most 128 characters, got 129"),
    ("team-name-not-string", _set("team", "name", value=7), "$.team.name", "must be a string, got a number"),
    ("team-name-null", _set("team", "name", value=None), "$.team.name", "must be a string, got null"),
    ("team-directive-too-long", _set("team", "directive", value="x" * 513), "$.team.directive", "at most 512"),
    ("team-brief-not-string", _set("team", "brief", value=["x"]), "$.team.brief", "must be a string, got an array"),
    ("roles-not-object", _set("roles", value=[]), "$.roles", "must be an object, got an array"),
    ("role-bad-name", _set("roles", "bad role", value={}), "$.roles.bad role", "role names must match"),
    ("role-not-object", _set("roles", "lead", value="Plans"), "$.roles.lead", "must be an object, got a string"),
    ("role-description-bool", _set("roles", "lead", "description", value=True), "$.roles.lead.description",
     "must be a string, got a boolean"),
    ("slots-missing", _del("slots"), "$.slots", "is required"),
    ("slots-not-array", _set("slots", value={}), "$.slots", "must be an array, got an object"),
    ("slots-empty", _set("slots", value=[]), "$.slots", "must hold at least one slot"),
    ("slot-not-object", _set("slots", 1, value="bob"), "$.slots[1]", "must be an object, got a string"),
    ("slot-name-missing", _del("slots", 1, "name"), "$.slots[1].name", "is required"),
    ("slot-name-pattern", _set("slots", 1, "name", value="bob smith"), "$.slots[1].name", "must match"),
    ("slot-name-slash", _set("slots", 1, "name", value="bob/x"), "$.slots[1].name", "must match"),
    ("slot-name-too-long", _set("slots", 1, "name", value="b" * 65), "$.slots[1].name", "must match"),
    ("slot-name-duplicate", _set("slots", 1, "name", value="alice"), "$.slots[1].name",
     'duplicate slot name "alice" (also $.slots[0])'),
    ("slot-role-missing", _del("slots", 1, "role"), "$.slots[1].role", "is required"),
    ("slot-role-unknown", _set("slots", 1, "role", value="qa"), "$.slots[1].role",
     'role "qa" is not defined in $.roles'),
    ("slot-authority-bad", _set("slots", 1, "authority", value="admin"), "$.slots[1].authority",
     "must be one of director, manager, individual-contributor"),
    ("slot-authority-case", _set("slots", 0, "authority", value="Director"), "$.slots[0].authority",
     "must be one of"),
    ("slot-token-and-hash", _set("slots", 1, "token", value="ac7_" + "x" * 43), "$.slots[1]",
     "has both token and tokenHash"),
    ("slot-no-credentials", _del("slots", 1, "tokenHash"), "$.slots[1]",
     "needs a token, a tokenHash, or (for a human-only slot) a totpSecret"),
    ("slot-token-short", _all(_del("slots", 1, "tokenHash"), _set("slots", 1, "token", value="ac7_short")),
     "$.slots[1].token", "shorter than 16 characters"),
    ("slot-token-not-string", _all(_del("slots", 1, "tokenHash"), _set("slots", 1, "token", value=12345)),
     "$.slots[1].token", "must be a string"),
    ("slot-token-hash-uppercase", _set("slots", 1, "tokenHash", value="sha256:" + "A" * 64),
     "$.slots[1].tokenHash", "must be sha256: followed by 64 lowercase hex digits"),
    ("slot-token-hash-short", _set("slots", 1, "tokenHash", value="sha256:abc"),
     "$.slots[1].tokenHash", "must be sha256:"),
    ("slot-token-hash-plain-token", _set("slots", 1, "tokenHash", value="ac7_" + "x" * 43),
     "$.slots[1].tokenHash", "must be sha256:"),
    ("slot-token-hash-duplicate", _set("slots", 1, "tokenHash", value=H1), "$.slots[1].tokenHash",
     'same token as slot "alice"'),
    ("slot-totp-bad", _set("slots", 1, "totpSecret", value=BAD_SECRET), "$.slots[1].totpSecret",
     "must be a base32 secret"),
    ("slot-totp-lowercase", _set("slots", 1, "totpSecret", value="jbswy3dpehpk3pxp"), "$.slots[1].totpSecret",
     "must be a base32 secret"),
    ("slot-totp-too-short", _set("slots", 1, "totpSecret", value="JBSWY3DP"), "$.slots[1].totpSecret",
     "must be a base32 secret"),
    ("slot-totp-bad-sealed", _set("slots", 1, "totpSecret", value="enc-v1:abc"), "$.slots[1].totpSecret",
     "or an enc-v1 value"),
    ("slot-totp-empty", _set("slots", 1, "totpSecret", value=""), "$.slots[1].totpSecret", "must not be empty"),
    ("no-director", _set("slots", 0, "authority", value="manager"), "$.slots",
     "at least one slot must have authority director"),
    ("web-push-not-object", _set("webPush", value="x"), "$.webPush", "must be an object"),
    ("web-push-no-public", _set("webPush", value={"vapidPrivateKey": "abc"}), "$.webPush.vapidPublicKey",
     "is required"),
    ("web-push-bad-public", _set("webPush", value={**WEB_PUSH, "vapidPublicKey": "a+b/c="}),
     "$.webPush.vapidPublicKey", "must be base64url"),
    ("web-push-no-private", _set("webPush", value={"vapidPublicKey": "abc"}), "$.webPush.vapidPrivateKey",
     "is required"),
    ("web-push-bad-private", _set("webPush", value={**WEB_PUSH, "vapidPrivateKey": BAD_SECRET}),
     "$.webPush.vapidPrivateKey", "must be a base64url private key or an enc-v1 value"),
    ("web-push-bad-subject", _set("webPush", value={**WEB_PUSH, "vapidSubject": "ops@acme.test"}),
     "$.webPush.vapidSubject", "must be a mailto: or https:// URL"),
    ("web-push-http-subject", _set("webPush", value={**WEB_PUSH, "vapidSubject": "http://acme.test"}),
     "$.webPush.vapidSubject", "must be a mailto: or https:// URL"),
    ("https-not-object", _set("https", value=True), "$.https", "must be an object, got a boolean"),
    ("https-mode-bad", _set("https", value={"mode": "on"}), "$.https.mode", 'must be one of off, custom, got "on"'),
    ("https-custom-no-cert", _set("https", value={"mode": "custom", "keyPath": "/k"}), "$.https.certPath",
     "is required"),
    ("https-custom-no-key", _set("https", value={"mode": "custom", "certPath": "/c"}), "$.https.keyPath",
     "is required"),
    ("https-custom-empty-cert", _set("https", value={"mode": "custom", "certPath": "", "keyPath": "/k"}),
     "$.https.certPath", "must not be empty"),
    ("kek-not-object", _set("kek", value="argon2id"), "$.kek", "must be an object"),
    ("kek-bad-kdf", _set("kek", value={**KEK_BLOCK, "kdf": "scrypt"}), "$.kek.kdf", 'must be argon2id, got "scrypt"'),
    ("kek-no-kdf", _set("kek", value={k: v for k, v in KEK_BLOCK.items() if k != "kdf"}), "$.kek.kdf",
     "must be argon2id, got null"),
    ("kek-short-salt", _set("kek", value={**KEK_BLOCK, "salt": "AAAA"}), "$.kek.salt", "at least 22 characters"),
    ("kek-salt-not-b64url", _set("kek", value={**KEK_BLOCK, "salt": "+" * 22}), "$.kek.salt", "must be base64url"),
    ("kek-time-cost-zero", _set("kek", value={**KEK_BLOCK, "timeCost": 0}), "$.kek.timeCost",
     "must be between 1 and 64, got 0"),
    ("kek-memory-cost-bool", _set("kek", value={**KEK_BLOCK, "memoryCost": True}), "$.kek.memoryCost",
     "must be an integer, got a boolean"),
    ("kek-memory-cost-tiny", _set("kek", value={**KEK_BLOCK, "memoryCost": 1024}), "$.kek.memoryCost",
     "must be between"),
    ("kek-parallelism-missing", _set("kek", value={k: v for k, v in KEK_BLOCK.items() if k != "parallelism"}),
     "$.kek.parallelism", "is required"),
    ("kek-check-bad", _set("kek", value={**KEK_BLOCK, "check": "plaintext"}), "$.kek.check",
     "must be an enc-v1 value"),
]
# fmt: on


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "ac7.json"


def _load_error(path: Path, env: dict[str, str]) -> str:
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(Ac7Error) as exc:
        load_config(path, env=env)
    message = str(exc.value)
    assert "\n" not in message
    if before is not None:
        assert path.read_bytes() == before  # a failed load never writes
    return message


def test_the_base_document_is_valid(config_path: Path, kek_env: dict[str, str]) -> None:
    config_path.write_text(json.dumps(BASE), encoding="utf-8")
    assert [s.name for s in load_config(config_path, env=kek_env).config.slots] == ["alice", "bob"]


@pytest.mark.parametrize(("mutate", "where", "fragment"), [c[1:] for c in DOC_CASES], ids=[c[0] for c in DOC_CASES])
def test_malformed_document(
    config_path: Path, kek_env: dict[str, str], mutate: Mutator, where: str, fragment: str
) -> None:
    doc: Any = copy.deepcopy(BASE)
    replacement = mutate(doc)
    if replacement is not None:
        doc = replacement
    config_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    message = _load_error(config_path, kek_env)
    assert message.startswith(f"{config_path}: {where}: "), message
    assert fragment in message, message
    assert BAD_SECRET not in message  # secrets are never echoed
    with pytest.raises(ConfigError) as exc:
        validate(doc)
    assert exc.value.where == where
    assert fragment in exc.value.reason


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{\n  "team": {"name": "acme"},\n  "slots": [,]\n}', "invalid JSON at line 3 column 13"),
        ("", "invalid JSON at line 1 column 1"),
        ('{"team": {"name": "acme"}', "invalid JSON at line 1 column 26"),
        ("{\n  // comment\n}", "invalid JSON at line 2 column 3"),
        ('{\n  "a": 1,}', "invalid JSON at line 2"),  # the column differs between Python versions
        ('"just a string"', "$: must be an object, got a string"),
        ("null", "$: must be an object, got null"),
        ("42", "$: must be an object, got a number"),
        (
            '{\n  "team": {"name": "acme"},\n  "roles": {"lead": {}},\n  "slots": [\n'
            '    {"name": "a", "role": "lead", "authority": "director",\n'
            '     "tokenHash": "' + H1 + '", "name": "b"}\n  ]\n}',
            'duplicate key "name" at line 6 column' + " " + str(len('     "tokenHash": "' + H1 + '", ') + 1),
        ),
        ('{"team": {"name": "a"}, "team": {"name": "b"}}', 'duplicate key "team" at line 1 column 25'),
    ],
    ids=[
        "invalid-json",
        "empty-file",
        "truncated",
        "comment",
        "trailing-comma",
        "string-root",
        "null-root",
        "number-root",
        "duplicate-key-in-slot",
        "duplicate-top-level-key",
    ],
)
def test_malformed_text(config_path: Path, kek_env: dict[str, str], text: str, fragment: str) -> None:
    config_path.write_text(text, encoding="utf-8")
    message = _load_error(config_path, kek_env)
    assert message.startswith(f"{config_path}: "), message
    assert fragment in message, message


def test_not_utf8(config_path: Path, kek_env: dict[str, str]) -> None:
    config_path.write_bytes(b'{"team": {"name": "caf\xe9"}}')
    message = _load_error(config_path, kek_env)
    assert message == f"{config_path}: not UTF-8 (byte offset 22)"


def test_missing_file_suggests_setup(config_path: Path, kek_env: dict[str, str]) -> None:
    message = _load_error(config_path, kek_env)
    assert message.startswith(f"{config_path}: config not found")
    assert f"ac7 setup --config {config_path}" in message


def test_malformed_config_creates_no_key_file(config_path: Path) -> None:
    # Validation happens before the KEK is resolved: a typo must not leave a stray key file behind.
    config_path.write_text('{"team": {}}', encoding="utf-8")
    _load_error(config_path, {})
    assert sorted(p.name for p in config_path.parent.iterdir()) == ["ac7.json"]


def test_human_only_slot_with_only_a_totp_secret_is_valid() -> None:
    doc = copy.deepcopy(BASE)
    doc["slots"].append({"name": "hana", "role": "lead", "totpSecret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
    validate(doc)


def test_unknown_keys_are_allowed_everywhere() -> None:
    doc = copy.deepcopy(BASE)
    doc["_comment"] = "x"
    doc["team"]["x"] = {"y": [1]}
    doc["roles"]["lead"]["x"] = 1
    doc["slots"][0]["x"] = None
    doc["https"] = {"mode": "off", "x": 1}
    doc["webPush"] = {**WEB_PUSH, "x": 2}
    doc["kek"] = {**KEK_BLOCK, "x": 3}
    validate(doc)


def test_a_plaintext_token_of_exactly_the_minimum_length_is_accepted() -> None:
    doc = copy.deepcopy(BASE)
    del doc["slots"][1]["tokenHash"]
    doc["slots"][1]["token"] = "x" * config_schema.MIN_PLAINTEXT_TOKEN
    validate(doc)
    doc["slots"][1]["token"] = "x" * (config_schema.MIN_PLAINTEXT_TOKEN - 1)
    with pytest.raises(ConfigError):
        validate(doc)


def test_parse_prefixes_the_source() -> None:
    with pytest.raises(ConfigError) as exc:
        parse('{"team": {"name": ""}, "slots": []}', "inline")
    assert str(exc.value) == "inline: $.team.name: must not be empty"
    assert isinstance(exc.value, Ac7Error)


def test_long_values_are_truncated_in_messages() -> None:
    doc = copy.deepcopy(BASE)
    doc["slots"][1]["role"] = "r" * 60
    with pytest.raises(ConfigError) as exc:
        validate(doc)
    assert "r" * 60 not in str(exc.value)
    assert "..." in str(exc.value)


@pytest.mark.parametrize(
    "secret",
    [
        "JBSWY3DPEHPK3PXP",  # 16 chars = 80 bits: the classic authenticator example
        "JBSWY3DPEHPK3PXPJB",  # 18 chars = 90 bits
        "JBSWY3DPEHPK3PXPJBSWY3DP",  # 24 chars = 120 bits: below the 128 bits RFC 4226 requires
        "A" * 17,  # base32 length 17 (mod 8 == 1) cannot be decoded
        "A" * 19,
        "A" * 22,
        "JBSWY3DPEHPK3PXPJBSWY3DP===",
        "A" * 32 + "=" * 8,
    ],
)
def test_an_accepted_totp_secret_can_verify_codes(config_path: Path, kek_env: dict[str, str], secret: str) -> None:
    """A totpSecret the config accepts must be usable by the code check (else every login for the slot crashes)."""
    doc = copy.deepcopy(BASE)
    doc["slots"].append({"name": "hana", "role": "lead", "totpSecret": secret})
    config_path.write_text(json.dumps(doc), encoding="utf-8")
    try:
        config = load_config(config_path, env=kek_env).config
    except ConfigError as exc:
        assert "$.slots[2].totpSecret" in str(exc)  # rejecting it up front is fine
        return
    hana = config.slot("hana")
    assert hana is not None and hana.totp_secret == secret
    # Accepted: verifying a code must answer None or a step, not raise.
    try:
        step = totp.match_step(hana.totp_secret, "000000", now=1_700_000_000)
    except Exception as exc:
        pytest.fail(f"the config accepted a totpSecret that cannot verify codes: {exc!r}")
    assert step in (None, 56666665, 56666666, 56666667)


@pytest.mark.parametrize(
    "secret", ["JBSWY3DPEHPK3PXPJBSWY3DPEE", "A" * 32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" + "A" * 96]
)
def test_good_totp_secrets_are_accepted_and_usable(config_path: Path, kek_env: dict[str, str], secret: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["slots"].append({"name": "hana", "role": "lead", "totpSecret": secret})
    config_path.write_text(json.dumps(doc), encoding="utf-8")
    hana = load_config(config_path, env=kek_env).config.slot("hana")
    assert hana is not None and hana.totp_secret == secret
    code = totp.code_at(secret, 1_700_000_000)
    assert totp.match_step(secret, code, now=1_700_000_000) == 1_700_000_000 // 30
