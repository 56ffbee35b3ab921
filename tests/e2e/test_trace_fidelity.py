"""Fidelity against a real client: the official `anthropic` SDK streams through the trace host (real TLS on both
sides) and the trace built from what the proxy captured must say exactly what the SDK's own accumulator says."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp import web
from tls_fixtures import UpstreamPKI

from ac7_cli.runner.trace_host import TraceHost
from ac7_core.activity import validate_event
from ac7_core.capture import CapturedExchange
from ac7_core.trace_entry import build_event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from anthropic_fixtures import sse, text_events, thinking_events, tool_events, usage_events

STREAMS = {
    "text": text_events(),
    # The tool input JSON arrives in many small pieces, split mid-token.
    "tool_use": tool_events({"path": "src/a.py", "lines": [1, 2, 3], "note": "ünïcode ✓"}),
    "thinking": thinking_events(),
    "usage_with_cache": usage_events(),
}


@asynccontextmanager
async def _upstream(pki: UpstreamPKI, body: bytes, chunk: int) -> AsyncIterator[int]:
    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(0, len(body), chunk):
            await response.write(body[i : i + chunk])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _sdk_block(block: dict[str, Any]) -> dict[str, Any]:
    """The SDK's content block in the trace schema's shape (DESIGN §5)."""
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    if block["type"] == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]}
    if block["type"] == "thinking":
        return {"type": "thinking", "text": block["thinking"]}
    if block["type"] == "redacted_thinking":
        return {"type": "unknown", "raw_type": "redacted_thinking"}  # stored as unknown, its opaque data omitted
    raise AssertionError(f"unexpected SDK block {block['type']}")


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_the_trace_of_a_proxied_sdk_stream_matches_the_sdks_own_result(tmp_path: Path, name: str) -> None:
    pki = UpstreamPKI.create(tmp_path / "pki")
    captured: list[CapturedExchange] = []
    host = TraceHost(
        ["localhost"],
        upstream_ca=pki.ca_pem_path,
        on_exchange=captured.append,
        on_inflight=lambda _n: None,
        tmp_root=tmp_path,
    )
    async with _upstream(pki, sse(*STREAMS[name]), chunk=11) as port:
        await host.start()
        try:
            trust = ssl.create_default_context(cafile=str(host.ca_cert_path))
            client = anthropic.AsyncAnthropic(
                base_url=f"https://localhost:{port}",
                api_key="sk-ant-api03-" + "q" * 80,
                max_retries=0,
                http_client=anthropic.DefaultAsyncHttpxClient(proxy=host.proxy_url, verify=trust),
            )
            async with client.messages.stream(
                model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                sdk = (await stream.get_final_message()).to_dict()
            await client.close()
            async with asyncio.timeout(10):
                while not captured:
                    await asyncio.sleep(0.02)
        finally:
            await host.stop()

    event = build_event(captured[0])
    validate_event(event, "event")
    assert event["kind"] == "llm_exchange"
    response = event["entry"]["response"]
    ours = [
        {"type": "unknown", "raw_type": b["raw"]["type"]} if b["type"] == "unknown" else b for b in response["content"]
    ]
    assert ours == [_sdk_block(b) for b in sdk["content"]]
    usage = sdk["usage"]
    assert response["usage"] == {
        "inputTokens": usage.get("input_tokens"),
        "outputTokens": usage.get("output_tokens"),
        "cacheCreationInputTokens": usage.get("cache_creation_input_tokens"),
        "cacheReadInputTokens": usage.get("cache_read_input_tokens"),
    }
    assert (response["id"], response["model"], response["stopReason"]) == (sdk["id"], sdk["model"], sdk["stop_reason"])
    assert event["entry"]["truncated"] is False
    assert event["entry"]["firstTokenMs"] is not None
    assert "q" * 80 not in str(event)  # the SDK's key went upstream, never into the trace
