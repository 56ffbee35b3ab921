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
    key = text[quote + 1 : start]
    if key.endswith("\\"):
        key = key[:-1]
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
_DOTTED_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+")
_STOP_VALUES: Final = frozenset({"none", "null", "nil", "true", "false", "undefined", "empty", "changeme"})


def _secret_assignment(text: str, start: int, ss: int, se: int) -> bool:
    """`NAME=value`: the name must be a secret name and stand where assignments stand (see `_ASSIGN_DOC`)."""
    value = text[ss:se]
    if value.lower() in _STOP_VALUES or value.startswith(_TEMPLATE_STARTS) or set(value) <= _MASKS:
        return False
    if _DOTTED_RE.fullmatch(value):  # process.env.TOKEN, settings.SECRET_KEY
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
    ctx = text[begin - 1] if begin > 0 else "\n"
    if ctx in "?&;#" or flag:  # query string, fragment, form body, --password=...
        return not spaced
    if _is_secret_name_only_in_query(name):
        return False
    # `^` matches only at the real start of `text`, `\Z` at `begin` (the search's endpos).
    if _LINE_PREFIX_RE.search(text, max(0, begin - 48), begin) is not None:
        if spaced and not quoted:
            # `name = value` unquoted is code (an expression) unless the value cannot be an identifier.
            return name.lower() in ("aws_secret_access_key", "aws_session_token") or not _IDENT_RE.fullmatch(value)
        return True
    if spaced:
        return False
    # Mid-line: `docker run -e TOKEN=x`, `env A=1 GITHUB_TOKEN=x cmd`, `curl -d "password=x"`.
    return bool(_UPPER_NAME_RE.fullmatch(name)) or ctx in "\"'"


def _is_secret_name_only_in_query(name: str) -> bool:
    # `code=`, `sig=`, `signature=` are secrets in URLs; elsewhere (`code=1`, a signature file) they are not.
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
    + r"(?:[A-Za-z0-9+/=]{16,}+|[A-Za-z0-9+/=]++(?=[ \t]*(?:[\r\n\"'\x00\\]|\Z))"
    + r"|(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset):[^\r\n\\\x00]*+))*+)"
)

# Candidate filters, one fixed-width lookbehind per width: the last 3-4 letters of the words a secret key or name can
# end with (case-insensitive), just before `":` / `\\":` (JSON text) or `=` / ` =` (assignments). The validator then
# checks the whole key. A single suffix class per width keeps a `=`/`":` that is not a candidate at ~2 cheap checks.
_JSON_KEY_LOOKBEHIND = "|".join(
    f'(?<=(?i:{suffixes}){q}":)' for suffixes in ("key", "oken|cret|sswd|okie|word|fier") for q in ("", r"\\")
)
_JSON_VALUE = (
    r"[ \t]*\\?\"(?P<secret>(?<=\\\")(?:[^\"\\\x00\r\n]|\\[^\"\x00\r\n])++(?=\\\")"
    r"|(?<!\\\")(?:[^\"\\\x00\r\n]|\\[^\x00\r\n])++(?=\"))"
)
_ASSIGN_LOOKBEHIND = "|".join(
    f"(?<=(?i:{suffixes}){sp}=)" for suffixes in ("key|sig|pwd", "pass|code|base|oken|cret|sswd|word|fier|ture") for sp in ("", " ")
)
_ASSIGN_VALUE = (
    r"[ \t]*(?:\\?[\"'])?(?P<secret>(?<=[\"'])[^\"'\\\r\n\x00]{4,}+(?=\\?[\"'])"
    r"|(?<![\"'])[^\s\"'\\`$<>{}()\[\];,&|#\x00][^\s\"'\\`<>(){}\[\];,&|#\x00]{3,}+(?=[\s\"'\\;,&|#\x00]|\Z))"
)


def _rules() -> tuple[Rule, ...]:
    spec: list[tuple[str, str, str, str, Validator | None]] = []

    def add(rule_id: str, lead: str, body: str, description: str, validate: Validator | None = None) -> None:
        spec.append((rule_id, lead, body, description, validate))

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
        r"(?:ox[abeoprs](?:\.xox[abeoprs])?|app)-(?=[A-Za-z0-9-]*[0-9])[A-Za-z0-9-]{10,}+",
        "Slack token (xoxb/xoxp/xoxa/xoxe/xapp)",
        rnd,
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
    )
    add("stripe-webhook-secret", _lead("whsec_"), r"[A-Za-z0-9+/]{24,}+={0,2}", "Stripe webhook signing secret", rnd)
    add("npm-token", _lead("npm_"), r"[A-Za-z0-9]{36}(?![A-Za-z0-9_-])", "npm access token", rnd)
    add(
        "npmrc-auth",
        _lead("_auth"),
        r"(?:Token)?[ \t]*=[ \t]*(?P<secret>[^\s\"'\\$<>{}\x00\[\]][^\s\"'\\\x00\[\]]{7,}+)",
        ".npmrc _authToken / _auth value",
    )
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
        r"[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}+=*+)",
        "Bearer <token> in text",
        _bearer,
    )
    add(
        "basic-auth-in-text",
        _lead("asic", "[Bb]asic"),
        r"[ \t]+(?P<secret>[A-Za-z0-9+/]{4,}+={0,2})(?![A-Za-z0-9+/=])",
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
    rules = [Rule(i, re.compile(lead + body), d, lead, body, v) for i, lead, body, d, v in spec]
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
        groups = self.groups

        def replace(m: re.Match[str]) -> str:
            rule, secret = groups[m.lastgroup or ""]
            start, end = m.span()
            ss, se = m.span(secret) if secret else (start, end)
            if rule.validate is not None and not rule.validate(text, start, ss, se):
                return m.group()
            counts.add(rule.id)
            return text[start:ss] + _MARKERS[rule.id] + text[se:end]

        return self.regex.sub(replace, text)


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
    out = walker.copy(value, None)
    walker.finish()
    return out


@functools.lru_cache(maxsize=8192)
def _redact_key(key: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    counts = Redactions()
    return redact_text(key, counts), tuple(counts.as_dict().items())


class _Walker:
    """Copies a JSON value, masking secret keys' values and remembering where each string went; `finish` then
    redacts, in place in the copy, only the strings in which some rule found a candidate."""

    __slots__ = ("counts", "slots", "strings")

    def __init__(self, counts: Redactions) -> None:
        self.counts = counts
        self.strings: list[str] = []
        self.slots: list[tuple[Any, Any]] = []  # (container in the copy, index or key)

    def copy(self, value: Any, parent_key: Any) -> Any:
        if isinstance(value, dict):
            return self._dict(value, parent_key == "properties")
        if isinstance(value, (list, tuple)):
            out: list[Any] = []
            for item in value:
                if isinstance(item, str):
                    if len(item) >= _MIN_LEN:
                        self.strings.append(item)
                        self.slots.append((out, len(out)))
                    out.append(item)
                elif isinstance(item, (dict, list, tuple)):
                    out.append(self.copy(item, None))
                else:
                    out.append(item)
            return out
        return value

    def _dict(self, value: dict[Any, Any], schema_properties: bool) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, item in value.items():
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
            elif isinstance(item, str):
                if len(item) >= _MIN_LEN:
                    self.strings.append(item)
                    self.slots.append((out, new_key))
                out[new_key] = item
            elif isinstance(item, (dict, list, tuple)):
                out[new_key] = self.copy(item, key)
            else:
                out[new_key] = item
        return out

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
