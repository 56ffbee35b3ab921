"""A fake Anthropic Messages API over TLS on loopback, for driving the real Claude Code CLI offline.

It speaks the real protocol (SSE with message_start … message_stop) and answers from a script: plain text, or a
first turn that calls a tool followed by a text turn once the tool result comes back. Every request is recorded.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "claude-opus-5-5"


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _stream(msg_id: str, blocks: list[dict[str, Any]], stop_reason: str) -> list[bytes]:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 1234,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 100,
                    "cache_read_input_tokens": 200,
                },
            },
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            for word in block["text"].split(" "):
                piece = word if word == block["text"].split(" ")[0] else " " + word
                events.append(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                )
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            text = json.dumps(block["input"])
            for i in range(0, len(text), 7):
                delta = {"type": "input_json_delta", "partial_json": text[i : i + 7]}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 42},
        }
    )
    events.append({"type": "message_stop"})
    return [_sse(e) for e in events]


@dataclass
class FakeAnthropic:
    answer: str = "Hi from the fake Anthropic API!"
    # When set, the first turn calls this tool with this input; the answer comes after its result.
    tool_call: tuple[str, dict[str, Any]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    def tool_results(self) -> list[dict[str, Any]]:
        return [
            block
            for body in self.requests
            for message in body.get("messages", [])
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    async def _other(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=200)
        error = {"type": "error", "error": {"type": "not_found_error", "message": f"no {request.path} here"}}
        return web.json_response(error, status=404)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        n = len(self.requests)
        last = body["messages"][-1] if body.get("messages") else {}
        answered_tool = isinstance(last.get("content"), list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]
        )
        if self.tool_call is not None and not answered_tool:
            name, tool_input = self.tool_call
            blocks = [{"type": "tool_use", "id": f"toolu_01fake{n:04d}", "name": name, "input": tool_input}]
            stop = "tool_use"
        else:
            blocks, stop = [{"type": "text", "text": self.answer}], "end_turn"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "request-id": f"req_fake{n}"})
        await response.prepare(request)
        for chunk in _stream(f"msg_01fake{n:04d}", blocks, stop):
            await response.write(chunk)
        await response.write_eof()
        return response


@asynccontextmanager
async def serve_fake_anthropic(fake: FakeAnthropic, context: ssl.SSLContext) -> AsyncIterator[FakeAnthropic]:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"https://localhost:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
