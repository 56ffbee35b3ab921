"""Secret redaction for traces: one pure function family applied before anything leaves the runner (DESIGN §6).

Three entry points share one rule table and one counter:

- `redact_text(text, counts)` replaces every secret pattern in a decoded string with `[REDACTED:<rule id>]`.
- `redact_headers(headers, counts)` masks the whole value of credential headers (`authorization`,
  `proxy-authorization`, `x-api-key`, `x-anthropic-api-key`, `cookie`, `set-cookie`, and any name ending in
  `api-key`/`api_key`/`apikey`, `token`, `secret`, `password`/`passwd`) as `[REDACTED:header]`; every other value
  goes through `redact_text`. Empty values stay empty (there is nothing to hide).
- `redact_json(value, counts)` returns a new structure: the value under a secret key becomes
  `[REDACTED:json-key]` whatever its type (string, number, bool, list, object; `null` stays `null` because it
  carries nothing), every other string goes through `redact_text`. Keys also go through `redact_text` (a key can be
  a token: env maps, header dicts keyed by value); if two keys redact to the same text the later one gets `#2`,
  `#3`, ... so no value is lost.

`Redactions` counts how often each rule fired, by rule id only; no value, prefix or hash of a secret is ever kept.

**Secret keys** (`json-key`). A key is split into words (`snake_case`, `kebab-case`, `camelCase`, `UPPER_CASE`) and
matches when its words end with one of: access token, refresh token, id token, auth token, session token, client
secret, code verifier, api key, private key, secret access key, or a last word password, passwd, secret,
authorization, cookie (and the unseparated `accesstoken`, `apikey`, ...). So `access_token`, `accessToken`,
`access-token`, `ACCESS_TOKEN`, `x-api-key`, `db_password`, `clientSecret`, `SecretAccessKey` match, while
`max_tokens`, `password_hash`, `secretName`, `token_count` do not. One exception keeps tool definitions readable: in
a JSON Schema `"properties"` object, a child whose value is itself a schema (has `type`, `$ref`, `anyOf`, `oneOf`,
`allOf`, `enum` or `const`) is a property *definition*, so `{"properties": {"password": {"type": "string"}}}` is
walked normally rather than masked. The same key test applies to JSON *text* inside strings (a tool result holding
`{"access_token": "..."}`, also with `\\"`-escaped quotes): the string value is masked as `json-key`.

**Patterns.** Each token rule is a literal prefix followed by the token's exact charset and length. A token must
start at a boundary: not preceded by `[A-Za-z0-9_-]`, except after a JSON/C escape (`\\n`, `\\t`, `\\u0022`) or a
percent-escape (`%3D`), so `\\nghp_...` inside escaped tool output is caught while `task-skip`, `desk-ant...` and
`mcp__ac7__send` are not. Fixed-length tokens (AWS key ids, `ac7_`, npm, Google API keys) must also end at a
boundary. Machine-generated tokens whose last 16 characters use fewer than 4 distinct characters are taken as
placeholders (`ghp_xxxx...`, `AKIAXXXXXXXXXXXXXXXX`) and left alone, as is AWS's documented `AKIAIOSFODNN7EXAMPLE`
(any key id ending in `EXAMPLE`). The context rules (`url-credentials`, `bearer-in-text`, `basic-auth-in-text`,
`json-key`, `secret-assignment`) replace only the secret part and keep the surrounding syntax. PEM private keys are
redacted as a whole block from `-----BEGIN ... PRIVATE KEY-----` to the matching `END` line, with real or escaped
newlines; a block cut short (a truncated preview) loses its header and every base64 line that follows.

**Order.** Rules run in table order, so the most specific rule names a secret (a `ghp_` token in a URL password is
`github-pat`, a JWT after `Bearer` is `jwt`); a replaced span is never matched again because no rule accepts `[`
or `]` in a secret. Hence redaction is idempotent: running it on its own output changes nothing and counts
nothing, and a value that already is a whole `[REDACTED:...]` marker is never masked again.

**Not covered** (documented gaps): generic high-entropy strings without a prefix or a key, lowercase `BEARER`,
`key=value` inside Python reprs or YAML (`password: x`), JSON numbers under secret keys inside *text* (parsed JSON
is covered), URL passwords containing `/` or `#` unescaped.

**Speed.** Every rule begins with a literal, so `re` finds candidates with its fast literal search instead of
trying every position; rules sharing a literal (`sk-`, `gh`, `gl`, `A`, `=`) run as one regex with a named group per
rule. Left boundaries are lookbehinds placed *after* the literal (a lookbehind in front would disable the literal
search, ~25x slower). Every quantifier is possessive or bounded, so a near-miss costs at most the length of the
token-shaped run it sits in. `redact_json` joins all its strings with NUL (which no rule can match across) and
scans the joined text once per rule, then redacts only the strings that contain a candidate; this equals
`redact_text` applied to each string (tested), at a fraction of the per-call cost.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "HEADER_RULE",
    "JSON_KEY_RULE",
    "RULES",
    "RULE_IDS",
    "Redactions",
    "Rule",
    "is_secret_header",
    "is_secret_key",
    "marker",
    "redact_headers",
    "redact_json",
    "redact_text",
]

HEADER_RULE: Final = "header"
JSON_KEY_RULE: Final = "json-key"

# Shorter strings cannot hold a secret: the shortest match of any rule is 8 characters (`a://:x@h`).
_MIN_LEN: Final = 8
_MARKER_RE: Final = re.compile(r"\[REDACTED:[a-z0-9][a-z0-9_.-]{0,63}\]")


def marker(rule_id: str) -> str:
    """The replacement text for `rule_id`."""
    return f"[REDACTED:{rule_id}]"


class Redactions:
    """How many times each rule fired (rule id -> count); one instance is passed through all calls for one entry."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = dict(counts) if counts else {}

    def add(self, rule_id: str, count: int = 1) -> None:
        self._counts[rule_id] = self._counts.get(rule_id, 0) + count

    def update(self, other: Redactions | Iterable[tuple[str, int]]) -> None:
        for rule_id, count in other.as_dict().items() if isinstance(other, Redactions) else other:
            self.add(rule_id, count)

    def get(self, rule_id: str) -> int:
        return self._counts.get(rule_id, 0)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        """A sorted copy, ready for the entry's `redactions` field."""
        return dict(sorted(self._counts.items()))

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactions) and self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Redactions({self.as_dict()!r})"


# A validator sees the text being scanned, where the match starts and the span to be replaced; False keeps the text.
Validator = Callable[[str, int, int, int], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector. `pattern` is the complete regex; the span of its `secret` group (else the whole match) is what
    gets replaced, and only when `validate` (if any) agrees. `lead` is the literal-plus-boundary head that rules
    sharing it are merged on; `body` the rest."""

    id: str
    pattern: re.Pattern[str]
    description: str
    lead: str = ""
    body: str = ""
    validate: Validator | None = None
    back: int = 0  # characters before the match start that belong to the secret (the `s` of `sk_live_`)


# --- boundaries ---------------------------------------------------------------------------------------------------


def _lead(prefix: str, start: str | None = None) -> str:
    """`prefix` as a literal, then lookbehinds saying the token (starting with the fixed-width regex `start`, default
    the prefix itself) is not glued to a preceding word character -- unless that character ends an escape."""
    lit = re.escape(prefix)
    s = start if start is not None else lit
    return (
        lit
        + (f"(?<={s})" if start is not None else "")
        + f"(?:(?<![A-Za-z0-9_-]{s})|(?<=\\\\[nrtbf]{s})|(?<=\\\\u[0-9A-Fa-f]{{4}}{s})|(?<=%[0-9A-Fa-f]{{2}}{s}))"
    )


def _not_placeholder(text: str, start: int, secret_start: int, secret_end: int) -> bool:
    """Machine-made tokens are random; a tail of 16 characters with fewer than 4 distinct ones is a placeholder."""
    return len(set(text[max(secret_start, secret_end - 16) : secret_end])) >= 4


# --- rule-specific validators -------------------------------------------------------------------------------------


def _aws_key_id(text: str, start: int, ss: int, se: int) -> bool:
    return not text.endswith("EXAMPLE", ss, se) and _not_placeholder(text, start, ss, se)


def _openai_key(text: str, start: int, ss: int, se: int) -> bool:
    tail = text[ss + 3 : se]
    # The legacy shape (sk- + alphanumerics) must carry a digit, so `sk-` + a long word in prose is not a key.
    if tail.isalnum() and not any(c.isdigit() for c in tail):
        return False
    return _not_placeholder(text, start, ss, se)


def _slack(text: str, start: int, ss: int, se: int) -> bool:
    return any(c.isdigit() for c in text[ss:se]) and _not_placeholder(text, start, ss, se)


def _bearer(text: str, start: int, ss: int, se: int) -> bool:
    token = text[ss:se]
    return (
        any(c.isdigit() for c in token)
        and any(c.isalpha() for c in token)
        and _not_placeholder(text, start, ss, se)
    )


def _basic(text: str, start: int, ss: int, se: int) -> bool:
    token = text[ss:se]
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    user, colon, _ = decoded.partition(":")
    return bool(colon) and decoded.isprintable() and len(decoded) >= 3


_TEMPLATE_STARTS: Final = ("${", "$(", "{{", "%s", "%(", "<", "*")
_MASKS: Final = frozenset("*xX•.#")


def _url_password(text: str, start: int, ss: int, se: int) -> bool:
    secret = text[ss:se]
    return not secret.startswith(_TEMPLATE_STARTS) and not set(secret) <= _MASKS


# --- secret key names ---------------------------------------------------------------------------------------------

_WORD_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_KEY_TAILS: Final = frozenset(
    {
        ("access", "token"),
        ("refresh", "token"),
        ("id", "token"),
        ("auth", "token"),
        ("session", "token"),
        ("client", "secret"),
        ("code", "verifier"),
        ("api", "key"),
        ("private", "key"),
        ("access", "key"),  # (secret, access, key): AWS SecretAccessKey / aws_secret_access_key
    }
)
_KEY_LAST: Final = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "authorization",
        "cookie",
        "apikey",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "clientsecret",
        "codeverifier",
    }
)


def _words(name: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_RE.findall(name))


@functools.lru_cache(maxsize=8192)
def is_secret_key(key: str) -> bool:
    """True when a JSON key names a credential (see the module docstring for the word rules)."""
    words = _words(key)
    if not words:
        return False
    if words[-1] in _KEY_LAST:
        return True
    if len(words) < 2 or words[-2:] not in _KEY_TAILS:
        return False
    # "access key" alone is an AWS key *id* (public half); only "secret access key" is secret.
    return words[-2:] != ("access", "key") or (len(words) >= 3 and words[-3] == "secret")


# Names in `NAME=value` assignments (env files, shell, CLI flags, query strings, form bodies).
_ASSIGN_KEY_FIRST: Final = frozenset(
    {
        "api", "access", "secret", "private", "auth", "master", "encryption", "signing", "license", "app",
        "account", "role", "deploy", "client", "subscription", "webhook", "service", "admin", "session",
    }
)  # fmt: skip
_NOT_SECRET_TOKEN_FIRST: Final = frozenset({"page", "next", "continuation", "sync", "cursor", "max", "num", "total"})


@functools.lru_cache(maxsize=8192)
def _is_secret_name(name: str) -> bool:
    words = _words(name)
    if not words or any(w in ("public", "publishable") for w in words):
        return False
    last = words[-1]
    prev = words[-2] if len(words) >= 2 else ""
    if last in ("secret", "password", "passwd", "apikey", "signature", "sig", "pass"):
        return True
    if last == "token":
        return prev not in _NOT_SECRET_TOKEN_FIRST
    if last == "pwd":
        return len(words) >= 2 and name.lower() != "oldpwd"
    if last == "key":
        return prev in _ASSIGN_KEY_FIRST
    if last == "verifier":
        return prev == "code"
    if last == "base":
        return words[-3:] == ("secret", "key", "base")
    return last == "code" and len(words) == 1


# --- context validators -------------------------------------------------------------------------------------------

_KEY_WINDOW: Final = 128


def _json_key(text: str, start: int, ss: int, se: int) -> bool:
    """The match starts at the `":` that closes a key; find that key and test it."""
    quote = text.rfind('"', max(0, start - _KEY_WINDOW), start)
    if quote < 0:
        return False
    key = text[quote + 1 : start].rstrip("\\")
    if not key or any(c in key for c in '\\\n\r\x00"'):
        return False
    return is_secret_key(key) and _MARKER_RE.fullmatch(text, ss, se) is None


_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_UPPER_NAME_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")
# What may stand between a line start and an env-style name.
_LINE_PREFIX_RE: Final = re.compile(
    r"(?:^|[\r\n\x00]|\\[nr])[ \t]*(?:(?:export|ENV|env|set|setx|declare(?:[ \t]+-[A-Za-z]+)*|local|readonly|-)[ \t]+)?\Z"
)
_IDENT_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
# An attribute path (`process.env.TOKEN`, `settings.SECRET_KEY`): a letters-only head, then identifiers.
_DOTTED_RE: Final = re.compile(r"[A-Za-z_$]+(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+")
_AWS_INI_NAMES: Final = frozenset({"aws_secret_access_key", "aws_session_token"})  # ~/.aws/credentials
_STOP_VALUES: Final = frozenset({"none", "null", "nil", "true", "false", "undefined", "empty", "changeme"})


def _secret_assignment(text: str, start: int, ss: int, se: int) -> bool:
    """`NAME=value` (the match starts at `=`): NAME must be a secret name (`_is_secret_name`) and the assignment must
    stand where assignments of values stand:

    - a query string, fragment or form body (`?access_token=`, `&client_secret=`, `#access_token=`), or a CLI flag
      (`--password=`); `code`, `sig` and `signature` count only here, with a value of 10+ characters;
    - a quoted string literal anywhere (`password="x"` in a call, `const API_KEY = "x"`, `SECRET_KEY = 'x'`);
    - a line start, optionally indented or after `export`/`ENV`/`set`/`declare`/`-` (.env files, shell, Dockerfile,
      compose lists, `\\n`-escaped text); unquoted `name = value` with spaces is code there, so it counts only when
      the value cannot be an identifier (or for the `aws_secret_access_key = ...` line of ~/.aws/credentials);
    - mid-line without spaces for an UPPER_SNAKE name (`docker run -e DB_PASSWORD=x`, `env GITHUB_TOKEN=x cmd`) or
      right after a quote (`curl -d "password=x&..."`);
    - `.npmrc`'s `:_authToken=` / `:_password=`.

    Values that are references or placeholders are left: `${X}`, `$(cmd)`, `{{x}}`, `%s`, `<token>`, `None`, `null`,
    `true`, `***`, attribute paths (`process.env.TOKEN`).
    """
    value = text[ss:se]
    if value.lower() in _STOP_VALUES or value.startswith(_TEMPLATE_STARTS) or set(value) <= _MASKS:
        return False
    if _DOTTED_RE.fullmatch(value) or _MARKER_RE.fullmatch(value):
        return False
    end = start
    spaced = end > 0 and text[end - 1] in " \t"
    if spaced:
        end -= 1
    begin = end
    floor = max(0, end - 64)
    while begin > floor and text[begin - 1] in _NAME_CHARS:
        begin -= 1
    if begin > 0 and text[begin - 1] == "\\" and text[begin : begin + 1] in ("n", "r", "t"):
        begin += 1  # the name follows an escaped line break (`\\nTOKEN=...`), not a word ending in n/r/t
    name = text[begin:end]
    flag = name.startswith("-")
    name = name.lstrip("-.")
    if not name or not _is_secret_name(name):
        return False
    quoted = ss > 0 and text[ss - 1] in "\"'"
    if spaced and not quoted and _IDENT_RE.fullmatch(value) and name.lower() not in _AWS_INI_NAMES:
        return False  # `name = value` unquoted is code: an expression, not a literal
    ctx = text[begin - 1] if begin > 0 else "\n"
    if _is_secret_name_only_in_query(name):
        return ctx in "?&#" and not spaced and se - ss >= 10
    if ctx in "?&;#" or flag:
        return not spaced
    if name in ("_authToken", "_password"):
        return not spaced
    if quoted:
        return True
    # `^` matches only at the real start of `text`, `\Z` at `begin` (the search's endpos).
    if _LINE_PREFIX_RE.search(text, max(0, begin - 48), begin) is not None:
        return True
    if spaced:
        return False
    return bool(_UPPER_NAME_RE.fullmatch(name)) or ctx in "\"'"


def _is_secret_name_only_in_query(name: str) -> bool:
    return _words(name)[-1] in ("code", "sig", "signature")


# --- the rule table -----------------------------------------------------------------------------------------------

_B64URL = "A-Za-z0-9_-"
_SCHEMA_WORDS: Final = ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const")

_PEM_LABEL = r" (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
_PEM_BLOCK = (
    _PEM_LABEL
    + r"(?:(?:[^\x00-]|-(?!----)){0,20000}+-----END"
    + _PEM_LABEL
    + r"|(?:(?:[ \t]*(?:\r?\n|\\+[rn]))*+[ \t]*"
    + r"(?:[A-Za-z0-9+/=]{16,}+|[A-Za-z0-9+/=]++(?=[ \t]*(?:[\r\n\"'\x00\\]|\Z)|[^A-Za-z0-9+/= \t])"
    + r"|(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset):[^\r\n\\\x00]*+))*+)"
)

# Candidate filters, one fixed-width lookbehind per width: the last 3-4 letters of the words a secret key or name can
# end with (case-insensitive), just before `":` (JSON text; also `\":`, `\\\":`, ... for JSON nested in JSON strings) or `=` / ` =` (assignments). The validator then checks the whole key. A single suffix class per
# width keeps a `=` or `":` that is not a candidate at a few cheap comparisons.
_DEPTHS = (0, 1, 3, 7)  # backslashes before a quote in JSON text nested 0, 1, 2, 3 levels deep in JSON strings
_ESCAPES = tuple("\\\\" * k for k in _DEPTHS)
# First the last character alone (one class test rejects most `":` and `=`), then the suffixes.
_JSON_KEY_LOOKBEHIND = r'(?<=[yYnNtTdDeErR\\]":)(?:' + "|".join(
    f'(?<=(?i:{suffixes}){q}":)' for suffixes in ("key", "oken|cret|sswd|okie|word|fier") for q in _ESCAPES
) + ")"


def _json_string_body(k: int) -> str:
    """The body of a JSON string whose quotes are preceded by `k` backslashes (its nesting depth's escaping)."""
    if k == 0:
        return r'(?<=[: ]")(?:[^"\\\x00\r\n]|\\[^\x00\r\n])++(?=")'
    # Deeper: a backslash run before a quote that is longer than `k` escapes an inner quote; any other run is an escape.
    return rf'(?<=[: ]\\{{{k}}}")(?:[^"\\\x00\r\n]|\\++(?!")|\\{{{k + 1},}}+")++(?=\\{{{k}}}")'


_JSON_VALUE = r"[ ]?\\{0,7}" + '"(?P<secret>' + "|".join(_json_string_body(k) for k in _DEPTHS) + ")"
_ASSIGN_LOOKBEHIND = "(?<=[yYgGdDsSeEnNtTrR ]=)(?:" + "|".join(
    f"(?<=(?i:{suffixes}){sp}=)"
    for suffixes in ("key|sig|pwd", "pass|code|base|oken|cret|sswd|word|fier|ture")
    for sp in ("", " ")
) + ")"
_ASSIGN_VALUE = (
    r"[ \t]*(?:\\*+[\"'])?(?P<secret>(?<=[\"'])[^\"'\\\r\n\x00]{4,}+(?=\\*+[\"'])"
    r"|(?<![\"'])[^\s\"'\\`$<>{}()\[\];,&|#\x00][^\s\"'\\`<>(){}\[\];,&|#\x00]{3,}+(?=[\s\"'\\;,&|#\x00]|\Z))"
)


def _rules() -> tuple[Rule, ...]:
    spec: list[tuple[str, str, str, str, Validator | None, int]] = []

    def add(
        rule_id: str, lead: str, body: str, description: str, validate: Validator | None = None, back: int = 0
    ) -> None:
        spec.append((rule_id, lead, body, description, validate, back))

    rnd = _not_placeholder
    add("private-key-pem", re.escape("-----BEGIN"), _PEM_BLOCK, "PEM private key block (RSA, EC, OpenSSH, PGP, ...)")
    add("jwt", _lead("eyJ"), rf"[{_B64URL}]{{10,}}+\.ey[{_B64URL}]{{10,}}+\.[{_B64URL}]*+", "JSON Web Token")
    sk = _lead("sk-")
    add("anthropic-oauth-access", sk, rf"ant-oat[0-9]{{2}}-[{_B64URL}]{{20,}}+", "Claude OAuth access token", rnd)
    add("anthropic-oauth-refresh", sk, rf"ant-ort[0-9]{{2}}-[{_B64URL}]{{20,}}+", "Claude OAuth refresh token", rnd)
    add("anthropic-api-key", sk, rf"ant-(?!o[ar]t[0-9])[{_B64URL}]{{20,}}+", "Anthropic API/admin/session key", rnd)
    add("openai-project-key", sk, rf"proj-[{_B64URL}]{{20,}}+", "OpenAI project key", rnd)
    add("openrouter-key", sk, r"or-v[0-9]+-[A-Za-z0-9]{32,}+", "OpenRouter key", rnd)
    add(
        "openai-key",
        sk,
        rf"(?:(?:svcacct|admin|None)-[{_B64URL}]{{20,}}+|[A-Za-z0-9]{{20,}}+(?![_-]))",
        "OpenAI (and other sk-) API key",
        _openai_key,
    )
    add("github-fine-grained", _lead("github_pat_"), r"[A-Za-z0-9_]{50,}+", "GitHub fine-grained PAT", rnd)
    gh = _lead("gh")
    add("github-pat", gh, r"p_[A-Za-z0-9]{36,}+", "GitHub classic PAT", rnd)
    add("github-oauth", gh, r"o_[A-Za-z0-9]{36,}+", "GitHub OAuth token", rnd)
    add("github-app-token", gh, r"[us]_[A-Za-z0-9]{36,}+", "GitHub App user/installation token", rnd)
    add("github-refresh", gh, r"r_[A-Za-z0-9]{36,}+", "GitHub refresh token", rnd)
    gl = _lead("gl")
    add("gitlab-pat", gl, rf"pat-[{_B64URL}]{{20,}}+(?:\.[{_B64URL}]++)*+", "GitLab personal access token", rnd)
    add(
        "gitlab-token",
        gl,
        rf"(?:dt|rt|ptt|ft|imt|agent|oas|cbt|soat|ffct|sdt)-[{_B64URL}]{{20,}}+(?:\.[{_B64URL}]++)*+",
        "GitLab deploy/runner/trigger/OAuth/CI token",
        rnd,
    )
    add(
        "slack-token",
        _lead("x"),
        r"(?:ox[abeoprs](?:\.xox[abeoprs])?|app)-[A-Za-z0-9-]{10,}+",
        "Slack token (xoxb/xoxp/xoxa/xoxe/xapp)",
        _slack,
    )
    add(
        "slack-webhook",
        _lead("hooks.slack.com/"),
        r"(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9+/_-]{20,}+)",
        "Slack incoming-webhook path",
    )
    a = _lead("A")
    add("aws-access-key-id", a, r"(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])", "AWS key id", _aws_key_id)
    add("aws-bedrock-api-key", a, r"BSKQmVkcm9ja0FQSUtleS[A-Za-z0-9+/]{20,}+={0,2}", "Amazon Bedrock API key", rnd)
    add("google-api-key", a, rf"Iza[{_B64URL}]{{35}}(?![{_B64URL}])", "Google API key", rnd)
    add(
        "google-oauth-access",
        _lead("ya29."),
        rf"[{_B64URL}]{{20,}}+(?:\.[{_B64URL}]++)*+",
        "Google OAuth access token",
        rnd,
    )
    add("google-oauth-client-secret", _lead("GOCSPX-"), rf"[{_B64URL}]{{20,}}+", "Google OAuth client secret", rnd)
    add(
        "stripe-key",
        _lead("k_", "[sr]k_"),
        r"(?:live|test|prod)_[A-Za-z0-9]{10,}+",
        "Stripe secret/restricted key",
        rnd,
        back=1,
    )
    add("stripe-webhook-secret", _lead("whsec_"), r"[A-Za-z0-9+/]{24,}+={0,2}", "Stripe webhook signing secret", rnd)
    add("npm-token", _lead("npm_"), r"[A-Za-z0-9]{36}(?![A-Za-z0-9_-])", "npm access token", rnd)
    add("pypi-token", _lead("pypi-"), rf"AgE[{_B64URL}]{{50,}}+", "PyPI API token", rnd)
    add("huggingface-token", _lead("hf_"), r"[A-Za-z0-9]{34,}+", "Hugging Face token", rnd)
    add("ac7-token", _lead("ac7_"), rf"[{_B64URL}]{{43}}(?![{_B64URL}])", "ac7 bearer token", rnd)
    add(
        "url-credentials",
        re.escape("://"),
        r"(?<=[A-Za-z0-9]://)[^\s:/?#@\[\]\"'<>\\\x00]*+:(?P<secret>[^\s/?#\[\]\"'<>\\\x00]+)@(?=[A-Za-z0-9\[])",
        "password in scheme://user:password@host",
        _url_password,
    )
    add(
        "bearer-in-text",
        _lead("earer", "[Bb]earer"),
        r"[ \t]++(?P<secret>[A-Za-z0-9._~+/-]{16,}+=*+)",
        "Bearer <token> in text",
        _bearer,
    )
    add(
        "basic-auth-in-text",
        _lead("asic", "[Bb]asic"),
        r"[ \t]++(?P<secret>[A-Za-z0-9+/]{4,}+={0,2})(?![A-Za-z0-9+/=])",
        "Basic <base64 user:password> in text",
        _basic,
    )
    add(JSON_KEY_RULE, re.escape('":'), f"(?:{_JSON_KEY_LOOKBEHIND}){_JSON_VALUE}", "value under a secret key", _json_key)
    add(
        "secret-assignment",
        "=",
        f"(?:{_ASSIGN_LOOKBEHIND}){_ASSIGN_VALUE}",
        "NAME=value for a secret name (.env, shell, CLI flag, query string, form body)",
        _secret_assignment,
    )
    rules = [Rule(i, re.compile(lead + body), d, lead, body, v, back) for i, lead, body, d, v, back in spec]
    rules.append(
        Rule(
            HEADER_RULE,
            _SECRET_HEADER_RE,
            "whole value of a credential header (matched on the header name)",
        )
    )
    return tuple(rules)


_SECRET_HEADER_RE: Final = re.compile(
    r"(?:proxy-)?authorization|(?:set-)?cookie"
    r"|(?:[a-z0-9]+[-_])*(?:api[-_]?key|apikey|token|secret|password|passwd)",
    re.IGNORECASE,
)

RULES: Final[tuple[Rule, ...]] = _rules()
RULE_IDS: Final[tuple[str, ...]] = tuple(r.id for r in RULES)
_MARKERS: Final[dict[str, str]] = {r.id: marker(r.id) for r in RULES}
_HEADER_MARKER: Final = _MARKERS[HEADER_RULE]
_JSON_KEY_MARKER: Final = _MARKERS[JSON_KEY_RULE]


# --- passes: rules sharing a lead run as one regex ----------------------------------------------------------------


class _Pass:
    __slots__ = ("groups", "regex")

    def __init__(self, lead: str, rules: list[Rule]) -> None:
        alternatives = []
        groups: dict[str, tuple[Rule, str | None]] = {}
        for i, rule in enumerate(rules):
            body = rule.body
            secret: str | None = None
            if "(?P<secret>" in body:
                secret = f"s{i}"
                body = body.replace("(?P<secret>", f"(?P<{secret}>")
            alternatives.append(f"(?P<r{i}>{body})")
            groups[f"r{i}"] = (rule, secret)
        self.regex = re.compile(lead + "(?:" + "|".join(alternatives) + ")")
        self.groups = groups

    def apply(self, text: str, counts: Redactions) -> str:
        parts: list[str] = []
        last = 0
        for m in self.regex.finditer(text):
            rule, secret = self.groups[m.lastgroup or ""]
            start = m.start()
            ss, se = m.span(secret) if secret else (start - rule.back, m.end())
            if ss < last or (rule.validate is not None and not rule.validate(text, start, ss, se)):
                continue
            counts.add(rule.id)
            parts.append(text[last:ss])
            parts.append(_MARKERS[rule.id])
            last = se
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)


def _passes() -> tuple[_Pass, ...]:
    by_lead: dict[str, list[Rule]] = {}
    for rule in RULES:
        if rule.lead:
            by_lead.setdefault(rule.lead, []).append(rule)
    return tuple(_Pass(lead, rules) for lead, rules in by_lead.items())


_PASSES: Final = _passes()


# --- public functions ---------------------------------------------------------------------------------------------


def redact_text(text: str, counts: Redactions) -> str:
    """`text` with every secret pattern replaced by `[REDACTED:<rule id>]`; each replacement is counted."""
    if len(text) < _MIN_LEN:
        return text
    for p in _PASSES:
        text = p.apply(text, counts)
    return text


def is_secret_header(name: str) -> bool:
    """True for a header whose whole value is a credential (case-insensitive)."""
    return _SECRET_HEADER_RE.fullmatch(name) is not None


def redact_headers(headers: Iterable[tuple[str, str]], counts: Redactions) -> list[tuple[str, str]]:
    """Credential headers masked whole (`[REDACTED:header]`), the others through `redact_text`; names kept as given."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if is_secret_header(name):
            if value and value != _HEADER_MARKER:
                counts.add(HEADER_RULE)
                value = _HEADER_MARKER
        else:
            value = redact_text(value, counts)
        out.append((name, value))
    return out


def redact_json(value: Any, counts: Redactions) -> Any:
    """A new structure: secret keys' values masked, every string (and key) through `redact_text`. Never mutates."""
    if isinstance(value, str):
        return redact_text(value, counts)
    walker = _Walker(counts)
    out = walker.copy(value)
    walker.finish()
    return out


@functools.lru_cache(maxsize=8192)
def _redact_key(key: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    counts = Redactions()
    return redact_text(key, counts), tuple(counts.as_dict().items())


class _Walker:
    """Copies a JSON value (iteratively: nesting depth is not limited by Python's recursion limit), masking secret
    keys' values and remembering where each string went; `finish` then redacts, in place in the copy, only the
    strings in which some rule found a candidate."""

    __slots__ = ("counts", "slots", "strings")

    def __init__(self, counts: Redactions) -> None:
        self.counts = counts
        self.strings: list[str] = []
        self.slots: list[tuple[Any, Any]] = []  # (container in the copy, index or key)

    def copy(self, value: Any) -> Any:
        if not isinstance(value, (dict, list, tuple)):
            return value
        root: Any = {} if isinstance(value, dict) else []
        # Work items: (source container, its copy, is a JSON Schema `properties` object).
        stack: list[tuple[Any, Any, bool]] = [(value, root, False)]
        while stack:
            source, out, schema_properties = stack.pop()
            if isinstance(out, dict):
                self._dict(source, out, schema_properties, stack)
            else:
                self._list(source, out, stack)
        return root

    def _value(self, item: Any, out: Any, slot: Any, parent_key: Any, stack: list[tuple[Any, Any, bool]]) -> None:
        if isinstance(item, str):
            if len(item) >= _MIN_LEN:
                self.strings.append(item)
                self.slots.append((out, slot))
            out[slot] = item
        elif isinstance(item, dict):
            child: Any = {}
            out[slot] = child
            stack.append((item, child, parent_key == "properties"))
        elif isinstance(item, (list, tuple)):
            child = []
            out[slot] = child
            stack.append((item, child, False))
        else:
            out[slot] = item

    def _list(self, source: Any, out: list[Any], stack: list[tuple[Any, Any, bool]]) -> None:
        out.extend([None] * len(source))
        for i, item in enumerate(source):
            self._value(item, out, i, None, stack)

    def _dict(self, source: dict[Any, Any], out: dict[Any, Any], schema_properties: bool, stack: Any) -> None:
        for key, item in source.items():
            new_key = key
            secret = False
            if isinstance(key, str):
                if len(key) >= _MIN_LEN:
                    new_key, fired = _redact_key(key)
                    if fired:
                        self.counts.update(fired)
                secret = is_secret_key(key) and not (
                    schema_properties and isinstance(item, dict) and any(w in item for w in _SCHEMA_WORDS)
                )
            if new_key in out:
                n = 2
                while f"{new_key}#{n}" in out:
                    n += 1
                new_key = f"{new_key}#{n}"
            if secret and item is not None and not (isinstance(item, str) and _MARKER_RE.fullmatch(item)):
                self.counts.add(JSON_KEY_RULE)
                out[new_key] = _JSON_KEY_MARKER
            else:
                self._value(item, out, new_key, key, stack)

    def finish(self) -> None:
        strings = self.strings
        if not strings:
            return
        # NUL separators: no rule matches across one, and each behaves at a NUL as at a string's end or start.
        joined = "\x00".join(strings)
        starts = []
        pos = 0
        for s in strings:
            starts.append(pos)
            pos += len(s) + 1
        hits: set[int] = set()
        for p in _PASSES:
            for m in p.regex.finditer(joined):
                hits.add(bisect_right(starts, m.start()) - 1)
        for i in sorted(hits):
            container, slot = self.slots[i]
            container[slot] = redact_text(strings[i], self.counts)
