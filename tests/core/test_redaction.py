"""Secret redaction (`ac7_core.redaction`): recall and precision per rule, escaped and split contexts, headers,
secret JSON keys, counts, idempotence, unicode, and near-miss inputs that must not backtrack."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from redaction_corpus import (
    CASES,
    NOT_SECRETS,
    UNICODE_TEXTS,
    aws_key_id,
    claude_oauth_access,
    github,
    jwt,
    png_base64,
    sse_events,
)

from ac7_core.redaction import (
    RULE_IDS,
    RULES,
    Redactions,
    is_secret_header,
    is_secret_key,
    marker,
    redact_headers,
    redact_json,
    redact_text,
)
from ac7_core.tokens import mint_token

TEXT_RULES = [r.id for r in RULES if r.lead]
POSITIVES = [(rule, text, secret) for rule, case in CASES.items() for text, secret in case.positives]
POS_IDS = [f"{rule}-{i}" for i, (rule, _, _) in enumerate(POSITIVES)]
NEGATIVES = [(rule, text) for rule, case in CASES.items() for text in case.negatives]


def redacted(text: str) -> tuple[str, dict[str, int]]:
    counts = Redactions()
    return redact_text(text, counts), counts.as_dict()


# --- the rule table -----------------------------------------------------------------------------------------------


def test_rule_table() -> None:
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    for rule_id in RULE_IDS:
        # ids are valid `redactions` keys for the activity validator
        assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", rule_id)
        assert marker(rule_id) == f"[REDACTED:{rule_id}]"
    assert {"header", "json-key", "anthropic-oauth-access", "github-pat", "jwt", "private-key-pem"} <= set(RULE_IDS)
    assert all(isinstance(r.pattern, re.Pattern) for r in RULES)


def test_every_rule_has_two_positives_and_two_negatives() -> None:
    assert set(CASES) == set(TEXT_RULES)
    for rule_id, case in CASES.items():
        assert len(case.positives) >= 2, rule_id
        assert len(case.negatives) >= 2, rule_id


# --- recall and precision per rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=POS_IDS)
def test_positive(rule: str, text: str, secret: str) -> None:
    out, counts = redacted(text)
    assert secret not in out
    assert counts == {rule: 1}
    assert marker(rule) in out
    # Only the secret went: what surrounded it is still there.
    before, _, after = text.partition(secret)
    assert out.startswith(before[: max(0, len(before) - 30)])
    assert out.endswith(after[len(after) // 2 :] if after.strip() else "")


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=POS_IDS)
def test_positive_in_a_long_text(rule: str, text: str, secret: str) -> None:
    """Past 512 characters every pass runs its regex without the `in` pre-test: the same result."""
    filler = "Some ordinary prose with code: x = f(a, b) and a path /usr/lib; " * 10
    out, counts = redacted(f"{filler}\n{text}\n{filler}")
    assert secret not in out
    assert counts == {rule: 1}
    assert out.startswith(filler) and out.endswith(filler)


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=POS_IDS)
def test_rule_pattern_alone_finds_its_positive(rule: str, text: str, secret: str) -> None:
    """`Rule.pattern` (the rule on its own, as documented in RULES) matches what the merged passes redact."""
    (pattern,) = [r.pattern for r in RULES if r.id == rule]
    assert pattern.search(text) is not None


@pytest.mark.parametrize(("rule", "text"), NEGATIVES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(NEGATIVES)])
def test_negative(rule: str, text: str) -> None:
    assert redacted(text) == (text, {})


@pytest.mark.parametrize("text", NOT_SECRETS, ids=range(len(NOT_SECRETS)))
def test_not_secrets(text: str) -> None:
    assert redacted(text) == (text, {})
    assert redact_json({"content": text, "parts": text.split()}, Redactions()) == {
        "content": text,
        "parts": text.split(),
    }


def test_exact_outputs() -> None:
    """Whole-string expectations: what is replaced and what is kept, for the context rules."""
    key = aws_key_id()
    assert redacted(f"AWS_ACCESS_KEY_ID={key}\nAWS_REGION=eu-west-1")[0] == (
        "AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]\nAWS_REGION=eu-west-1"
    )
    assert redacted("postgres://app:Sup3r@db:5432/x?sslmode=require") == (
        "postgres://app:[REDACTED:url-credentials]@db:5432/x?sslmode=require",
        {"url-credentials": 1},
    )
    assert redacted("postgres://u:p@ss@db/x")[0] == "postgres://u:[REDACTED:url-credentials]@db/x"  # raw @ in password
    assert redacted('x {"access_token":"abc","expires_in":3600} y')[0] == (
        'x {"access_token":"[REDACTED:json-key]","expires_in":3600} y'
    )
    assert redacted("a\nexport DB_PASSWORD='p w1'\nb")[0] == "a\nexport DB_PASSWORD='[REDACTED:secret-assignment]'\nb"
    assert redacted("Authorization: Bearer abcdefghijklmnop1234 and more")[0] == (
        "Authorization: Bearer [REDACTED:bearer-in-text] and more"
    )
    stripe = "sk_" + "live_" + "FAKE0123456789abcdefXYZ"
    assert redacted(f"key='{stripe}'")[0] == "key='[REDACTED:stripe-key]'"  # the `s` goes too
    assert redacted("a://:y@h") == ("a://:[REDACTED:url-credentials]@h", {"url-credentials": 1})  # shortest match


def test_the_most_specific_rule_names_the_secret() -> None:
    token = github("ghp")
    out, counts = redacted(f"https://x-access-token:{token}@github.com/o/r and Bearer {jwt()}")
    assert counts == {"github-pat": 1, "jwt": 1}
    assert out == "https://x-access-token:[REDACTED:github-pat]@github.com/o/r and Bearer [REDACTED:jwt]"
    oauth = claude_oauth_access()
    assert redacted(f"Authorization: Bearer {oauth}") == (
        "Authorization: Bearer [REDACTED:anthropic-oauth-access]",
        {"anthropic-oauth-access": 1},
    )


def test_ac7_tokens_from_mint_token_are_redacted() -> None:
    """The ac7-token rule follows `ac7_core.tokens`' format; if that format changes, this fails."""
    for _ in range(50):
        token = mint_token()
        assert redacted(f"token {token}.") == ("token [REDACTED:ac7-token].", {"ac7-token": 1})


def test_pem_block_is_redacted_whole_and_a_truncated_one_loses_its_body() -> None:
    body = ["MIIEowIBAAKCAQEAx3FAKEbody0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "Zm9vYmFyYmF6cXV4FAKE==="]
    block = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END RSA PRIVATE KEY-----"
    assert redacted(f"a\n{block}\nb") == ("a\n[REDACTED:private-key-pem]\nb", {"private-key-pem": 1})
    escaped = json.dumps(block)[1:-1]  # `\n` escapes, as inside a JSON string shown raw
    assert redacted(f'"key": "{escaped}", "next": 1') == (
        '"key": "[REDACTED:private-key-pem]", "next": 1',
        {"private-key-pem": 1},
    )
    cut = "-----BEGIN RSA PRIVATE KEY-----\n" + body[0] + "\n" + body[1][:10]
    out, counts = redacted(cut + "…[truncated]")
    assert counts == {"private-key-pem": 1}
    assert all(line not in out for line in (body[0], body[1][:10]))
    two = block + "\nbetween\n" + block.replace("RSA ", "EC ")
    assert redacted(two) == ("[REDACTED:private-key-pem]\nbetween\n[REDACTED:private-key-pem]", {"private-key-pem": 2})


# --- escaped contexts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=POS_IDS)
def test_inside_json_escaped_tool_result(rule: str, text: str, secret: str) -> None:
    """A tool result that is itself JSON text (e.g. `cat response.json`): the secret sits in a JSON-escaped string,
    with `\\n` and `\\"` around it -- and one level deeper for JSON logged inside a JSON string."""
    once = json.dumps({"stdout": f"line one\n{text}\nline three", "exit": 0})
    twice = json.dumps({"body": once})
    for layer in (once, twice):
        escaped_secret = json.dumps(secret)[1:-1]
        assert escaped_secret in layer or json.dumps(escaped_secret)[1:-1] in layer
        out, counts = redacted(layer)
        assert escaped_secret not in out and json.dumps(escaped_secret)[1:-1] not in out
        assert counts == {rule: 1}


def test_image_block_base64_is_left_alone() -> None:
    data = png_base64(200_000)
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    counts = Redactions()
    assert redact_json({"content": [block]}, counts) == {"content": [block]}
    assert not counts


def test_in_a_parsed_tool_result_block() -> None:
    token = github("ghp")
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                        "content": [{"type": "text", "text": f"$ cat .env\nGH_TOKEN={token}\nDEBUG=1\n"}],
                    }
                ],
            }
        ]
    }
    counts = Redactions()
    out = redact_json(request, counts)
    assert counts.as_dict() == {"github-pat": 1}
    assert (
        out["messages"][0]["content"][0]["content"][0]["text"]
        == "$ cat .env\nGH_TOKEN=[REDACTED:github-pat]\nDEBUG=1\n"
    )
    assert out["messages"][0]["content"][0]["tool_use_id"] == "toolu_01A09q90qw90lq917835lq9"


# --- SSE: split secrets are caught on the reassembled text ------------------------------------------------------------


def _reassemble(events: list[str]) -> str:
    text = []
    for event in events:
        data = json.loads(event.split("data: ", 1)[1])
        text.append(data["delta"]["text"])
    return "".join(text)


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=POS_IDS)
def test_secret_split_across_sse_deltas(rule: str, text: str, secret: str) -> None:
    events = sse_events(f"Here you go: {text} -- done", [3, 7, 5, 11])
    assert all(secret not in e for e in events)  # the secret really is split
    out, counts = redacted(_reassemble(events))
    assert secret not in out
    assert counts == {rule: 1}


def test_redacting_deltas_one_by_one_would_leak() -> None:
    """Why redaction runs on the reassembled text: per-delta, a split token is never seen whole."""
    token = claude_oauth_access()
    events = sse_events(f"token {token}", [9])
    pieces = [json.loads(e.split("data: ", 1)[1])["delta"]["text"] for e in events]
    per_delta = "".join(redact_text(p, Redactions()) for p in pieces)
    assert token in per_delta
    assert token not in redact_text("".join(pieces), Redactions())


def test_split_tool_use_input_json_is_caught_after_parsing() -> None:
    token = aws_key_id()
    partial = json.dumps({"command": f"aws configure set aws_access_key_id {token}"})
    pieces = [partial[i : i + 4] for i in range(0, len(partial), 4)]
    counts = Redactions()
    out = redact_json(json.loads("".join(pieces)), counts)
    assert out == {"command": "aws configure set aws_access_key_id [REDACTED:aws-access-key-id]"}
    assert counts.as_dict() == {"aws-access-key-id": 1}


# --- headers -------------------------------------------------------------------------------------------------------


def test_headers() -> None:
    token = claude_oauth_access()
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("X-Api-Key", "sk-ant-whatever"),
        ("x-anthropic-api-key", "anything at all"),
        ("PROXY-AUTHORIZATION", "Basic Zm9vOmJhcg=="),
        ("Cookie", "a=1"),
        ("cookie", "sessionKey=sk-ant-sid01-abc; other=2"),
        ("Set-Cookie", "__Host-session=abc; Secure; HttpOnly"),
        ("set-cookie", "b=2"),
        ("x-goog-api-key", "AIza-not-even-valid"),
        ("X-Amz-Security-Token", "FwoGZXIvYXdzEFAKE"),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-claude-code-session-id", "123e4567-e89b-12d3-a456-426614174000"),
        ("X-Debug", f"leaked {token}"),
        ("authorization", ""),
    ]
    counts = Redactions()
    out = redact_headers(headers, counts)
    assert [name for name, _ in out] == [name for name, _ in headers]  # names kept as given, order kept
    values = dict(enumerate(v for _, v in out))
    for i in range(10):
        assert values[i] == "[REDACTED:header]", headers[i]
    assert [v for _, v in out[10:13]] == ["application/json", "2023-06-01", "123e4567-e89b-12d3-a456-426614174000"]
    assert out[13] == ("X-Debug", "leaked [REDACTED:anthropic-oauth-access]")
    assert out[14] == ("authorization", "")  # nothing to hide, nothing counted
    assert counts.as_dict() == {"anthropic-oauth-access": 1, "header": 10}
    assert headers[0] == ("Authorization", f"Bearer {token}")  # input untouched


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("authorization", True),
        ("Proxy-Authorization", True),
        ("X-API-KEY", True),
        ("x-anthropic-api-key", True),
        ("api-key", True),
        ("Cookie", True),
        ("SET-COOKIE", True),
        ("x-auth-token", True),
        ("x-client-secret", True),
        ("content-type", False),
        ("anthropic-ratelimit-tokens-remaining", False),
        ("x-claude-code-session-id", False),
        ("www-authenticate", False),
        ("x-stainless-retry-count", False),
        ("cookies-enabled", False),
    ],
)
def test_secret_header_names(name: str, secret: bool) -> None:
    assert is_secret_header(name) is secret


# --- secret JSON keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "access_token", "accessToken", "access-token", "ACCESS_TOKEN", "AccessToken", "accesstoken", "refresh_token",
        "refreshToken", "id_token", "idToken", "client_secret", "clientSecret", "code_verifier", "codeVerifier",
        "api_key", "apiKey", "api-key", "APIKey", "apikey", "x-api-key", "password", "Password", "db_password",
        "passwd", "secret", "webhookSecret", "SecretAccessKey", "aws_secret_access_key", "session_token",
        "private_key", "authorization", "Cookie",
    ],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens", "input_tokens", "token_type", "token_count", "tokens", "password_hash", "passwordPolicy",
        "secretName", "secrets", "key", "keys", "monkey", "api", "access_key_id", "AccessKeyId", "code", "idToken2x",
        "id", "authorization_url", "cookies", "",
    ],
)  # fmt: skip
def test_not_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_oauth_json_keys() -> None:
    body: dict[str, Any] = {
        "access_token": "opaque-1",
        "refreshToken": "opaque-2",
        "token_type": "Bearer",
        "expires_in": 3600,
        "nested": {"deeper": [{"ID_TOKEN": "opaque-3"}, {"client-secret": {"value": "opaque-4", "rotated": True}}]},
        "code_verifier": 12345,
        "api_key": ["k1", "k2"],
        "password": None,
        "secret": True,
        "Password": "",
        "scope": "user:inference",
    }
    original = copy.deepcopy(body)
    counts = Redactions()
    out = redact_json(body, counts)
    j = "[REDACTED:json-key]"
    assert out == {
        "access_token": j,
        "refreshToken": j,
        "token_type": "Bearer",
        "expires_in": 3600,
        "nested": {"deeper": [{"ID_TOKEN": j}, {"client-secret": j}]},
        "code_verifier": j,
        "api_key": j,
        "password": None,  # null carries nothing
        "secret": j,
        "Password": j,
        "scope": "user:inference",
    }
    assert counts.as_dict() == {"json-key": 8}
    assert body == original  # never mutated
    assert out is not body and out["nested"] is not body["nested"]


def test_json_schema_property_definitions_are_not_masked() -> None:
    schema = {
        "type": "object",
        "properties": {
            "password": {"type": "string", "description": "The password"},
            "api_key": {"$ref": "#/definitions/key"},
            "secret": "a value, not a schema",
        },
        "required": ["password"],
    }
    counts = Redactions()
    out = redact_json(schema, counts)
    assert out["properties"]["password"] == {"type": "string", "description": "The password"}
    assert out["properties"]["api_key"] == {"$ref": "#/definitions/key"}
    assert out["properties"]["secret"] == "[REDACTED:json-key]"
    assert counts.as_dict() == {"json-key": 1}
    # Outside `properties` a schema-looking value under a secret key is still masked.
    assert redact_json({"password": {"type": "string"}}, Redactions()) == {"password": "[REDACTED:json-key]"}


def test_keys_are_redacted_when_they_are_secrets_and_collisions_keep_both_values() -> None:
    a, b = github("ghp"), github("ghp")
    counts = Redactions()
    out = redact_json({a: 1, b: 2, "normal": 3}, counts)
    assert out == {"[REDACTED:github-pat]": 1, "[REDACTED:github-pat]#2": 2, "normal": 3}
    assert counts.as_dict() == {"github-pat": 2}
    # the trace builder's query-string use: free({key: value}).get(key)
    assert redact_json({"code_verifier": "abc"}, Redactions()).get("code_verifier") == "[REDACTED:json-key]"


def test_redact_json_types() -> None:
    token = github("gho")
    counts = Redactions()
    value = (1, 2.5, True, None, token, [token], {"k": (token,)}, {3: token})
    out = redact_json(value, counts)
    g = "[REDACTED:github-oauth]"
    assert out == [1, 2.5, True, None, g, [g], {"k": [g]}, {3: g}]  # tuples become lists; non-str keys kept
    assert counts.as_dict() == {"github-oauth": 4}
    assert redact_json(token, Redactions()) == g
    assert redact_json(42, Redactions()) == 42


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    token = aws_key_id()
    deep: Any = [f"key {token}"]
    for i in range(5000):
        deep = {"level": deep} if i % 2 else [deep]
    counts = Redactions()
    out = redact_json(deep, counts)
    assert counts.as_dict() == {"aws-access-key-id": 1}
    while not isinstance(out, str):
        out = out["level"] if isinstance(out, dict) else out[0]
    assert out == "key [REDACTED:aws-access-key-id]"


def test_redact_json_equals_redact_text_on_each_string() -> None:
    """The joined-text fast path changes nothing: same strings, same counts as redact_text one by one -- including
    secrets at string edges and halves of a secret in neighbouring strings (which are not a secret)."""
    token = github("ghp")
    strings = [text for _, text, _ in POSITIVES] + [text for _, text in NEGATIVES] + NOT_SECRETS + UNICODE_TEXTS
    strings += [token, f"{token}\x00", f"\x00{token}", token[:20], token[20:], "ghp_", token[4:], "a\x00b" * 10]
    strings += ["\\n", f"n{token}", f"\\n{token}", "-----BEGIN RSA PRIVATE KEY-----", "MIIE" * 20, "=" * 20, '":' * 20]
    # A replacement can create a candidate for a later pass: the ac7 token's right boundary rejects the `-` of the PEM
    # header, but not the `[` of the PEM's marker. Sequential redaction catches it, and so must the fast path.
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    strings += [mint_token() + pem]
    one_by_one = Redactions()
    expected = [redact_text(s, one_by_one) for s in strings]
    joined = Redactions()
    assert redact_json(strings, joined) == expected
    assert joined == one_by_one
    assert redact_json(strings[:2], Redactions()) == expected[:2]


# --- counts --------------------------------------------------------------------------------------------------------


def test_counts_per_rule_and_never_values() -> None:
    texts = [text for _, text, _ in POSITIVES]
    secrets = [secret for _, _, secret in POSITIVES]
    counts = Redactions()
    for text in texts:
        redact_text(text, counts)
    expected: dict[str, int] = {}
    for rule, _, _ in POSITIVES:
        expected[rule] = expected.get(rule, 0) + 1
    assert counts.as_dict() == dict(sorted(expected.items()))
    assert list(counts.as_dict()) == sorted(expected)
    assert counts.total == len(POSITIVES)
    dumped = json.dumps(counts.as_dict()) + repr(counts)
    assert all(secret not in dumped for secret in secrets)
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in counts.as_dict().items())
    assert set(counts.as_dict()) <= set(RULE_IDS)


def test_redactions_counter() -> None:
    counts = Redactions()
    assert not counts and counts.as_dict() == {} and counts.total == 0
    counts.add("jwt")
    counts.add("jwt", 2)
    counts.update(Redactions({"header": 1}))
    counts.update({"jwt": 1})
    assert counts.as_dict() == {"header": 1, "jwt": 4}
    assert counts.get("jwt") == 4 and counts.get("nope") == 0
    assert counts == Redactions({"jwt": 4, "header": 1})
    snapshot = counts.as_dict()
    snapshot["jwt"] = 99
    assert counts.get("jwt") == 4  # as_dict is a copy


def test_counts_accumulate_across_calls() -> None:
    counts = Redactions()
    redact_headers([("authorization", "Bearer x")], counts)
    redact_json({"access_token": "x"}, counts)
    redact_text(f"key {aws_key_id()}", counts)
    assert counts.as_dict() == {"aws-access-key-id": 1, "header": 1, "json-key": 1}


# --- idempotence ---------------------------------------------------------------------------------------------------


def _everything() -> list[str]:
    return [text for _, text, _ in POSITIVES] + [text for _, text in NEGATIVES] + NOT_SECRETS


def test_idempotent_text() -> None:
    for text in _everything():
        once = redact_text(text, Redactions())
        again = Redactions()
        assert redact_text(once, again) == once, text
        assert not again, text


def test_idempotent_json_and_headers() -> None:
    value = {
        "access_token": "x",
        "items": _everything(),
        "nested": {"password": {"a": 1}, github("ghp"): "v"},
    }
    once = redact_json(value, Redactions())
    again = Redactions()
    assert redact_json(once, again) == once
    assert not again
    headers = [("Authorization", "Bearer x"), ("x-debug", f"k {aws_key_id()}")]
    h1 = redact_headers(headers, Redactions())
    h2_counts = Redactions()
    assert redact_headers(h1, h2_counts) == h1
    assert not h2_counts


def test_markers_are_never_re_redacted() -> None:
    for rule_id in RULE_IDS:
        m = marker(rule_id)
        for text in (m, f"Bearer {m}", f"https://u:{m}@h", f'{{"password": "{m}"}}', f"TOKEN={m}", f"key={m}&x=1"):
            assert redacted(text) == (text, {}), text
        assert redact_json({"access_token": m, "text": m}, Redactions()) == {"access_token": m, "text": m}
        assert redact_headers([("cookie", "[REDACTED:header]")], c := Redactions()) == [("cookie", "[REDACTED:header]")]
        assert not c


# --- unicode -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", UNICODE_TEXTS, ids=range(len(UNICODE_TEXTS)))
def test_unicode_survives(text: str) -> None:
    assert redacted(text) == (text, {})
    assert redact_json({text: [text]}, Redactions()) == {text: [text]}
    token = github("ghs")
    assert redacted(f"{text} {token} {text}") == (f"{text} [REDACTED:github-app-token] {text}", {"github-app-token": 1})


# --- adversarial input ---------------------------------------------------------------------------------------------

MB = 1_000_000


def _fill(unit: str) -> str:
    return (unit * (MB // len(unit) + 1))[:MB]


NEAR_MISSES = {
    "sk-ant-run": "sk-ant-" + "a" * 19 + " ",
    "sk-glued": "sk-" * 3,
    "github-short": "ghp_" + "A1" * 17 + "_",
    "gh-glued": "ghghghp_",
    "aws-long": "AKIA" + "A" * 17 + " ",
    "aws-glued": "AKIAAKIA",
    "jwt-no-dots": "eyJ" + "a" * 40 + " ",
    "jwt-two-segments": "eyJ" + "a" * 12 + ".eyJ" + "b" * 12 + "?",
    "pem-short-dashes": "-----BEGIN RSA PRIVATE KEY----\n" + "A" * 63 + "\n",
    "pem-certificate": "-----BEGIN CERTIFICATE-----\n" + "A" * 63 + "\n",
    "pem-label-words": "-----BEGIN A B C D E PRIVATE KEY-----" + "\\" * 20,
    "url-no-at": "https://user:" + "p" * 40 + " ",
    "url-colons": "://a:b:c:d:e:",
    "bearer-short": "Bearer abcdefgh ",
    "bearer-spaces": "Bearer" + " " * 40,
    "basic-bad": "Basic aGVsbG8= ",
    "json-key-unclosed": '"password": "' + "v" * 30 + "\n",
    "json-key-escapes": '\\"token\\": \\"' + "\\\\" * 20,
    "assignment": "MAX_TOKENS=4096 ",
    "assignment-spaced": "secret = value ",
    "equals": "=",
    "quote-colon": '":',
    "slack-no-digit": "xoxb-" + "a" * 30 + " ",
    "x-run": "x" * 50,
    "A-run": "A" * 50,
    "backslashes": "\\",
    "dash-run": "-" * 50 + "BEGIN",
    "url-run": "://" + "a" * 50,
    "npmrc": "//r/:_authToken=${NPM_TOKEN}\n",
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_one_megabyte_of_near_misses(name: str) -> None:
    """Every quantifier is possessive or bounded, so 1 MB of near-matches is a linear scan (this only has to
    finish; a catastrophic pattern would not). Nothing here is a secret, so nothing changes."""
    text = _fill(NEAR_MISSES[name])
    assert redacted(text) == (text, {})
    assert redact_json([text], Redactions()) == [text]


def test_one_megabyte_of_pem_headers_without_end() -> None:
    """Each header is a key cut short (redacted with the base64 lines after it); the search for an END line stops at
    the next `-----`, so a megabyte of headers stays linear."""
    for unit in ("-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 63 + "\n", "-----BEGIN PRIVATE KEY-----" + "\\" * 50):
        text = _fill(unit)
        out, counts = redacted(text)
        assert counts == {"private-key-pem": text.count("-----BEGIN")}
        assert "AAAAAAAAAAAAAAAA" not in out


def test_one_megabyte_of_secrets_and_near_misses_mixed() -> None:
    token = github("ghp")
    text = _fill(f"{token} sk-ant-short AKIAAKIA eyJx.eyJy. \\n-----BEGIN PRIVATE KEY----- Bearer x ")
    out, counts = redacted(text)
    assert token not in out
    assert counts["github-pat"] == text.count(token)
    assert counts["private-key-pem"] == text.count("-----BEGIN PRIVATE KEY-----")
