"""Realistic `llm_exchange` activity events (DESIGN §5) of a chosen size, as the runner would upload them.

Each event is one Claude Code turn: a long system prompt, a tool list with JSON schemas, and a conversation that
grows by assistant turns (thinking, text, tool_use) and user turns (tool_result holding command output or file
contents), plus the response. Text is random words and code-like lines, a little of it non-ASCII, so JSON parsing,
validation and encoding do the same work they would on real traces. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from typing import Any

from ac7_core.activity import validate_event

_WORDS_TEXT = (
    "the of to and a in is it you that for on with as this be are at by from or an function return import "
    "class self def error test file path value config module package request response token message agent "
    "broker build deploy retry timeout queue socket handler server client cache index query commit branch "
    "review change line column fixture assert expected actual failed passed skipped coverage lint format "
    "type check schema field option default install update version release note issue bug fix refactor "
    "naïve café — résumé"
)
_WORDS = _WORDS_TEXT.split()
_IDENTS = ("handler", "payload", "retry_count", "session", "cursor", "rows", "config", "result", "event", "batch")
_TOOLS = ("Bash", "Read", "Edit", "Write", "Grep", "Glob", "WebFetch", "TodoWrite", "Task", "MultiEdit")


def _prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choices(_WORDS, k=rng.randint(6, 18))).capitalize() + ". "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def _code(rng: random.Random, chars: int) -> str:
    lines: list[str] = []
    size = 0
    while size < chars:
        a, b, c = rng.choices(_IDENTS, k=3)
        line = rng.choice(
            (
                f"    def {a}_{b}(self, {c}: str) -> int:",
                f"        {a} = self.{b}.get({c!r}, {rng.randint(0, 999)})",
                f"        if not {a}:\n            raise ValueError('{b} missing {c}')",
                f"        return [{a} for {a} in {b} if {a}.{c}]",
                f"{rng.randint(1, 400):>6}\t    {a}.{b}({c})  # {' '.join(rng.choices(_WORDS, k=4))}",
                f"tests/test_{a}.py::test_{b}_{c} {'PASSED' if rng.random() < 0.9 else 'FAILED'}",
            )
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:chars]


def _tool(rng: random.Random, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": _prose(rng, 600),
        "inputSchema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": _prose(rng, 80)},
                "file_path": {"type": "string", "description": "Absolute path"},
                "timeout": {"type": "number", "minimum": 0, "maximum": 600000},
                "options": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    }


def llm_exchange(rng: random.Random, ts: int, target_bytes: int = 50_000) -> dict[str, Any]:
    """One `llm_exchange` event whose JSON encoding is about `target_bytes` long."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": _prose(rng, 700)}]}]
    request = {
        "model": "claude-sonnet-4-5",
        "maxTokens": 32000,
        "temperature": 1,
        "system": [{"type": "text", "text": _prose(rng, 9000)}, {"type": "text", "text": _prose(rng, 1500)}],
        "messages": messages,
        "tools": [_tool(rng, name) for name in _TOOLS],
    }
    event: dict[str, Any] = {
        "kind": "llm_exchange",
        "ts": ts,
        "duration": round(rng.uniform(800, 30000), 2),
        "entry": {
            "kind": "anthropic_messages",
            "startedAt": ts - 5000,
            "endedAt": ts,
            "firstByteMs": round(rng.uniform(100, 900), 1),
            "firstTokenMs": rng.randint(200, 2000),
            "httpVersion": "HTTP/2.0",
            "host": "api.anthropic.com",
            "path": "/v1/messages?beta=true",
            "sessionId": f"3f0c1c9e-7d4b-4c55-9d43-{rng.getrandbits(48):012x}",
            "requestBytes": 0,
            "responseBytes": rng.randint(500, 8000),
            "truncated": False,
            "redactions": {"anthropic-api-key": 1} if rng.random() < 0.3 else {},
            "request": request,
            "response": {
                "id": f"msg_{rng.getrandbits(64):016x}",
                "model": "claude-sonnet-4-5",
                "stopReason": "tool_use",
                "stopSequence": None,
                "content": [
                    {"type": "text", "text": _prose(rng, 300)},
                    {"type": "tool_use", "id": "toolu_next", "name": "Bash", "input": {"command": "pytest -q"}},
                ],
                "usage": {
                    "inputTokens": rng.randint(5000, 60000),
                    "outputTokens": rng.randint(50, 2000),
                    "cacheCreationInputTokens": None,
                    "cacheReadInputTokens": rng.randint(0, 50000),
                },
                "status": 200,
                "error": None,
            },
        },
    }
    turn = 0
    while len(json.dumps(event)) < target_bytes:
        tool_id = f"toolu_{turn:02d}{rng.getrandbits(40):010x}"
        tool = rng.choice(_TOOLS)
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "text": _prose(rng, rng.randint(150, 600))},
                    {"type": "text", "text": _prose(rng, rng.randint(80, 300))},
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": tool,
                        "input": {"command": _code(rng, 80), "timeout": 120000, "description": _prose(rng, 60)},
                    },
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "toolUseId": tool_id,
                        "content": [{"type": "text", "text": _code(rng, rng.randint(800, 3000))}],
                        "isError": rng.random() < 0.1,
                    }
                ],
            }
        )
        turn += 1
    event["entry"]["requestBytes"] = len(json.dumps(request))
    validate_event(event)
    return event


def batches(seed: int, count: int, per_batch: int, ts0: int, target_bytes: int = 50_000) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    return [
        [llm_exchange(rng, ts0 + (b * per_batch + i) * 1000, target_bytes) for i in range(per_batch)]
        for b in range(count)
    ]
