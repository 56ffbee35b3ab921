"""Labelled cases for `ac7_core.redaction`: per-rule positives and negatives, a precision corpus and near-miss inputs.

Every secret here is fake: built at import time from a seeded RNG (so no token-shaped literal sits in the source for
secret scanners to trip on) and tagged `FAKE`/`TEST` where the charset allows. Formats follow the issuers' documented
shapes (prefix, charset, length), after gitleaks' rule tests (`cmd/generate/config/rules/*.go`: tps/fps) and
detect-secrets' `test_data`, re-derived rather than copied.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass, field

from ac7_core.tokens import mint_token

_RNG = random.Random(20260722)
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "_-"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
UPPER_B32 = string.ascii_uppercase + "234567"


def rand(charset: str, n: int, *, tag: str = "") -> str:
    """`tag` + random characters from `charset`, `n` characters in all, always holding a digit and a letter."""
    body = tag + "".join(_RNG.choice(charset) for _ in range(n - len(tag)))
    if not any(c.isdigit() for c in body) and any(c.isdigit() for c in charset):
        body = body[:-1] + "7"
    return body


# --- fake secrets, one generator per format ---


def anthropic_api_key() -> str:
    return "sk-ant-" + "api03-" + rand(B64URL, 93, tag="FAKE") + "AA"


def anthropic_admin_key() -> str:
    return "sk-ant-" + "admin01-" + rand(B64URL, 93, tag="FAKE") + "AA"


def claude_oauth_access() -> str:
    return "sk-ant-" + "oat01-" + rand(B64URL, 93, tag="FAKE") + "AA"


def claude_oauth_refresh() -> str:
    return "sk-ant-" + "ort01-" + rand(B64URL, 93, tag="FAKE") + "AA"


def openai_project_key() -> str:
    return "sk-" + "proj-" + rand(B64URL, 74, tag="FAKE") + "T3BlbkFJ" + rand(B64URL, 74)


def openai_legacy_key() -> str:
    return "sk-" + rand(ALNUM, 20, tag="FAKE") + "T3BlbkFJ" + rand(ALNUM, 20)


def openai_svcacct_key() -> str:
    return "sk-" + "svcacct-" + rand(B64URL, 74, tag="FAKE") + "T3BlbkFJ" + rand(B64URL, 74)


def openrouter_key() -> str:
    return "sk-" + "or-v1-" + rand(HEX, 64)


def github(prefix: str) -> str:
    return prefix + "_" + rand(ALNUM, 36, tag="FAKE")


def github_fine_grained() -> str:
    return "github_" + "pat_" + "11" + rand(ALNUM, 20, tag="FAKE") + "_" + rand(ALNUM, 59)


def gitlab(prefix: str) -> str:
    return prefix + "-" + rand(B64URL, 20, tag="FAKE")


def slack(prefix: str) -> str:
    return f"{prefix}-{rand(string.digits, 11)}-{rand(string.digits, 12)}-{rand(ALNUM, 24, tag='FAKE')}"


def slack_webhook_path() -> str:
    return f"T{rand(UPPER_B32, 8)}/B{rand(UPPER_B32, 8)}/{rand(ALNUM, 24, tag='FAKE')}"


def aws_key_id(prefix: str = "AKIA") -> str:
    return prefix + rand(UPPER_B32, 16, tag="FAKE")


def bedrock_key() -> str:
    return "ABSK" + "QmVkcm9ja0FQSUtleS" + rand(B64, 100, tag="FAKE")


def google_api_key() -> str:
    return "AIza" + rand(B64URL, 35, tag="FAKE")


def google_oauth_access() -> str:
    return "ya29." + rand(B64URL, 120, tag="a0FAKE")


def google_client_secret() -> str:
    return "GOCSPX-" + rand(B64URL, 28, tag="FAKE")


def stripe(prefix: str) -> str:
    return prefix + "_" + rand(ALNUM, 24, tag="FAKE")


def stripe_webhook_secret() -> str:
    return "whsec_" + rand(B64, 32, tag="FAKE")


def npm_token() -> str:
    return "npm_" + rand(ALNUM, 36, tag="FAKE")


def pypi_token() -> str:
    return "pypi-" + "AgEIcHlwaS5vcmc" + rand(B64URL, 70, tag="FAKE")


def hf_token() -> str:
    return "hf_" + rand(string.ascii_letters, 34, tag="FAKE")


def jwt(payload: str = '{"sub":"FAKE-1234567890","name":"Test","iat":1516239022}') -> str:
    def seg(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return seg(b'{"alg":"HS256","typ":"JWT"}') + "." + seg(payload.encode()) + "." + rand(B64URL, 43)


def pem(label: str = "RSA PRIVATE KEY", lines: int = 6, sep: str = "\n", headers: str = "") -> str:
    body = sep.join(rand(B64, 64) for _ in range(lines)) + sep + rand(B64, 24) + "=="
    return f"-----BEGIN {label}-----{sep}{headers}{body}{sep}-----END {label}-----"


def png_base64(size: int) -> str:
    raw = bytes(_RNG.getrandbits(8) for _ in range(size))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + raw).decode()


# --- per-rule cases ---


@dataclass
class Case:
    """Positives are (text, secret): the secret must vanish and the rule fire once. Negatives stay unchanged."""

    positives: list[tuple[str, str]] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)


def _pos(template: str, secret: str) -> tuple[str, str]:
    return template.format(s=secret), secret


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    rsa, ec = pem(), pem("EC PRIVATE KEY", 3)
    ssh = pem("OPENSSH PRIVATE KEY", 5)
    encrypted = pem("RSA PRIVATE KEY", 4, headers="Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\n")
    truncated = pem("PRIVATE KEY", 5).split("-----END")[0][:-30]
    c["private-key-pem"] = Case(
        [
            _pos("key file:\n{s}\nthat was it", rsa),
            _pos('{{"private_key_pem": "{s}"}}', ec.replace("\n", "\\n")),  # escaped newlines
            _pos("$ cat ~/.ssh/id_ed25519\r\n{s}\r\n", ssh.replace("\n", "\r\n")),
            _pos("{s}", encrypted),
            _pos("$ head -c 300 key.pem\n{s}", truncated),  # cut short: no END line
        ],
        [
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
            "A PEM file starts with -----BEGIN, then a label such as RSA PRIVATE KEY on the same line.",
        ],
    )
    token = jwt()
    c["jwt"] = Case(
        [
            _pos("Authorization: Bearer {s}", token),
            _pos("Set-Cookie: session={s}; Path=/; HttpOnly", jwt('{"user":"FAKE","exp":1}')),
            _pos("unsigned: {s} end", token.rsplit(".", 1)[0] + "."),
        ],
        [
            "eyJfoo.bar.baz and v1.2.3 and a.b.c",
            "header only: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 end",
            "two segments eyJhbGciOiJIUzI1NiJ9.notapayloadsegment.abc",
            "glued xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
        ],
    )
    c["anthropic-api-key"] = Case(
        [_pos("export ANTHROPIC_API_KEY={s}", anthropic_api_key()), _pos("admin key '{s}'", anthropic_admin_key())],
        [
            "desk-ant-api03-" + rand(B64URL, 95),  # `sk-ant-` inside a word
            "sk-ant-api03-tooShort",
            "sk-ant-api03-" + "x" * 93 + "AA",  # placeholder
        ],
    )
    c["anthropic-oauth-access"] = Case(
        [
            _pos("Authorization: Bearer {s}", claude_oauth_access()),
            _pos('{{"claudeAiOauth":{{"accessToken":"{s}","expiresAt":1}}}}', claude_oauth_access()),
        ],
        ["sk-ant-oat01-short", "mask-ant-oat01-" + rand(B64URL, 95)],
    )
    c["anthropic-oauth-refresh"] = Case(
        [
            _pos("refresh with {s} now", claude_oauth_refresh()),
            _pos("CLAUDE_CODE_OAUTH_REFRESH={s}", claude_oauth_refresh()),
        ],
        ["sk-ant-ort01-short", "task-ant-ort01-" + rand(B64URL, 95)],
    )
    c["openai-project-key"] = Case(
        [
            _pos("OPENAI_API_KEY={s}", openai_project_key()),
            _pos("client = OpenAI(api_key='{s}')", openai_project_key()),
        ],
        ["sk-proj-short", "risk-proj-" + rand(B64URL, 80)],
    )
    c["openrouter-key"] = Case(
        [_pos("key {s}", openrouter_key()), _pos("Authorization: Bearer {s}", openrouter_key())],
        ["sk-or-v1-tooshort", "ask-or-v1-" + rand(HEX, 64)],
    )
    c["openai-key"] = Case(
        [_pos("key {s}", openai_legacy_key()), _pos("key={s};", openai_svcacct_key())],
        [
            "sk-abcdefghijklmnopqrstuvwxyz",  # no digit: a word, not a key
            "task-skip, desk-ant, sk-learn",
            "sk-1234567890abcdefghij-component",  # kebab identifier
        ],
    )
    c["github-fine-grained"] = Case(
        [_pos("GH_TOKEN={s}", github_fine_grained()), _pos("token {s}\n", github_fine_grained())],
        ["github_pat_short", "my_github_pat_11" + rand(ALNUM, 80)],
    )
    for rule, prefixes in (
        ("github-pat", ("ghp", "ghp")),
        ("github-oauth", ("gho", "gho")),
        ("github-app-token", ("ghu", "ghs")),
        ("github-refresh", ("ghr", "ghr")),
    ):
        p0, p1 = prefixes
        c[rule] = Case(
            [_pos("token: {s}", github(p0)), _pos("https://x-access-token:{s}@github.com/o/r.git", github(p1))],
            [
                f"{p0}_" + rand(ALNUM, 35),  # one short
                f"s{p0}_" + rand(ALNUM, 36),  # glued to a word
                f"{p0}_" + "x" * 36,  # placeholder
                f"the {p0} tool and {p0}-pages",
            ],
        )
    c["gitlab-pat"] = Case(
        [
            _pos("PRIVATE-TOKEN: {s}", gitlab("glpat")),
            _pos("glab auth login --token {s} --hostname gitlab.example.com", gitlab("glpat") + ".01.0r03m6dvm"),
        ],
        ["glpat-short", "xglpat-" + rand(B64URL, 20)],
    )
    c["gitlab-token"] = Case(
        [_pos("deploy token {s}", gitlab("gldt")), _pos("runner token {s}", gitlab("glrt"))],
        ["glx-" + rand(B64URL, 20), "glrt-short", "the glrt- prefix"],
    )
    c["slack-token"] = Case(
        [
            _pos("SLACK_BOT={s}", slack("xoxb")),
            _pos("user token {s}", slack("xoxp")),
            _pos("app token {s}", "xapp-1-" + rand(ALNUM, 30, tag="FAKE")),
            _pos("rotating {s}", "xoxe.xoxp-1-" + rand(ALNUM, 40, tag="FAKE")),
        ],
        ["xoxb-short", "xoxb-abcdefghijklmnopqrst", "0xoxb-1234567890-abcdefghij", "box-x 0xdeadbeef"],
    )
    webhook = slack_webhook_path()
    c["slack-webhook"] = Case(
        [
            (f"curl -X POST https://hooks.slack.com/services/{webhook}", webhook),
            (f"url: https://hooks.slack.com/workflows/{webhook}", webhook),
        ],
        ["https://hooks.slack.com/services/short", "https://api.slack.com/methods/chat.postMessage"],
    )
    c["aws-access-key-id"] = Case(
        [_pos("AWS_ACCESS_KEY_ID={s}", aws_key_id()), _pos('"AccessKeyId": "{s}"', aws_key_id("ASIA"))],
        [
            "AKIAIOSFODNN7EXAMPLE",  # AWS's documented placeholder
            "AKIA" + rand(UPPER_B32, 15),
            "XAKIA" + rand(UPPER_B32, 16),
            "AKIA" + rand(UPPER_B32, 17),  # too long
            "AKIAXXXXXXXXXXXXXXXX",
        ],
    )
    c["aws-bedrock-api-key"] = Case(
        [_pos("AWS_BEARER_TOKEN_BEDROCK={s}", bedrock_key()), _pos("key: {s}\n", bedrock_key())],
        ["ABSKQmVkcm9ja0FQSUtleS short", "ABSK" + rand(B64, 100)],
    )
    c["google-api-key"] = Case(
        [
            _pos("https://maps.googleapis.com/x?key={s}&q=1", google_api_key()),
            _pos("GOOGLE_API_KEY: {s}", google_api_key()),
        ],
        ["AIza" + rand(B64URL, 34), "AIza" + rand(B64URL, 36), "xAIza" + rand(B64URL, 35)],
    )
    c["google-oauth-access"] = Case(
        [
            _pos("$ gcloud auth print-access-token\n{s}\n", google_oauth_access()),
            _pos("token={s}.", google_oauth_access()),
        ],
        ["ya29.short", "xya29." + rand(B64URL, 60)],
    )
    c["google-oauth-client-secret"] = Case(
        [_pos("client secret {s}", google_client_secret()), _pos("--client-secret {s}", google_client_secret())],
        ["GOCSPX-short", "XGOCSPX-" + rand(B64URL, 28)],
    )
    c["stripe-key"] = Case(
        [
            _pos("stripe.api_key = '{s}'", stripe("sk_live")),
            _pos("restricted {s}", stripe("rk_test")),
            _pos("{s}", stripe("sk_test")),
        ],
        [stripe("pk_live"), "disk_live_" + rand(ALNUM, 24), "sk_live_short"],
    )
    c["stripe-webhook-secret"] = Case(
        [
            _pos("Ready! Your webhook signing secret is {s} (^C to quit)", stripe_webhook_secret()),
            _pos("secret: {s}", stripe_webhook_secret()),
        ],
        ["whsec_short", "xwhsec_" + rand(B64, 32)],
    )
    c["npm-token"] = Case(
        [_pos("//registry.npmjs.org/:_authToken={s}", npm_token()), _pos("NPM_TOKEN {s}\n", npm_token())],
        ["npm_config_registry=https://registry.npmjs.org/", "npm_" + rand(ALNUM, 37), "npm_package_json"],
    )
    c["pypi-token"] = Case(
        [_pos("[pypi]\nusername = __token__\npassword = {s}\n", pypi_token()), _pos("twine -p {s}", pypi_token())],
        ["pypi-server --port 8080", "pypi-AgEshort"],
    )
    c["huggingface-token"] = Case(
        [_pos("HF_TOKEN={s}", hf_token()), _pos("login(token='{s}')", hf_token())],
        ["hf_model_name = 'bert-base-uncased'", "shelf_" + rand(string.ascii_letters, 34)],
    )
    c["ac7-token"] = Case(
        [_pos("Authorization: Bearer {s}", mint_token()), _pos("AC7_TOKEN={s}\n", mint_token())],
        [
            "import ac7_core.redaction; mcp__ac7__send",
            "ac7_" + rand(B64URL, 42) + " ",  # one short
            "ac7_" + rand(B64URL, 44),  # one long
        ],
    )
    c["url-credentials"] = Case(
        [
            ("DATABASE_URL is postgres://app:Sup3r-secret@db.internal:5432/app", "Sup3r-secret"),
            ("git clone https://bob:pa55word@git.example.com/team/repo.git", "pa55word"),
            ("redis://:r3dis-pass@cache:6379/0", "r3dis-pass"),
        ],
        [
            "https://example.com:8443/path/a@b",
            "git@github.com:org/repo.git and ssh://git@host:22/x",
            "https://user@example.com/login",
            "postgres://app:${DB_PASSWORD}@db/app",
            "https://user:****@example.com/x",
        ],
    )
    c["bearer-in-text"] = Case(
        [
            ("curl -H 'Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0' x", "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
            ("headers: authorization: bearer tok_FAKE.a1b2c3d4e5f6g7h8", "tok_FAKE.a1b2c3d4e5f6g7h8"),
        ],
        [
            "Bearer token authentication is described in RFC 6750",
            "Authorization: Bearer YOUR_ACCESS_TOKEN_HERE",
            'f"Bearer {token}" and "Bearer " + token and Bearer $TOKEN',
            "Authorization: Bearer <token>",
        ],
    )
    basic = base64.b64encode(b"admin:FAKE-pa55").decode()
    c["basic-auth-in-text"] = Case(
        [(f"Authorization: Basic {basic}", basic), (f"-H 'authorization: basic {basic}'", basic)],
        ["Basic usage: run the tool", "Basic authentication is weak", "Basic aGVsbG8gd29ybGQ="],  # hello world
    )
    c["json-key"] = Case(
        [
            ('{"access_token": "opaque-FAKE-value", "token_type": "Bearer"}', "opaque-FAKE-value"),
            ('{\\"refreshToken\\": \\"FAKE-refresh\\", \\"x\\": 1}', "FAKE-refresh"),  # JSON inside a string
            ('{"client-secret":"FAKE secret with spaces"}', "FAKE secret with spaces"),
            ('[{"name": "db", "password": "hunter2-FAKE"}]', "hunter2-FAKE"),
        ],
        [
            '{"max_tokens": 1024, "token_type": "Bearer"}',
            '{"password_hash": "$argon2id$v=19$m=65536", "secretName": "db-creds"}',
            '{"key": "value", "monkey": "banana"}',
            '{"password": {"type": "string", "description": "the password"}}',
            '{"password": ""}',
        ],
    )
    c["secret-assignment"] = Case(
        [
            ("GITHUB_TOKEN=FAKE0123456789abcdef\n", "FAKE0123456789abcdef"),
            ("export DB_PASSWORD='FAKE pass 123'\n", "FAKE pass 123"),
            ("https://app.example/cb#access_token=FAKEabc123&state=x", "FAKEabc123"),
            ("mysql --password=FAKEhunter2 -u root", "FAKEhunter2"),
            ('SECRET_KEY = "django-insecure-FAKE"\n', "django-insecure-FAKE"),
            ("grant_type=refresh_token&refresh_token=r1.FAKE123456&client_id=x", "r1.FAKE123456"),
            ("docker run -e POSTGRES_PASSWORD=FAKEpw99 postgres", "FAKEpw99"),
            ("https://x.example/oauth/callback?code=4/0AFAKE1234567890&scope=email", "4/0AFAKE1234567890"),
        ],
        [
            "MAX_TOKENS=4096\nPWD=/home/dev\nOLDPWD=/tmp",
            "password = get_password()\ntoken = token\nf(password=password)",
            "API_KEY=${API_KEY}\nTOKEN=$(gh auth token)\nconst API_KEY=process.env.API_KEY",
            "exit code=1, status code=200, ?code=short",
            "page_token=abcdefgh1234 next_token=zzzz9999",
            "SECRET_KEY=None\nPASSWORD=changeme",
        ],
    )
    return c


CASES: dict[str, Case] = _cases()

# Things that look token-ish but are not secrets: must come out unchanged, with no count.
NOT_SECRETS: list[str] = [
    "msg_01XFDUDYJgAACzvnptvVoYEL toolu_01A09q90qw90lq917835lq9 srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
    "req_011CSHoEeqs5C35K2UUqR7Fy and request-id: req_018EeWyXxfu5pfWkrYcMdjWG",
    "123e4567-e89b-12d3-a456-426614174000 550E8400-E29B-41D4-A716-446655440000",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709\nMerge: 1a2b3c4 5d6e7f8",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "integrity sha512-" + base64.b64encode(bytes(range(64))).decode(),
    "task-skip, desk-ant, risk-assessment, disk-usage, mask-pro, kiosk-mode",
    "npm install @anthropic-ai/claude-code lodash.merge left-pad @types/node sk-learn",
    "/home/dev/.config/gh/hosts.yml /var/lib/ghp/cache C:\\Users\\dev\\AppData\\Local",
    "https://docs.anthropic.com/en/api/messages?lang=en#streaming and http://localhost:8717/healthz",
    "color: #ff00aa; background: #FFF; border-color: #1e90ff80;",
    "the ghp prefix marks a GitHub PAT; so do gho and ghs; xox marks Slack",
    "AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY (AWS documentation placeholders)",
    "Bearer tokens: send `Authorization: Bearer <token>`; Basic auth sends base64(user:pass).",
    '{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "Bash", "input": {"command": "ls"}}',
    '{"usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 0}, "max_tokens": 4096}',
    "def redact(token: str, password: str | None = None) -> str:\n    secret = compute(token)\n    return secret",
    "    api_key: str = Field(..., description='the API key')\n    password: SecretStr",
    "export PATH=/usr/local/bin:$PATH\nexport NODE_ENV=production\nexport GITHUB_TOKEN=$(gh auth token)",
    'version 1.2.3-beta.4+build.5, eyJ is base64 for {", v1.eyJ.x',
    "Ошибка: файл не найден — 日本語のテキスト — emoji 🎉🔑 — naïve café",
    "data:image/png;base64," + png_base64(3000),
]

# Unicode that must survive byte-for-byte.
UNICODE_TEXTS: list[str] = [
    "日本語のテキストと絵文字 🎉🔑👩\u200d💻 and combining e\u0301 and RTL \u05e9\u05dc\u05d5\u05dd",
    "naïve café — résumé \u201cquotes\u201d \u2018single\u2019 … ellipsis\u00a0nbsp\u200bzwsp",
    "lone surrogate \ud800 survives, so does \x00 NUL and \u2028 line separator",
    "\U0001d518\U0001d52b\U0001d526 math letters, \uff26\uff35\uff2c\uff2c fullwidth, 한국어, العربية, हिन्दी",
]


def sse_events(text: str, sizes: list[int]) -> list[str]:
    """`text` cut into `content_block_delta` SSE events (the way the API streams it), `sizes` characters at a time."""
    events = []
    pos = 0
    i = 0
    while pos < len(text):
        piece = text[pos : pos + sizes[i % len(sizes)]]
        pos += len(piece)
        i += 1
        data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(f"event: content_block_delta\ndata: {json.dumps(data)}\n\n")
    return events
