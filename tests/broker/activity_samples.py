"""Valid activity events (DESIGN §5) and small helpers shared by the messaging/activity/hostile/crash tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

TS = 1_700_000_000_000


def llm_exchange(ts: int = TS, text: str = "Fix the failing test — naïve café 🚀") -> dict[str, Any]:
    """A reassembled exchange carrying every block type, as the runner uploads it."""
    return {
        "kind": "llm_exchange",
        "ts": ts,
        "duration": 1834.25,
        "entry": {
            "kind": "anthropic_messages",
            "startedAt": ts - 1834,
            "endedAt": ts,
            "firstByteMs": 212.5,
            "firstTokenMs": 480,
            "httpVersion": "HTTP/2.0",
            "host": "api.anthropic.com",
            "path": "/v1/messages?beta=true",
            "sessionId": "3f0c1c9e-7d4b-4c55-9d43-0b6c1f7e2a10",
            "requestBytes": 48213,
            "responseBytes": 2290,
            "truncated": False,
            "redactions": {"anthropic-api-key": 2},
            "request": {
                "model": "claude-sonnet-4-5",
                "maxTokens": 32000,
                "temperature": 1,
                "system": [{"type": "text", "text": "You are Claude Code."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": text}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "text": "Look at the test first."},
                            {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "pytest -q"}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "toolUseId": "toolu_01",
                                "isError": True,
                                "content": [
                                    {"type": "text", "text": "1 failed"},
                                    {"type": "image", "mediaType": "image/png"},
                                    {"type": "unknown", "raw": {"type": "document"}},
                                ],
                            }
                        ],
                    },
                ],
                "tools": [
                    {
                        "name": "Bash",
                        "description": "Run a shell command",
                        "inputSchema": {"type": "object", "properties": {"command": {"type": "string"}}},
                    }
                ],
            },
            "response": {
                "id": "msg_01",
                "model": "claude-sonnet-4-5",
                "stopReason": "end_turn",
                "stopSequence": None,
                "content": [{"type": "text", "text": "Done."}],
                "usage": {
                    "inputTokens": 12000,
                    "outputTokens": 310,
                    "cacheCreationInputTokens": None,
                    "cacheReadInputTokens": 11800,
                },
                "status": 200,
                "error": None,
            },
        },
    }


def opaque_http(ts: int = TS, path: str = "/v1/rgstr") -> dict[str, Any]:
    """A small non-LLM request; `path` is free text (≤ 2048 chars), handy as a unique tag."""
    return {
        "kind": "opaque_http",
        "ts": ts,
        "duration": 15,
        "entry": {
            "kind": "opaque_http",
            "startedAt": ts - 15,
            "endedAt": ts - 15,
            "host": "statsig.anthropic.com",
            "method": "POST",
            "path": path,
            "status": 202,
            "requestHeaders": {"content-type": "application/json"},
            "responseHeaders": {},
            "requestBodyPreview": '{"events":[]}',
            "responseBodyPreview": None,
        },
    }


def tagged(tag: str, count: int, ts: int = TS) -> list[dict[str, Any]]:
    """`count` opaque_http events whose paths are `/<tag>/<i>`."""
    return [opaque_http(ts + i, f"/{tag}/{i}") for i in range(count)]


def event_tag(row: dict[str, Any]) -> str:
    """The path of a listed/streamed row's event (the tag given to `tagged`/`opaque_http`)."""
    return str(row["event"]["entry"]["path"])


async def json_body(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.read())


async def eventually[T](
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, every: float = 0.05, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something other than None/False; generous deadline for a loaded box."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(every)
