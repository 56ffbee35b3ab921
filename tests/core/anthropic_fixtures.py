"""Anthropic Messages wire data for the SSE and trace-entry tests: real event shapes, Claude Code-like requests,
fake secrets, and a loopback fake API that replays SSE bytes to the official SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from ac7_core.capture import CapturedExchange

# Fake secrets in the real formats (never valid anywhere). The redaction module must catch both.
ANTHROPIC_KEY = "sk-ant-api03-" + "Xq7vB2nL9kR4tW8yZ1cD5fG3hJ6mP0sA" * 3 + "AA"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SECRETS = (ANTHROPIC_KEY, GITHUB_TOKEN)

STARTED_AT = 1_790_000_000_000  # 2026-09-21, inside the validator's window
SESSION_ID = "2f0b4d7e-9a51-4c38-b6e2-0d8f1c3a5e79"


def sse(*events: dict[str, Any], crlf: bool = False) -> bytes:
    """Serialise events the way the API does: `event: <type>` then `data: <json>` then a blank line."""
    out = []
    for payload in events:
        text = f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
        out.append(text.replace("\n", "\r\n") if crlf else text)
    return "".join(out).encode("utf-8")


def message_start(
    usage: dict[str, Any] | None = None, msg_id: str = "msg_01XFDUDYJgAACzvnptvVoYEL", model: str = "claude-opus-5-5"
) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage if usage is not None else {"input_tokens": 25, "output_tokens": 1},
        },
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def text_delta(index: int, text: str) -> dict[str, Any]:
    return delta(index, {"type": "text_delta", "text": text})


def json_delta(index: int, partial: str) -> dict[str, Any]:
    return delta(index, {"type": "input_json_delta", "partial_json": partial})


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None, usage: dict[str, Any], stop_sequence: str | None = None) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": usage,
    }


PING = {"type": "ping"}
MESSAGE_STOP = {"type": "message_stop"}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

TOOL_INPUT = {
    "command": 'grep -rn "naïve café ☕" src/ | head -n 20',
    "description": 'Search for the phrase\twith a tab, a "quote", a backslash \\ and an emoji 🎉',
    "timeout": 120000,
    "flags": [True, False, None, 1.5, -3e-7],
    "nested": {"a": [{"b": []}, {}], "unicode_escape": "\u00e9\u4e2d"},
}


def text_events(text_parts: Iterable[str] = ("Hello", ", wor", "ld!")) -> list[dict[str, Any]]:
    parts = list(text_parts)
    return [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        PING,
        *[text_delta(0, part) for part in parts],
        block_stop(0),
        message_delta("end_turn", {"output_tokens": 15}),
        MESSAGE_STOP,
    ]


def tool_events(tool_input: Any = None, pieces: list[str] | None = None) -> list[dict[str, Any]]:
    """A text block then a tool_use block whose input JSON arrives in `pieces` (default: a few uneven slices)."""
    raw = json.dumps(TOOL_INPUT if tool_input is None else tool_input, ensure_ascii=False)
    if pieces is None:
        pieces = [raw[:1], raw[1:17], raw[17:18], raw[18:60], raw[60:]]
    return [
        message_start({"input_tokens": 2048, "output_tokens": 3, "cache_read_input_tokens": 1800}),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Let me search."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "Bash", "input": {}}),
        json_delta(1, ""),
        *[json_delta(1, piece) for piece in pieces],
        block_stop(1),
        message_delta("tool_use", {"output_tokens": 89}),
        MESSAGE_STOP,
    ]


def thinking_events() -> list[dict[str, Any]]:
    return [
        message_start(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "The user wants a greeting. "}),
        delta(0, {"type": "thinking_delta", "thinking": "Keep it short."}),
        delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxSIG"}),
        block_stop(0),
        block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
        block_stop(1),
        block_start(2, {"type": "text", "text": ""}),
        text_delta(2, "Hi!"),
        block_stop(2),
        message_delta("end_turn", {"output_tokens": 42}),
        MESSAGE_STOP,
    ]


def server_tool_events() -> list[dict[str, Any]]:
    """Web search: server_tool_use (input streamed), web_search_tool_result, a cited text block, a future type."""
    return [
        message_start({"input_tokens": 900, "output_tokens": 2}),
        block_start(
            0, {"type": "server_tool_use", "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB", "name": "web_search", "input": {}}
        ),
        json_delta(0, '{"query": "ac7 '),
        json_delta(0, 'release notes"}'),
        block_stop(0),
        block_start(
            1,
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
                "content": [
                    {
                        "type": "web_search_result",
                        "title": "ac7 1.0",
                        "url": "https://example.test/ac7",
                        "encrypted_content": "EqgfCioIARgBIiQ3YTQ",
                        "page_age": None,
                    }
                ],
            },
        ),
        block_stop(1),
        block_start(2, {"type": "text", "text": "", "citations": None}),
        text_delta(2, "ac7 shipped "),
        delta(
            2,
            {
                "type": "citations_delta",
                "citation": {
                    "type": "web_search_result_location",
                    "cited_text": "ac7 1.0 is out",
                    "url": "https://example.test/ac7",
                    "title": "ac7 1.0",
                    "encrypted_index": "Eo8BCioIAhgBIiQyYjQ",
                },
            },
        ),
        text_delta(2, "version 1.0."),
        block_stop(2),
        block_start(3, {"type": "brand_new_block", "payload": {"x": 1}}),
        block_stop(3),
        message_delta("end_turn", {"output_tokens": 120, "server_tool_use": {"web_search_requests": 1}}),
        MESSAGE_STOP,
    ]


def usage_events() -> list[dict[str, Any]]:
    """message_start carries input and cache counts; message_delta updates some, omits one, nulls another."""
    start_usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 4096,
        "cache_read_input_tokens": 30000,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    final_usage = {
        "output_tokens": 256,
        "input_tokens": 14,
        "cache_creation_input_tokens": 5000,
        "cache_read_input_tokens": None,
    }
    return [
        message_start(start_usage),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "ok"),
        block_stop(0),
        message_delta("max_tokens", final_usage),
        MESSAGE_STOP,
    ]


def multibyte_events() -> list[dict[str, Any]]:
    return text_events(["héllo wörld ", "日本語のテキスト ", "emoji 🎉👩‍💻 ", "Ωμέγα"])


STREAMS: dict[str, list[dict[str, Any]]] = {
    "text": text_events(),
    "tool_use": tool_events(),
    "thinking": thinking_events(),
    "server_tool": server_tool_events(),
    "usage_merge": usage_events(),
    "multibyte": multibyte_events(),
}


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def claude_code_request(**overrides: Any) -> dict[str, Any]:
    """A request shaped like Claude Code 2.1.x's (claude-code-cli.md §5), with a past tool round trip."""
    body: dict[str, Any] = {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "medium"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": json.dumps({"device_id": "d1", "account_uuid": "", "session_id": SESSION_ID})},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.abc; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
            {"type": "text", "text": "Main prompt.", "cache_control": {"type": "ephemeral", "scope": "global"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "say hi"},
                ],
            },
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "# Environment\ncwd: /repo", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Look first.", "signature": "SIGNATURE-abcdef0123456789"},
                    {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/a.py"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "1\tprint('hi')"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_02",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "boom"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4",
                                },
                            },
                        ],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRgAB"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGg",
                        },
                    },
                ],
            },
            {"role": "user", "content": "and a plain string turn"},
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a shell command.",
                "input_schema": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
            {
                "name": "DeferredToolPlaceholder",
                "description": "Deferred.",
                "input_schema": {"type": "object"},
                "defer_loading": True,
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        ],
    }
    body.update(overrides)
    return body


def exchange(
    *,
    request: Any = None,
    request_body: bytes | None = None,
    response: bytes | None = None,
    chunks: list[tuple[float, bytes]] | None = None,
    status: int | None = 200,
    content_type: str = "text/event-stream; charset=utf-8",
    content_encoding: str | None = None,
    path: str = "/v1/messages?beta=true",
    method: str = "POST",
    host: str = "api.anthropic.com",
    extra_request_headers: list[tuple[str, str]] | None = None,
    extra_response_headers: list[tuple[str, str]] | None = None,
    **fields: Any,
) -> CapturedExchange:
    """A CapturedExchange as the trace host would hand it over (defaults: a streamed Claude Code call)."""
    if request_body is None:
        request_body = json.dumps(claude_code_request() if request is None else request).encode("utf-8")
    if chunks is None:
        chunks = [(float(100 + 10 * i), c) for i, c in enumerate(chunked(response or b"", 97))]
    request_headers = [
        ("Host", host),
        ("Content-Type", "application/json"),
        ("X-Claude-Code-Session-Id", SESSION_ID),
        ("x-api-key", "sk-ant-test-not-a-real-key"),
        ("anthropic-version", "2023-06-01"),
        *(extra_request_headers or []),
    ]
    response_headers = [("content-type", content_type), *(extra_response_headers or [])]
    if content_encoding is not None:
        response_headers.append(("content-encoding", content_encoding))
    values: dict[str, Any] = {
        "started_at_ms": STARTED_AT,
        "host": host,
        "port": 443,
        "method": method,
        "path": path,
        "http_version": "HTTP/1.1",
        "request_headers": request_headers,
        "request_body": request_body,
        "request_bytes": len(request_body),
        "status": status,
        "response_headers": response_headers if status is not None else [],
        "response_chunks": chunks if status is not None else [],
        "response_bytes": sum(len(c) for _, c in chunks) if status is not None else 0,
        "first_byte_ms": 95.5 if status is not None else None,
        "ended_at_ms": STARTED_AT + 1234,
    }
    values.update(fields)
    return CapturedExchange(**values)


# --- a loopback fake Messages API for the official SDK ------------------------------------------------------------


class FakeApi:
    """Serves `POST /v1/messages` with whatever SSE bytes `body` holds, in `chunks`-byte writes."""

    def __init__(self) -> None:
        self.body = b""
        self.chunk = 0
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in chunked(self.body, self.chunk) if self.chunk else [self.body]:
            await response.write(piece)
        await response.write_eof()
        return response


@asynccontextmanager
async def fake_api() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    app = web.Application()
    app.router.add_post("/v1/messages", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        api.base_url = f"http://127.0.0.1:{port}"
        yield api
    finally:
        await runner.cleanup()
