"""Secret redaction for traces: one pure function family, applied before anything leaves the runner (DESIGN §6).

Three entry points share one rule table (`RULES`) and one counter (`Redactions`):

- `redact_text(text, counts)` replaces every secret in a decoded string with `[REDACTED:<rule id>]`.
- `redact_headers(headers, counts)` masks the whole value of a credential header as `[REDACTED:header]`:
  `authorization`, `proxy-authorization`, `x-api-key`, `x-anthropic-api-key`, `cookie`, `set-cookie`, and any
  name ending in `api-key`/`api_key`/`apikey`, `token`, `secret`, `password`/`passwd` (`api-key` for Azure-style
  gateways, `x-goog-api-key`, `x-amz-security-token`, `x-auth-token`), case-insensitively. Every other value goes
  through `redact_text`. An empty value stays empty: there is nothing to hide, so nothing is counted.
- `redact_json(value, counts)` returns a new structure (the input is never mutated; tuples come back as lists):
  the value under a secret key becomes `[REDACTED:json-key]` whatever its type -- string, number, bool, list,
  object -- except `null`, which carries nothing; every other string goes through `redact_text`. **Keys** go
  through `redact_text` too, because a key can itself be a token (env maps, dicts keyed by credential); when two
  keys redact to the same text the later one becomes `<key>#2`, `#3`, ... so no value is lost. Non-string keys
  are kept as they are.

Each rule has an id; `Redactions` counts how often each fired and never holds a value, prefix or hash of a secret.

**Secret keys** (`json-key`). A key is split into words (`snake_case`, `kebab-case`, `camelCase`, `UPPER_CASE`) and
is secret when its words end with access token, refresh token, id token, auth token, session token, client secret,
code verifier, api key, private key or secret access key, or its last word is password, passwd, secret,
authorization, cookie (or an unseparated `accesstoken`, `apikey`, ...). So `access_token`, `accessToken`,
`access-token`, `ACCESS_TOKEN`, `x-api-key`, `db_password`, `clientSecret`, `SecretAccessKey` are secret;
`max_tokens`, `token_type`, `password_hash`, `secretName`, `AccessKeyId` are not. One exception keeps tool
definitions readable: in a JSON Schema `properties` object, a member whose value is itself a schema (has `type`,
`$ref`, `anyOf`, `oneOf`, `allOf`, `enum` or `const`) is a property *definition*, so
`{"properties": {"password": {"type": "string"}}}` is walked, not masked. The same key test applies to JSON *text*
inside strings -- a tool result holding `{"access_token": "..."}`, or that text JSON-escaped once or more
(`{\\"access_token\\": \\"...\\"}`) -- where the string value is masked as `json-key` (non-string values in text
are left to the other rules).

**Token rules** are a literal prefix plus the token's own charset and length. A token must start at a boundary:
not right after `[A-Za-z0-9_-]`, unless that character ends an escape (`\\n`, `\\t`, `\\u0022`, `%3D`), so
`\\nghp_...` in escaped tool output is caught while `task-skip`, `desk-ant-...` and `mcp__ac7__send` are not.
Fixed-length tokens (AWS key ids, `ac7_`, npm, Google API keys) must end at a boundary too. A machine-made token
whose last 16 characters hold fewer than 4 distinct ones is a placeholder (`ghp_xxxx...`, `AKIAXXXXXXXXXXXXXXXX`)
and is left, as is any AWS key id ending in `EXAMPLE` (AWS's documented `AKIAIOSFODNN7EXAMPLE`).

**Context rules** replace only the secret and keep the syntax around it: `url-credentials` (the password of
`scheme://user:password@host`), `bearer-in-text` (`Bearer <token>` where the token has 16+ characters with a digit
and a letter), `basic-auth-in-text` (`Basic <base64>` that decodes to `user:password`), `json-key` (above) and
`secret-assignment` (`NAME=value` for a secret NAME in .env files, shell, CLI flags, query strings, form bodies and
string literals; see `_secret_assignment`). `private-key-pem` takes a whole `-----BEGIN ... PRIVATE KEY-----` block
up to its `END` line, with real or escaped newlines; a block cut short (a truncated preview) loses its header and
every base64 line after it.

**Order and idempotence.** Rules run in table order, so the most specific one names a secret (a `ghp_` token as a
URL password is `github-pat`; a JWT after `Bearer` is `jwt`). No token or context rule matches a marker (their
charsets exclude `[`), and a value that already is a whole `[REDACTED:...]` marker -- a header, a JSON value, a
quoted assignment -- is never masked again, so redacting redacted output changes and counts nothing.

**Not covered** (known gaps): high-entropy strings with neither a known prefix nor a telling key or context,
upper-case `BEARER`, `key: value` in YAML or Python reprs, numbers under secret keys inside JSON *text*, unescaped
`/`, `?` or `#` in a URL password, a secret split across two separate strings (SSE deltas must be reassembled
first, as the trace builder does).

**Speed.** Every rule starts with a literal, so `re` finds candidates with its literal search (about one CPU cycle
per character) instead of trying every position; rules sharing a literal (`sk-`, `gh`, `gl`, `A`) run as one regex
with a named group per rule. Lookbehinds sit *after* the literal (one in front disables the literal search and costs
~25x), and leads start at a token's rarest character (`J` of `eyJ`, `k` of `sk-`). A string of up to 512
characters first tests each pass's literal with `in`, which is cheaper than starting a regex. Every quantifier is
possessive or bounded, so a near-miss costs at most the token-shaped run it sits in, never a backtracking blow-up.
`redact_json` joins all its strings with NUL -- which no rule matches across and which every rule treats like the
end or start of a string -- scans the joined text once per rule, and redacts only the strings holding a candidate:
the result equals `redact_text` applied string by string (tested), without paying per-call overhead on the
thousands of short strings in a Claude Code request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

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

# No rule can match fewer characters (the shortest is `a://:y@h`), so shorter strings are returned untouched.
_MIN_LEN: Final = 8
_MARKER_RE: Final = re.compile(r"\[REDACTED:[a-z0-9][a-z0-9_.-]{0,63}\]")


def marker(rule_id: str) -> str:
    """The replacement text for `rule_id`."""
    return f"[REDACTED:{rule_id}]"


class Redactions:
    """How many times each rule fired (rule id -> count), never the values. Pass one instance through every call
    that builds one trace entry."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = dict(counts) if counts else {}

    def add(self, rule_id: str, count: int = 1) -> None:
        self._counts[rule_id] = self._counts.get(rule_id, 0) + count

    def update(self, other: Redactions | Mapping[str, int]) -> None:
        for rule_id, count in (other._counts if isinstance(other, Redactions) else other).items():
            self.add(rule_id, count)

    def get(self, rule_id: str) -> int:
        return self._counts.get(rule_id, 0)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        """A sorted copy, ready for an entry's `redactions` field."""
        return dict(sorted(self._counts.items()))

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactions) and self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Redactions({self.as_dict()!r})"


# A validator gets the scanned text, the match start and the span to replace; False leaves the text as it is.
Validator = Callable[[str, int, int, int], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector. `pattern` is the whole rule as one regex (`lead` + `body`); the span of its `secret` group, else
    the match widened by `back` characters on the left, is what gets replaced -- when `validate` (if any) agrees.
    Rules with the same `lead` run merged into one regex. The `header` rule has no lead: its pattern matches header
    *names* and it is applied by `redact_headers` only."""

    id: str
    pattern: re.Pattern[str]
    description: str
    lead: str = ""
    body: str = ""
    validate: Validator | None = None
    back: int = 0
    literal: str = ""  # the text every match starts with


# --- boundaries and token validators --------------------------------------------------------------------------------


class _Lead(NamedTuple):
    regex: str
    literal: str


def _lead(literal: str, token_start: str | None = None, *, boundary: bool = True) -> _Lead:
    """The literal to search for, then lookbehinds: the token (which begins with `token_start`, a fixed-width regex
    ending in the literal; default the literal itself) is not glued to a preceding `[A-Za-z0-9_-]` -- unless that
    character ends an escape sequence."""
    lit = re.escape(literal)
    if not boundary:
        return _Lead(lit, literal)
    s = token_start if token_start is not None else lit
    head = lit + (f"(?<={s})" if token_start is not None else "")
    tail = rf"(?:(?<![A-Za-z0-9_-]{s})|(?<=\\[nrtbf]{s})|(?<=\\u[0-9A-Fa-f]{{4}}{s})|(?<=%[0-9A-Fa-f]{{2}}{s}))"
    return _Lead(head + tail, literal)


def _random(text: str, start: int, ss: int, se: int) -> bool:
    """Machine-made tokens are random: a last 16 characters with fewer than 4 distinct ones is a placeholder."""
    return len(set(text[max(ss, se - 16) : se])) >= 4


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _aws_key_id(text: str, start: int, ss: int, se: int) -> bool:
    return not text.endswith("EXAMPLE", ss, se) and _random(text, start, ss, se)


def _openai_key(text: str, start: int, ss: int, se: int) -> bool:
    tail = text[ss + 3 : se]
    # The bare shape (sk- + alphanumerics) must hold a digit, so `sk-` + a long word is not a key.
    return (_has_digit(tail) or not tail.isalnum()) and _random(text, start, ss, se)


def _slack(text: str, start: int, ss: int, se: int) -> bool:
    return _has_digit(text[ss:se]) and _random(text, start, ss, se)


def _bearer(text: str, start: int, ss: int, se: int) -> bool:
    token = text[ss:se]
    return _has_digit(token) and any(c.isalpha() for c in token) and _random(text, start, ss, se)


def _basic(text: str, start: int, ss: int, se: int) -> bool:
    token = text[ss:se]
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable() and len(decoded) >= 3


_TEMPLATE_STARTS: Final = ("${", "$(", "{{", "%s", "%(", "<", "*")
_MASKS: Final = frozenset("*xX•.#")


def _url_password(text: str, start: int, ss: int, se: int) -> bool:
    secret = text[ss:se]
    return not secret.startswith(_TEMPLATE_STARTS) and not set(secret) <= _MASKS


# --- secret names -----------------------------------------------------------------------------------------------------

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
        ("access", "key"),  # only as (secret, access, key): AWS SecretAccessKey; AccessKeyId is the public half
    }
)
_KEY_LAST: Final = frozenset(
    {
        "password", "passwd", "secret", "authorization", "cookie",
        "apikey", "accesstoken", "refreshtoken", "idtoken", "clientsecret", "codeverifier",
    }
)  # fmt: skip


def _words(name: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD_RE.findall(name))


def is_secret_key(key: str) -> bool:
    """True when a JSON key names a credential (the word rules are in the module docstring)."""
    words = _words(key)
    if not words:
        return False
    if words[-1] in _KEY_LAST:
        return True
    if words[-2:] not in _KEY_TAILS:
        return False
    return words[-2:] != ("access", "key") or words[-3:-2] == ("secret",)


# Assignment names (`NAME=value`): a last word token/secret/password/... , or key after one of these words.
_KEY_QUALIFIERS: Final = frozenset(
    {
        "api", "access", "secret", "private", "auth", "master", "encryption", "signing", "license", "app",
        "account", "role", "deploy", "client", "subscription", "webhook", "service", "admin", "session",
    }
)  # fmt: skip
_NOT_SECRET_TOKENS: Final = frozenset({"page", "next", "continuation", "sync", "cursor", "max", "num", "total"})
_QUERY_ONLY: Final = frozenset({"code", "sig", "signature"})


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    words = _words(name)
    if not words or "public" in words or "publishable" in words:
        return False
    last = words[-1]
    prev = words[-2] if len(words) >= 2 else ""
    if last in ("secret", "password", "passwd", "apikey", "pass", "code", "sig", "signature"):
        return last != "code" or len(words) == 1
    if last == "token":
        return prev not in _NOT_SECRET_TOKENS
    if last == "pwd":
        return bool(prev)  # DB_PWD; not the shell's PWD
    if last == "key":
        return prev in _KEY_QUALIFIERS
    if last == "verifier":
        return prev == "code"
    return words[-3:] == ("secret", "key", "base")  # Rails' SECRET_KEY_BASE


# --- context validators ---------------------------------------------------------------------------------------------


def _json_key(text: str, start: int, ss: int, se: int) -> bool:
    """The match starts at the `":` closing a key: find the key's opening quote and test the key."""
    quote = text.rfind('"', max(0, start - 128), start)
    if quote < 0:
        return False
    key = text[quote + 1 : start].rstrip("\\")
    if not key or any(c in key for c in '\\\n\r\x00"'):
        return False
    return is_secret_key(key) and _MARKER_RE.fullmatch(text, ss, se) is None


_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_UPPER_NAME_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")
# Between a line start (also an escaped `\n`) and an env-style name: indentation, `export`, `ENV`, `- ` ...
_LINE_PREFIX_RE: Final = re.compile(
    r"(?:^|[\r\n\x00]|\\[nr])[ \t]*"
    r"(?:(?:export|ENV|env|set|setx|declare(?:[ \t]+-[A-Za-z]+)*|local|readonly|-)[ \t]+)?\Z"
)
_IDENT_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_ATTRIBUTE_PATH_RE: Final = re.compile(r"[A-Za-z_$]+(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+")  # process.env.TOKEN
_AWS_INI_NAMES: Final = frozenset({"aws_secret_access_key", "aws_session_token"})  # ~/.aws/credentials
_STOP_VALUES: Final = frozenset({"none", "null", "nil", "true", "false", "undefined", "empty", "changeme"})


def _secret_assignment(text: str, start: int, ss: int, se: int) -> bool:
    """`NAME=value` (the match starts at `=`): NAME must be a secret name and the assignment must stand where
    assignments of values stand:

    - a query string, fragment or form body (`?access_token=`, `&client_secret=`, `#access_token=`) or a CLI flag
      (`--password=`); `code`, `sig` and `signature` count only after `?&#`, with a value of 10+ characters;
    - a quoted string literal (`password="x"` in a call, `const API_KEY = "x"`, `SECRET_KEY = 'x'`);
    - a line start, indented or after `export`/`ENV`/`set`/`declare`/`-` (.env, shell, Dockerfile, compose, also
      after an escaped `\\n`); unquoted `name = value` with spaces is code, so it counts only when the value cannot
      be an identifier, or for the `aws_secret_access_key = ...` line of ~/.aws/credentials;
    - mid-line without spaces, for an UPPER_SNAKE name (`docker run -e DB_PASSWORD=x`, `env GITHUB_TOKEN=x cmd`) or
      right after a quote (`curl -d "password=x&..."`);
    - `.npmrc`'s `:_authToken=` and `:_password=`.

    References and placeholders are left: `${X}`, `$(cmd)`, `{{x}}`, `%s`, `<token>`, `None`, `null`, `true`,
    `***`, attribute paths (`process.env.TOKEN`), a value that already is a marker.
    """
    value = text[ss:se]
    if value.lower() in _STOP_VALUES or value.startswith(_TEMPLATE_STARTS) or set(value) <= _MASKS:
        return False
    if _ATTRIBUTE_PATH_RE.fullmatch(value) or _MARKER_RE.fullmatch(value):
        return False
    end = start
    spaced = text[end - 1 : end] in (" ", "\t")
    if spaced:
        end -= 1
    begin = end
    floor = max(0, end - 64)
    while begin > floor and text[begin - 1] in _NAME_CHARS:
        begin -= 1
    if text[begin - 1 : begin] == "\\" and text[begin : begin + 1] in ("n", "r", "t"):
        begin += 1  # `\nTOKEN=`: the name follows an escaped line break
    name = text[begin:end]
    flag = name.startswith("-")
    name = name.lstrip("-.")
    if not name or not _is_secret_name(name):
        return False
    quoted = text[ss - 1 : ss] in ('"', "'")
    if spaced and not quoted and _IDENT_RE.fullmatch(value) and name.lower() not in _AWS_INI_NAMES:
        return False  # `token = token`: an expression, not a literal
    ctx = text[begin - 1] if begin > 0 else "\n"
    if _words(name)[-1] in _QUERY_ONLY:
        return ctx in "?&#" and not spaced and se - ss >= 10
    if ctx in "?&;#" or flag or name in ("_authToken", "_password"):
        return not spaced
    if quoted:
        return True
    # Without MULTILINE, `^` matches only at the real start of `text`; `\Z` matches at `begin` (the endpos).
    if _LINE_PREFIX_RE.search(text, max(0, begin - 48), begin) is not None:
        return True
    return not spaced and (_UPPER_NAME_RE.fullmatch(name) is not None or ctx in "\"'")


# --- the rule table -------------------------------------------------------------------------------------------------

_B64URL = "A-Za-z0-9_-"

_PEM_LABEL = r" (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
# Whole block: anything up to the next `-----` (so a search never runs past the next header), which must be the END
# line. Cut-short block: the header plus every following line that is base64 or a PEM header field.
_PEM_BLOCK = (
    _PEM_LABEL
    + r"(?:(?:[^\x00-]|-(?!----)){0,20000}+-----END"
    + _PEM_LABEL
    + r"|(?:(?:[ \t]*(?:\r?\n|\\+[rn]))*+[ \t]*"
    + r"(?:[A-Za-z0-9+/=]{16,}+|[A-Za-z0-9+/=]++(?=[ \t]*(?:[\r\n\"'\x00\\]|\Z)|[^A-Za-z0-9+/= \t])"
    + r"|(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset):[^\r\n\\\x00]*+))*+)"
)

# `json-key` in text. Candidates: a `":` preceded by the last letters of a secret key word (key, token, secret,
# passwd, cookie, password, verifier; case-insensitive) -- checked first by the last character alone, then per
# suffix width -- with 0, 1, 3 or 7 backslashes before the quote: JSON text nested 0-3 levels deep in JSON strings.
_DEPTHS = (0, 1, 3, 7)
_JSON_KEY_CANDIDATE = (
    r'(?<=[yYnNtTdDeErR\\]":)(?:'
    + "|".join(
        f'(?<=(?i:{suffixes}){re.escape(chr(92) * k)}":)'
        for suffixes in ("key", "oken|cret|sswd|okie|word|fier")
        for k in _DEPTHS
    )
    + ")"
)


def _json_string_body(k: int) -> str:
    """A JSON string body whose quotes are preceded by `k` backslashes (the escaping of its nesting depth)."""
    if k == 0:
        return r'(?<=[: ]")(?:[^"\\\x00\r\n]|\\[^\x00\r\n])++(?=")'
    # A backslash run before a quote that is longer than `k` escapes an inner quote; any other run is an escape.
    return rf'(?<=[: ]\\{{{k}}}")(?:[^"\\\x00\r\n]|\\++(?!")|\\{{{k + 1},}}+")++(?=\\{{{k}}}")'


_JSON_VALUE = r"[ ]?\\{0,7}" + '"(?P<secret>' + "|".join(_json_string_body(k) for k in _DEPTHS) + ")"

# `secret-assignment` candidates: an `=` (or ` =`) after the last letters of a secret name word.
_ASSIGN_CANDIDATE = (
    "(?<=[yYgGdDsSeEnNtTrR ]=)(?:"
    + "|".join(
        f"(?<=(?i:{suffixes}){sp}=)"
        for suffixes in ("key|sig|pwd", "pass|code|base|oken|cret|sswd|word|fier|ture")
        for sp in ("", " ")
    )
    + ")"
)
# A quoted value (quotes possibly escaped), or an unquoted one that is not a reference (`$X`, `${X}`, `f(x)`).
_ASSIGN_VALUE = (
    r"[ \t]*(?:\\*+[\"'])?(?P<secret>(?<=[\"'])[^\"'\\\r\n\x00]{4,}+(?=\\*+[\"'])"
    r"|(?<![\"'])[^\s\"'\\`$<>{}()\[\];,&|#\x00][^\s\"'\\`<>(){}\[\];,&|#\x00]{3,}+(?=[\s\"'\\;,&|#\x00]|\Z))"
)

_SECRET_HEADER_RE: Final = re.compile(
    r"(?:proxy-)?authorization|(?:set-)?cookie|(?:[a-z0-9]+[-_])*(?:api[-_]?key|apikey|token|secret|password|passwd)",
    re.IGNORECASE,
)


def _rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []

    def add(
        rule_id: str, lead: _Lead, body: str, description: str, validate: Validator | None = None, back: int = 0
    ) -> None:
        pattern = re.compile(lead.regex + body)
        rules.append(Rule(rule_id, pattern, description, lead.regex, body, validate, back, lead.literal))

    rnd = _random
    # Leads begin at a token's rarest character (`J` of `eyJ`, `k` of `sk-`, `7` of `ac7_`): the literal search
    # is fastest when its first character is rare. `back` returns the characters before the lead to the secret.
    add(
        "private-key-pem",
        _lead("-----BEGIN", boundary=False),
        _PEM_BLOCK,
        "PEM private key block (RSA, EC, OpenSSH, PGP, ...)",
    )
    add(
        "jwt",
        _lead("J", "eyJ"),
        rf"[{_B64URL}]{{10,}}+\.ey[{_B64URL}]{{10,}}+\.[{_B64URL}]*+",
        "JSON Web Token (three base64url segments, header and payload JSON objects)",
        back=2,
    )
    sk = _lead("k-", "sk-")
    add("anthropic-oauth-access", sk, rf"ant-oat[0-9]{{2}}-[{_B64URL}]{{20,}}+", "Claude OAuth access token", rnd, 1)
    add("anthropic-oauth-refresh", sk, rf"ant-ort[0-9]{{2}}-[{_B64URL}]{{20,}}+", "Claude OAuth refresh token", rnd, 1)
    add(
        "anthropic-api-key",
        sk,
        rf"ant-(?!o[ar]t[0-9])[{_B64URL}]{{20,}}+",
        "Anthropic API, admin or session key (sk-ant-api03-, -admin01-, -sid01-)",
        rnd,
        1,
    )
    add("openai-project-key", sk, rf"proj-[{_B64URL}]{{20,}}+", "OpenAI project key", rnd, 1)
    add("openrouter-key", sk, r"or-v[0-9]+-[A-Za-z0-9]{32,}+", "OpenRouter key", rnd, 1)
    add(
        "openai-key",
        sk,
        rf"(?:(?:svcacct|admin|None)-[{_B64URL}]{{20,}}+|[A-Za-z0-9]{{20,}}+(?![_-]))",
        "OpenAI service-account/admin/legacy key, and other bare sk- keys",
        _openai_key,
        1,
    )
    add("github-fine-grained", _lead("github_pat_"), r"[A-Za-z0-9_]{50,}+", "GitHub fine-grained PAT", rnd)
    gh = _lead("gh")
    add("github-pat", gh, r"p_[A-Za-z0-9]{36,}+", "GitHub classic PAT (ghp_)", rnd)
    add("github-oauth", gh, r"o_[A-Za-z0-9]{36,}+", "GitHub OAuth token (gho_)", rnd)
    add("github-app-token", gh, r"[us]_[A-Za-z0-9]{36,}+", "GitHub App user/installation token (ghu_, ghs_)", rnd)
    add("github-refresh", gh, r"r_[A-Za-z0-9]{36,}+", "GitHub refresh token (ghr_)", rnd)
    gl = _lead("gl")
    add("gitlab-pat", gl, rf"pat-[{_B64URL}]{{20,}}+(?:\.[{_B64URL}]++)*+", "GitLab personal access token", rnd)
    add(
        "gitlab-token",
        gl,
        rf"(?:dt|rt|ptt|ft|imt|agent|oas|cbt|soat|ffct|sdt)-[{_B64URL}]{{20,}}+(?:\.[{_B64URL}]++)*+",
        "GitLab deploy/runner/trigger/feed/OAuth/CI token",
        rnd,
    )
    add(
        "slack-token",
        _lead("x"),
        r"(?:ox[abeoprs](?:\.xox[abeoprs])?|app)-[A-Za-z0-9-]{10,}+",
        "Slack token (xoxb-, xoxp-, xoxa-, xoxe., xapp-)",
        _slack,
    )
    add(
        "slack-webhook",
        _lead("hooks.slack.com/"),
        r"(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9+/_-]{20,}+)",
        "Slack incoming-webhook URL path",
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
        "Stripe secret or restricted key (not pk_ publishable keys)",
        rnd,
        1,
    )
    add("stripe-webhook-secret", _lead("whsec_"), r"[A-Za-z0-9+/]{24,}+={0,2}", "Stripe webhook signing secret", rnd)
    add("npm-token", _lead("npm_"), r"[A-Za-z0-9]{36}(?![A-Za-z0-9_-])", "npm access token", rnd)
    add("pypi-token", _lead("pypi-"), rf"AgE[{_B64URL}]{{50,}}+", "PyPI API token (macaroon)", rnd)
    add("huggingface-token", _lead("hf_"), r"[A-Za-z0-9]{34,}+", "Hugging Face token", rnd)
    add("ac7-token", _lead("7_", "ac7_"), rf"[{_B64URL}]{{43}}(?![{_B64URL}])", "ac7 bearer token", rnd, 2)
    add(
        "url-credentials",
        _lead("://", boundary=False),
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
        "Basic <base64 of user:password> in text",
        _basic,
    )
    add(
        JSON_KEY_RULE,
        _lead('":', boundary=False),
        _JSON_KEY_CANDIDATE + _JSON_VALUE,
        "string under a secret JSON key",
        _json_key,
    )
    add(
        "secret-assignment",
        _lead("=", boundary=False),
        _ASSIGN_CANDIDATE + _ASSIGN_VALUE,
        "NAME=value for a secret NAME (.env, shell, CLI flag, query string, form body, string literal)",
        _secret_assignment,
    )
    rules.append(Rule(HEADER_RULE, _SECRET_HEADER_RE, "whole value of a credential header (pattern: header names)"))
    return tuple(rules)


RULES: Final[tuple[Rule, ...]] = _rules()
RULE_IDS: Final[tuple[str, ...]] = tuple(r.id for r in RULES)
_MARKERS: Final[dict[str, str]] = {r.id: marker(r.id) for r in RULES}
_HEADER_MARKER: Final = _MARKERS[HEADER_RULE]
_JSON_KEY_MARKER: Final = _MARKERS[JSON_KEY_RULE]


# --- passes: the rules sharing a lead, as one regex -----------------------------------------------------------------


class _Pass:
    __slots__ = ("groups", "literal", "regex")

    def __init__(self, lead: str, rules: list[Rule]) -> None:
        self.literal = rules[0].literal
        alternatives = []
        self.groups: dict[str, tuple[Rule, str | None]] = {}
        for i, rule in enumerate(rules):
            body, secret = rule.body, None
            if "(?P<secret>" in body:
                secret = f"s{i}"
                body = body.replace("(?P<secret>", f"(?P<{secret}>")
            alternatives.append(f"(?P<r{i}>{body})")
            self.groups[f"r{i}"] = (rule, secret)
        self.regex = re.compile(lead + "(?:" + "|".join(alternatives) + ")")

    def apply(self, text: str, counts: Redactions) -> str:
        """`text` with this pass's secrets replaced (the same object when there were none)."""
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


# --- public functions -----------------------------------------------------------------------------------------------


# Up to this length a `literal in text` test per pass is cheaper than starting the pass's regex.
_SHORT: Final = 512


def redact_text(text: str, counts: Redactions) -> str:
    """`text` with every secret replaced by `[REDACTED:<rule id>]`, each replacement counted in `counts`."""
    if len(text) < _MIN_LEN:
        return text
    short = len(text) <= _SHORT
    for p in _PASSES:
        if not short or p.literal in text:
            text = p.apply(text, counts)
    return text


def is_secret_header(name: str) -> bool:
    """True for a header whose whole value is a credential (case-insensitive)."""
    return _SECRET_HEADER_RE.fullmatch(name) is not None


def redact_headers(headers: Iterable[tuple[str, str]], counts: Redactions) -> list[tuple[str, str]]:
    """Credential headers masked whole, every other value through `redact_text`; names and order kept."""
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
    """A redacted copy of a JSON value (`json.loads` output): secret keys' values masked, every string and key
    through `redact_text`. The input is not modified."""
    if isinstance(value, str):
        return redact_text(value, counts)
    walker = _Walker(counts)
    out = walker.copy(value)
    walker.finish()
    return out


# Keys seen before that contain no secret -> whether they are secret keys. A key that is (or holds) a secret is never
# stored, so this cache keeps no secret in memory.
_CLEAN_KEYS: dict[str, bool] = {}
_CLEAN_KEYS_MAX: Final = 16384


def _key(key: str, counts: Redactions) -> tuple[str, bool]:
    """(the key as redacted, whether its value is secret)."""
    secret = _CLEAN_KEYS.get(key)
    if secret is not None:
        return key, secret
    fired = Redactions()
    redacted = redact_text(key, fired)
    secret = is_secret_key(key)
    if fired:
        counts.update(fired)
    else:
        if len(_CLEAN_KEYS) >= _CLEAN_KEYS_MAX:
            _CLEAN_KEYS.clear()
        _CLEAN_KEYS[key] = secret
    return redacted, secret


_SCHEMA_WORDS: Final = ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const")


class _Walker:
    """Copies a JSON value iteratively (nesting depth is not bounded by Python's recursion limit), masking secret
    keys' values and noting where every string landed; `finish` then redacts, in place in the copy, just the strings
    in which some pass found a candidate."""

    __slots__ = ("counts", "slots", "strings")

    def __init__(self, counts: Redactions) -> None:
        self.counts = counts
        self.strings: list[str] = []
        self.slots: list[tuple[Any, Any]] = []  # (container in the copy, index or key) of each string

    def copy(self, value: Any) -> Any:
        if not isinstance(value, (dict, list, tuple)):
            return value
        root: Any = {} if isinstance(value, dict) else []
        # Work items: (source container, its copy, whether it is a JSON Schema `properties` object).
        stack: list[tuple[Any, Any, bool]] = [(value, root, False)]
        while stack:
            source, out, schema_properties = stack.pop()
            if isinstance(out, dict):
                self._dict(source, out, schema_properties, stack)
            else:
                out.extend([None] * len(source))
                for i, item in enumerate(source):
                    self._put(item, out, i, None, stack)
        return root

    def _put(self, item: Any, out: Any, slot: Any, key: Any, stack: list[tuple[Any, Any, bool]]) -> None:
        if isinstance(item, str):
            if len(item) >= _MIN_LEN:
                self.strings.append(item)
                self.slots.append((out, slot))
            out[slot] = item
        elif isinstance(item, dict):
            child: Any = {}
            out[slot] = child
            stack.append((item, child, key == "properties"))
        elif isinstance(item, (list, tuple)):
            child = []
            out[slot] = child
            stack.append((item, child, False))
        else:
            out[slot] = item

    def _dict(
        self, source: dict[Any, Any], out: dict[Any, Any], schema_properties: bool, stack: list[tuple[Any, Any, bool]]
    ) -> None:
        for key, item in source.items():
            new_key, secret = _key(key, self.counts) if isinstance(key, str) else (key, False)
            if secret and schema_properties and isinstance(item, dict) and any(w in item for w in _SCHEMA_WORDS):
                secret = False  # a property definition in a JSON Schema, not a value
            if new_key in out:
                n = 2
                while f"{new_key}#{n}" in out:
                    n += 1
                new_key = f"{new_key}#{n}"
            if secret and item is not None and not (isinstance(item, str) and _MARKER_RE.fullmatch(item)):
                self.counts.add(JSON_KEY_RULE)
                out[new_key] = _JSON_KEY_MARKER
            else:
                self._put(item, out, new_key, key, stack)

    def finish(self) -> None:
        strings = self.strings
        if not strings:
            return
        joined = "\x00".join(strings)
        starts = []
        pos = 0
        for s in strings:
            starts.append(pos)
            pos += len(s) + 1
        candidates: dict[int, set[int]] = {}  # string index -> passes with a candidate in it
        for k, p in enumerate(_PASSES):
            for m in p.regex.finditer(joined):
                candidates.setdefault(bisect_right(starts, m.start()) - 1, set()).add(k)
        for i, passes in candidates.items():
            container, slot = self.slots[i]
            container[slot] = _redact_candidates(strings[i], passes, self.counts)


def _redact_candidates(text: str, passes: set[int], counts: Redactions) -> str:
    """`redact_text(text, counts)`, knowing that only `passes` have a candidate in `text`: until a replacement changes
    the text, a pass without a candidate cannot find one and is skipped; after one, every later pass runs."""
    changed = False
    for k, p in enumerate(_PASSES):
        if changed or k in passes:
            out = p.apply(text, counts)
            changed = changed or out is not text
            text = out
    return text
