"""Secret-redaction throughput (`ac7_core.redaction`) on realistic Claude Code payloads; mostly no secrets.

Payload: one `POST /v1/messages` request body as Claude Code sends it late in a session (~3 MB of compact JSON): a
long system prompt (this repo's own docs), 16 tool definitions with JSON schemas, and ~70 turns whose tool results
are real source files from this repo (with `cat -n` line numbers), pytest / npm / server logs, JSON API output
(`gh api`-like, with SHAs, UUIDs, `msg_`/`toolu_` ids), `git log`, and one base64 PNG in an image block; a dozen
fake secrets are sprinkled in (so the replacement path runs too). Deterministic for a given seed. MB = 10^6 bytes of
the compact UTF-8 JSON encoding of what was redacted.

Measured, best of REPEATS runs each (single thread, after a warm-up run so per-key caches are as in a long session):
- `redact_json(request)`: the whole parsed request at once.
- `per_block`: the way the trace builder calls it -- `redact_text` on every text/thinking/tool_result string and
  system block, `redact_json` on every tool_use input and tool schema.
- `redact_text(body)`: the raw JSON text as one string (body previews, unparseable bodies).
Baselines, same run and bytes: `json.dumps` of the request; one `re.search` for an absent literal over the body text
(the cost of a single fast regex pass); `str.replace` of an absent literal.

Target: >= 50 MB/s for `redact_json(request)`. The benchmark only reports; it never fails.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import log, report, emit
from ac7_core.redaction import Redactions, redact_json, redact_text

SEED = 7
TURNS = 70
REPEATS = 5
TARGET_MB_S = 50.0
ROOT = Path(__file__).resolve().parent.parent

_WORDS = (
    "the of to and a in is it that for on with as this be are at by from or function return import class error "
    "test file path value config module package request response token message agent broker build deploy retry "
    "timeout queue socket handler server client cache index query commit branch review change line fixture naïve "
    "café — résumé 日本語 task-skip desk-ant"
).split()


def _sources() -> list[str]:
    files = sorted((ROOT / "packages").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files if p.stat().st_size > 2000]


def _docs() -> str:
    parts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    parts += [(ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "SECURITY.md") if (ROOT / name).exists()]
    return "\n\n".join(parts)


def _numbered(text: str) -> str:
    return "\n".join(f"{i:>6}\t{line}" for i, line in enumerate(text.splitlines(), 1))


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("0123456789abcdef", k=n))


def _b62(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=n))


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _log(rng: random.Random, lines: int) -> str:
    out = []
    for i in range(lines):
        kind = rng.random()
        ts = f"2026-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00.{i % 1000:03d}Z"
        if kind < 0.3:
            out.append(f"{ts} INFO  http GET /api/v1/items?page={i}&limit=50 200 {rng.randint(1, 90)}ms req={_uuid(rng)}")
        elif kind < 0.5:
            mod = rng.choice(("store", "fanout", "auth", "push"))
            out.append(f"tests/{mod}/test_{rng.choice(_WORDS)}.py::test_case_{i} PASSED [{i % 100:>3}%]")
        elif kind < 0.65:
            out.append(f"npm WARN deprecated {rng.choice(_WORDS)}-utils@{rng.randint(1, 9)}.0.{i}: use @scope/pkg")
        elif kind < 0.8:
            out.append(f"commit {_hex(rng, 40)}\nAuthor: Dev <dev@example.com>\n    fix: {' '.join(rng.choices(_WORDS, k=6))}")
        else:
            out.append(f'{ts} ERROR Traceback: File "/srv/app/{rng.choice(_WORDS)}.py", line {i}, in handler')
    return "\n".join(out)


def _api_json(rng: random.Random, items: int) -> str:
    rows = [
        {
            "id": f"msg_01{_b62(rng, 22)}",
            "tool_use_id": f"toolu_01{_b62(rng, 22)}",
            "sha": _hex(rng, 40),
            "digest": "sha256:" + _hex(rng, 64),
            "uuid": _uuid(rng),
            "url": f"https://api.github.com/repos/acme/app/pulls/{i}",
            "title": " ".join(rng.choices(_WORDS, k=8)),
            "color": f"#{_hex(rng, 6)}",
            "labels": [{"name": rng.choice(_WORDS), "default": False}],
            "max_tokens": 4096,
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + _b62(rng, 22),
        }
        for i in range(items)
    ]
    return json.dumps(rows, indent=2)


def _png_b64(rng: random.Random, size: int) -> str:
    raw = bytes(rng.getrandbits(8) for _ in range(size))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + zlib.compress(raw, 0)).decode("ascii")


def _secrets(rng: random.Random) -> list[str]:
    """Obviously fake, format-valid secrets."""
    return [
        f"export ANTHROPIC_API_KEY=sk-ant-api03-{_b62(rng, 93)}AA",
        f"token: ghp_{_b62(rng, 36)}",
        f'{{"access_token": "{_b62(rng, 40)}", "refresh_token": "sk-ant-ort01-{_b62(rng, 80)}"}}',
        f"AWS_ACCESS_KEY_ID=AKIA{''.join(rng.choices('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', k=16))}",
        f"DATABASE_URL=postgres://app:{_b62(rng, 20)}@db.internal:5432/app",
        f"Authorization: Bearer {_b62(rng, 48)}",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_b62(rng, 70)}\n{_b62(rng, 70)}\n-----END OPENSSH PRIVATE KEY-----",
        f"curl -H 'x-api-key: sk-proj-{_b62(rng, 60)}'",
        f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{_b62(rng, 43)}",
        f"AC7_TOKEN=ac7_{_b62(rng, 43)}",
    ]


def build_request(seed: int = SEED, turns: int = TURNS) -> dict[str, Any]:
    rng = random.Random(seed)
    docs = _docs()
    sources = _sources()
    secrets = _secrets(rng)
    system = [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {"type": "text", "text": docs[:60_000], "cache_control": {"type": "ephemeral"}},
    ]
    paragraphs = [p for p in docs.split("\n\n") if len(p) > 200]
    tools = [
        {
            "name": name,
            "description": "\n\n".join(rng.choices(paragraphs, k=3)),
            "input_schema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": rng.choice(paragraphs)[:400]},
                    "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
                    "file_path": {"type": "string", "description": "The absolute path to the file to read"},
                    "password": {"type": "string", "description": "Only for the db tool: the password to use"},
                },
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
        for name in (
            "Task Bash Glob Grep LS ExitPlanMode Read Edit MultiEdit Write NotebookEdit WebFetch TodoWrite "
            "WebSearch BashOutput mcp__ac7__send"
        ).split()
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing tests."}]}]
    for turn in range(turns):
        tool_id = f"toolu_01{_b62(rng, 22)}"
        kind = turn % 5
        if kind in (0, 1):
            source = sources[turn % len(sources)]
            call = {"file_path": f"/work/main/packages/core/ac7_core/file_{turn}.py"}
            result: Any = _numbered(source)
        elif kind == 2:
            call = {"command": "pytest -q 2>&1 | tail -200", "description": "Run the tests"}
            result = _log(rng, 300)
        elif kind == 3:
            call = {"command": "gh api repos/acme/app/pulls", "timeout": 120000}
            result = _api_json(rng, 40)
        else:
            call = {"command": "git log -n 50 && npm install", "description": "History"}
            result = _log(rng, 200)
        if turn % 7 == 3:
            result = result + "\n" + secrets[(turn // 7) % len(secrets)] + "\n"
        content: list[dict[str, Any]] = [{"type": "text", "text": result}]
        if turn == 20:
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png_b64(rng, 150_000)}})
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": " ".join(rng.choices(_WORDS, k=60)), "signature": _b62(rng, 200)},
                    {"type": "text", "text": " ".join(rng.choices(_WORDS, k=40))},
                    {"type": "tool_use", "id": tool_id, "name": "Bash", "input": call},
                ],
            }
        )
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": content, "is_error": False}]}
        )
    return {"model": "claude-opus-4-1", "max_tokens": 32000, "system": system, "tools": tools, "messages": messages,
            "metadata": {"user_id": f"user_{_hex(rng, 64)}_account_{_uuid(rng)}_session_{_uuid(rng)}"}, "stream": True}


def per_block(request: dict[str, Any], counts: Redactions) -> None:
    """What `ac7_core.trace_entry` does: text per block, JSON per tool input / schema."""
    for block in request["system"]:
        redact_text(block["text"], counts)
    for tool in request["tools"]:
        redact_text(tool["name"], counts)
        redact_text(tool["description"], counts)
        redact_json(tool["input_schema"], counts)
    for message in request["messages"]:
        for block in message["content"]:
            kind = block["type"]
            if kind == "text":
                redact_text(block["text"], counts)
            elif kind == "thinking":
                redact_text(block["thinking"], counts)
            elif kind == "tool_use":
                redact_text(block["id"], counts)
                redact_json(block["input"], counts)
            elif kind == "tool_result":
                redact_text(block["tool_use_id"], counts)
                for inner in block["content"]:
                    if inner["type"] == "text":
                        redact_text(inner["text"], counts)


def best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> dict[str, Any]:
    request = build_request()
    body = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
    mb = len(body.encode("utf-8")) / 1e6
    log(f"payload: {mb:.2f} MB, {len(request['messages'])} messages")

    counts = Redactions()
    redacted = redact_json(request, counts)
    text_counts = Redactions()
    redact_text(body, text_counts)

    absent = re.compile("zq_never_present_qz")
    t_json = best(lambda: redact_json(request, Redactions()))
    t_blocks = best(lambda: per_block(request, Redactions()))
    t_text = best(lambda: redact_text(body, Redactions()))
    t_dumps = best(lambda: json.dumps(request, ensure_ascii=False, separators=(",", ":")))
    t_search = best(lambda: absent.search(body))
    t_replace = best(lambda: body.replace("zq_never_present_qz", "x"))

    def rate(seconds: float) -> float:
        return round(mb / seconds, 1)

    value = rate(t_json)
    return report(
        "redaction_throughput",
        metric="redact_json_mb_per_s",
        value=value,
        unit="MB/s",
        target=TARGET_MB_S,
        higher_is_better=True,
        baseline={
            "json_dumps_mb_per_s": rate(t_dumps),
            "one_regex_search_pass_mb_per_s": rate(t_search),
            "str_replace_mb_per_s": rate(t_replace),
        },
        results={
            "redact_json_mb_per_s": value,
            "per_block_mb_per_s": rate(t_blocks),
            "redact_text_on_body_mb_per_s": rate(t_text),
            "redact_json_ms": round(t_json * 1e3, 2),
            "redactions_json": counts.as_dict(),
            "redactions_text": text_counts.as_dict(),
            "secrets_left_in_json_output": sum(
                s in json.dumps(redacted) for s in ("sk-ant-api03-", "ghp_", "AKIA", "sk-ant-ort01-", "ac7_")
            ),
        },
        params={"seed": SEED, "turns": TURNS, "repeats": REPEATS, "payload_mb": round(mb, 3)},
        notes=["single thread; best of REPEATS after one warm-up; MB = 10^6 bytes of compact UTF-8 JSON"],
    )


if __name__ == "__main__":
    emit(main())
