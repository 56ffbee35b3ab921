"""CapturedExchange → redacted, validator-clean activity events (DESIGN §5)."""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import zlib
from typing import Any

import anthropic
import pytest
import zstandard
from anthropic_fixtures import (
    ANTHROPIC_KEY,
    GITHUB_TOKEN,
    MESSAGE_STOP,
    OVERLOADED,
    SECRETS,
    SESSION_ID,
    STARTED_AT,
    STREAMS,
    TOOL_INPUT,
    block_start,
    chunked,
    claude_code_request,
    exchange,
    fake_api,
    message_start,
    sse,
    text_delta,
    text_events,
    tool_events,
)

from ac7_core import trace_entry
from ac7_core.activity import validate_event
from ac7_core.anthropic_sse import reassemble
from ac7_core.capture import CapturedExchange
from ac7_core.trace_entry import build_event, is_messages_call

brotli: Any = importlib.import_module("brotli")  # untyped; ships with mitmproxy


def build(ex: CapturedExchange, **kwargs: Any) -> dict[str, Any]:
    event = build_event(ex, **kwargs)
    validate_event(event)
    json.dumps(event, allow_nan=False)  # plain JSON, no NaN/Infinity
    return event


def llm(ex: CapturedExchange) -> dict[str, Any]:
    event = build(ex)
    assert event["kind"] == "llm_exchange"
    entry: dict[str, Any] = event["entry"]
    return entry


def assert_no_secrets(event: Any) -> None:
    dumped = json.dumps(event, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in dumped
        assert secret[:16] not in dumped  # not even a prefix survives a cut


# --- classification -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages", True),
        ("POST", "/v1/messages?beta=true", True),
        ("post", "/gateway/anthropic/v1/messages?x=1", True),
        ("GET", "/v1/messages", False),
        ("POST", "/v1/messages/count_tokens", False),
        ("POST", "/v1/messages/batches", False),
        ("POST", "/api/event_logging/v2/batch", False),
        ("GET", "/api/claude_code/settings", False),
    ],
)
def test_classification(method: str, path: str, expected: bool) -> None:
    assert is_messages_call(method, path) is expected
    kind = build(exchange(method=method, path=path, response=sse(*text_events())))["kind"]
    assert kind == ("llm_exchange" if expected else "opaque_http")


# --- llm_exchange: the happy paths --------------------------------------------------------------------------------


def test_streamed_claude_code_call_becomes_a_full_entry() -> None:
    body = sse(*tool_events())
    first_delta_end = body.index(b"\n\n", body.index(b"content_block_delta")) + 2
    chunks = [(80.0, body[:40]), (120.25, body[40 : first_delta_end - 3]), (133.33, body[first_delta_end - 3 :])]
    ex = exchange(chunks=chunks, first_byte_ms=79.94, request_bytes=999_999, response_bytes=5000)
    event = build(ex)
    assert (event["kind"], event["ts"], event["duration"]) == ("llm_exchange", STARTED_AT, 1234)
    entry = event["entry"]
    assert entry["kind"] == "anthropic_messages"
    assert (entry["startedAt"], entry["endedAt"]) == (STARTED_AT, STARTED_AT + 1234)
    assert entry["firstByteMs"] == 79.9
    assert entry["firstTokenMs"] == 133.3  # the chunk that completed the first content_block_delta
    assert (entry["httpVersion"], entry["host"], entry["path"]) == (
        "HTTP/1.1",
        "api.anthropic.com",
        "/v1/messages?beta=true",
    )
    assert entry["sessionId"] == SESSION_ID
    assert (entry["requestBytes"], entry["responseBytes"]) == (999_999, 5000)
    assert entry["truncated"] is False
    assert entry["redactions"] == {}

    request = entry["request"]
    assert (request["model"], request["maxTokens"], request["temperature"]) == ("claude-opus-5-5", 128000, None)
    assert [b["text"] for b in request["system"]] == [
        "x-anthropic-billing-header: cc_version=2.1.328.abc; cc_entrypoint=sdk-cli;",
        "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
        "Main prompt.",
        "# Environment\ncwd: /repo",  # the role:"system" message, folded into system
    ]
    assert all(b == {"type": "text", "text": b["text"]} for b in request["system"])  # cache_control dropped
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "say hi"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "text": "Look first."},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/a.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "toolUseId": "toolu_01", "content": "1\tprint('hi')", "isError": False},
                {
                    "type": "tool_result",
                    "toolUseId": "toolu_02",
                    "isError": True,
                    "content": [{"type": "text", "text": "boom"}, {"type": "image", "mediaType": "image/png"}],
                },
                {"type": "image", "mediaType": "image/jpeg"},
                {
                    "type": "unknown",
                    "raw": {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "[omitted: 43 chars]"},
                    },
                },
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "and a plain string turn"}]},
    ]
    assert request["tools"] == [
        {
            "name": "Bash",
            "description": "Run a shell command.",
            "inputSchema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
        {"name": "DeferredToolPlaceholder", "description": "Deferred.", "inputSchema": {"type": "object"}},
        {"name": "web_search", "description": "", "inputSchema": {}},  # a server tool
    ]
    dumped = json.dumps(event)
    for bulk in ("iVBORw0KGgo", "/9j/4AAQ", "JVBERi0x", "SIGNATURE-abcdef"):
        assert bulk not in dumped  # image/document data and thinking signatures never stored

    assert entry["response"] == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "model": "claude-opus-5-5",
        "stopReason": "tool_use",
        "stopSequence": None,
        "content": [
            {"type": "text", "text": "Let me search."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "Bash", "input": TOOL_INPUT},
        ],
        "usage": {
            "inputTokens": 2048,
            "outputTokens": 89,
            "cacheCreationInputTokens": None,
            "cacheReadInputTokens": 1800,
        },
        "status": 200,
        "error": None,
    }


def test_non_streamed_json_response() -> None:
    message = {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Hi there", "citations": [{"type": "char_location", "cited_text": "x"}]},
            {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 7,
            "service_tier": "standard",
        },
    }
    ex = exchange(
        request=claude_code_request(stream=False, temperature=0.7, max_tokens=1024),
        response=json.dumps(message).encode(),
        content_type="application/json",
    )
    entry = llm(ex)
    assert entry["firstTokenMs"] is None
    assert entry["truncated"] is False
    assert (entry["request"]["temperature"], entry["request"]["maxTokens"]) == (0.7, 1024)
    response = entry["response"]
    assert (response["id"], response["model"], response["stopReason"]) == (
        "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "claude-haiku-5-5",
        "end_turn",
    )
    assert response["content"] == [
        {"type": "thinking", "text": "hmm"},
        {"type": "text", "text": "Hi there"},
        {"type": "unknown", "raw": {"type": "redacted_thinking", "data": "[omitted: 12 chars]"}},
    ]
    assert response["usage"] == {
        "inputTokens": 10,
        "outputTokens": 5,
        "cacheCreationInputTokens": 0,
        "cacheReadInputTokens": 7,
    }


def _compress(name: str, data: bytes) -> bytes:
    if name == "gzip":
        return gzip.compress(data)
    if name == "br":
        return bytes(brotli.compress(data))
    if name == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if name == "deflate":
        return zlib.compress(data)
    if name == "deflate-raw":
        packer = zlib.compressobj(wbits=-15)
        return packer.compress(data) + packer.flush()
    raise AssertionError(name)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate", "deflate-raw"])
def test_content_encoded_streams_are_decoded_chunk_by_chunk(encoding: str) -> None:
    plain = sse(*tool_events())
    packed = _compress(encoding, plain)
    chunks = [(float(10 + i), piece) for i, piece in enumerate(chunked(packed, 17))]
    header = "deflate" if encoding == "deflate-raw" else encoding
    entry = llm(exchange(chunks=chunks, content_encoding=header))
    assert entry["truncated"] is False
    assert entry["response"]["content"][1]["input"] == TOOL_INPUT
    assert entry["response"]["stopReason"] == "tool_use"
    last_chunk_at = 10 + len(chunks) - 1
    if encoding == "zstd":  # one zstd block: nothing decodes before the last byte
        assert entry["firstTokenMs"] == last_chunk_at
    else:  # decoded as the chunks arrive, so the first token shows up before the body ends
        assert entry["firstTokenMs"] is not None and entry["firstTokenMs"] < last_chunk_at


def test_gzip_json_response_and_a_header_that_lies() -> None:
    message = {
        "type": "message",
        "id": "m",
        "model": "x",
        "content": [{"type": "text", "text": "zipped"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    raw = json.dumps(message).encode()
    zipped = llm(exchange(response=gzip.compress(raw), content_type="application/json", content_encoding="gzip"))
    assert zipped["response"]["content"] == [{"type": "text", "text": "zipped"}]
    # The proxy already decoded the body but kept the header: the plain JSON is used as is.
    lied = llm(exchange(response=raw, content_type="application/json", content_encoding="gzip"))
    assert lied["response"]["content"] == [{"type": "text", "text": "zipped"}]
    assert lied["truncated"] is False


# --- llm_exchange: errors, cuts and missing responses -------------------------------------------------------------


def test_error_response_keeps_status_and_error() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_011"}
    entry = llm(exchange(status=529, response=json.dumps(body).encode(), content_type="application/json"))
    response = entry["response"]
    assert response["status"] == 529
    assert response["error"] == {"type": "overloaded_error", "message": "Overloaded", "request_id": "req_011"}
    assert response["content"] == [] and response["id"] is None
    assert response["usage"] == {
        "inputTokens": None,
        "outputTokens": None,
        "cacheCreationInputTokens": None,
        "cacheReadInputTokens": None,
    }
    assert entry["truncated"] is False


def test_non_json_error_body_becomes_a_redacted_http_error() -> None:
    html = f"<html><body>502 Bad Gateway (upstream said {ANTHROPIC_KEY})</body></html>".encode()
    event = build(exchange(status=502, response=html, content_type="text/html"))
    error = event["entry"]["response"]["error"]
    assert error["type"] == "http_error"
    assert error["message"].startswith("<html><body>502 Bad Gateway")
    assert event["entry"]["redactions"]
    assert_no_secrets(event)


def test_no_response_means_null_response_and_truncated() -> None:
    entry = llm(exchange(status=None, error="upstream connect failed", ended_at_ms=None))
    assert entry["response"] is None
    assert entry["truncated"] is True
    assert entry["firstByteMs"] is None and entry["firstTokenMs"] is None
    assert entry["endedAt"] == entry["startedAt"]
    assert entry["request"]["model"] == "claude-opus-5-5"  # the request is still traced


def test_error_event_mid_stream() -> None:
    body = sse(message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Half an ans"), OVERLOADED)
    entry = llm(exchange(response=body))
    response = entry["response"]
    assert response["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert response["status"] == 200
    assert response["content"] == [{"type": "text", "text": "Half an ans"}]
    assert entry["truncated"] is True


@pytest.mark.parametrize("how", ["no_message_stop", "capture_capped", "proxy_error"])
def test_cut_stream_gives_a_partial_truncated_entry(how: str) -> None:
    full = sse(*tool_events())
    if how == "no_message_stop":
        ex = exchange(response=full[: full.rindex(b"event: content_block_delta")])  # before the last JSON piece
    elif how == "capture_capped":
        ex = exchange(response=full, response_truncated=True)
    else:
        ex = exchange(response=full, error="client disconnected")
    entry = llm(ex)
    assert entry["truncated"] is True
    assert entry["response"]["content"][0] == {"type": "text", "text": "Let me search."}
    tool = entry["response"]["content"][1]
    if how == "no_message_stop":
        assert isinstance(tool["input"], str)  # unparsable partial JSON: kept as the raw (redacted) string
        assert json.dumps(TOOL_INPUT, ensure_ascii=False).startswith(tool["input"])
        assert entry["response"]["stopReason"] is None
    else:
        assert tool["input"] == TOOL_INPUT


def test_stream_found_by_content_type_or_by_sniffing() -> None:
    body = sse(*text_events())
    untyped = llm(exchange(response=body, content_type=""))  # no content-type: the body looks like SSE
    assert untyped["response"]["content"] == [{"type": "text", "text": "Hello, world!"}]
    with_bom = llm(exchange(response=b"\xef\xbb\xbf" + body))  # declared SSE, though a sniff would not say so
    assert with_bom["response"]["content"] == [{"type": "text", "text": "Hello, world!"}]
    assert with_bom["truncated"] is False


def test_complete_stream_with_ex_error_unset_is_not_truncated_but_one_without_message_stop_is() -> None:
    events = text_events()
    assert llm(exchange(response=sse(*events)))["truncated"] is False
    assert llm(exchange(response=sse(*[e for e in events if e is not MESSAGE_STOP])))["truncated"] is True


# --- fidelity of the whole pipeline against the SDK ---------------------------------------------------------------


def _camel_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputTokens": usage.get("input_tokens"),
        "outputTokens": usage.get("output_tokens"),
        "cacheCreationInputTokens": usage.get("cache_creation_input_tokens"),
        "cacheReadInputTokens": usage.get("cache_read_input_tokens"),
    }


def _sdk_block_as_entry(block: dict[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block["input"]}
    if kind == "thinking":
        return {"type": "thinking", "text": block["thinking"]}
    return {"type": "unknown"}


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_entry_content_and_usage_match_the_sdk(name: str) -> None:
    data = sse(*STREAMS[name])
    async with fake_api() as api:
        api.body, api.chunk = data, 29
        client = anthropic.AsyncAnthropic(base_url=api.base_url, api_key="sk-ant-test", max_retries=0)
        async with client.messages.stream(
            model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            sdk: dict[str, Any] = (await stream.get_final_message()).to_dict()
        await client.close()
    entry = llm(exchange(chunks=[(float(i), c) for i, c in enumerate(chunked(data, 29))]))
    ours = entry["response"]
    assert ours["usage"] == _camel_usage(sdk["usage"])
    expected = [_sdk_block_as_entry(b) for b in sdk["content"]]
    assert [b if b["type"] != "unknown" else {"type": "unknown"} for b in ours["content"]] == expected
    assert reassemble([(0.0, data)]).message["content"] == [  # the unknown blocks carry the SDK's block as raw
        {k: v for k, v in b.items() if k != "signature"} | ({"signature": ""} if b["type"] == "thinking" else {})
        for b in sdk["content"]
    ]


# --- redaction ----------------------------------------------------------------------------------------------------


def _secret_request() -> dict[str, Any]:
    both = f"{ANTHROPIC_KEY} and {GITHUB_TOKEN}"
    return claude_code_request(
        system=f"System prompt with {both}",
        messages=[
            {"role": "user", "content": f"my key is {both}"},
            {"role": "system", "content": f"env: GH={GITHUB_TOKEN}"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "Bash",
                        "input": {"command": f"export K={ANTHROPIC_KEY}", "env": [GITHUB_TOKEN]},
                    },
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": GITHUB_TOKEN}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": f"printed {ANTHROPIC_KEY}"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [
                            {"type": "text", "text": f"token {GITHUB_TOKEN}"},
                            {"type": "search_result", "source": "x", "title": ANTHROPIC_KEY, "content": []},
                        ],
                    },
                    {"type": "thinking", "thinking": f"I saw {GITHUB_TOKEN}", "signature": "sig"},
                ],
            },
            {"role": "developer", "content": f"odd role {ANTHROPIC_KEY}"},
        ],
        tools=[
            {
                "name": "Deploy",
                "description": f"Deploys with {ANTHROPIC_KEY}",
                "input_schema": {
                    "type": "object",
                    "properties": {"token": {"type": "string", "default": GITHUB_TOKEN}},
                },
            }
        ],
    )


def test_secrets_are_redacted_everywhere_in_an_llm_entry() -> None:
    events = [
        message_start(msg_id="msg_1"),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, f"Your key {ANTHROPIC_KEY[:30]}"),
        text_delta(0, f"{ANTHROPIC_KEY[30:]} is exposed"),  # the secret spans two deltas
        {"type": "content_block_stop", "index": 0},
        block_start(1, {"type": "tool_use", "id": "t9", "name": "Bash", "input": {}}),
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": json.dumps({"tok": GITHUB_TOKEN})},
        },
        {"type": "content_block_stop", "index": 1},
        block_start(2, {"type": "mystery", "blob": GITHUB_TOKEN}),
        {"type": "error", "error": {"type": "api_error", "message": f"leaked {ANTHROPIC_KEY}"}},
    ]
    ex = exchange(
        request=_secret_request(),
        response=sse(*events),
        path=f"/v1/messages?beta=true&key={GITHUB_TOKEN}",
        extra_request_headers=[("x-debug", ANTHROPIC_KEY)],
    )
    event = build(ex)
    assert_no_secrets(event)
    entry = event["entry"]
    assert entry["redactions"] and all(count > 0 for count in entry["redactions"].values())
    request = entry["request"]
    assert "[REDACTED" in request["system"][0]["text"]
    assert request["system"][-1]["text"].startswith("env: GH=[REDACTED")  # the folded role:"system" message
    assert "[REDACTED" in request["tools"][0]["description"]
    assert "[REDACTED" in json.dumps(request["tools"][0]["inputSchema"])
    assert request["messages"][0]["content"][0]["text"].startswith("my key is [REDACTED")
    tool_use = request["messages"][1]["content"][0]
    assert tool_use["input"]["command"].startswith("export K=[REDACTED")
    assert request["messages"][2]["content"][0]["content"].startswith("printed [REDACTED")
    assert request["messages"][3] == {
        "role": "user",
        "content": [
            {
                "type": "unknown",
                "raw": {"role": "developer", "content": request["messages"][3]["content"][0]["raw"]["content"]},
            }
        ],
    }
    assert "[REDACTED" in request["messages"][3]["content"][0]["raw"]["content"]
    response = entry["response"]
    assert response["content"][0]["text"].startswith("Your key [REDACTED")
    assert response["content"][0]["text"].endswith(" is exposed")
    assert "[REDACTED" in response["content"][1]["input"]["tok"]
    assert "[REDACTED" in response["content"][2]["raw"]["blob"]
    assert "[REDACTED" in response["error"]["message"]
    assert "[REDACTED" in entry["path"] and entry["path"].startswith("/v1/messages?beta=true&key=")


def test_secrets_are_redacted_in_opaque_entries() -> None:
    body = json.dumps({"events": [{"msg": f"key {ANTHROPIC_KEY}"}, {"t": GITHUB_TOKEN}]}).encode()
    ex = exchange(
        path=f"/api/keys/{ANTHROPIC_KEY}/batch?t={GITHUB_TOKEN}",
        request_body=body,
        response=f"ok {GITHUB_TOKEN}".encode(),
        content_type="text/plain",
        extra_request_headers=[("Authorization", f"Bearer {ANTHROPIC_KEY}"), ("X-Trace", GITHUB_TOKEN)],
        extra_response_headers=[("set-cookie", f"s={GITHUB_TOKEN}"), ("x-echo", ANTHROPIC_KEY)],
    )
    event = build(ex)
    assert event["kind"] == "opaque_http"
    assert_no_secrets(event)
    entry = event["entry"]
    assert entry["requestHeaders"]["x-trace"].startswith("[REDACTED")
    assert entry["responseHeaders"]["x-echo"].startswith("[REDACTED")
    assert "[REDACTED" in entry["requestBodyPreview"] and "[REDACTED" in entry["responseBodyPreview"]
    assert json.loads(entry["requestBodyPreview"])["events"][1]["t"].startswith("[REDACTED")
    assert entry["path"].startswith("/api/keys/[REDACTED") and "/batch?t=[REDACTED" in entry["path"]


def test_a_secret_straddling_the_preview_cut_is_redacted_before_the_cut() -> None:
    # Cut first, the preview would keep "sk-ant-api03-Xq7vB2nL9kR": too short for any key pattern to match then.
    text = "x" * 4059 + " " + ANTHROPIC_KEY + " tail" * 200
    ex = exchange(
        method="GET",
        path="/api/x",
        request_body=text.encode(),
        response=b"",
        extra_request_headers=[("content-type", "text/plain")],
    )
    entry = build(ex)["entry"]
    preview = entry["requestBodyPreview"]
    assert len(preview) <= 4096 and preview.endswith("…[truncated]")
    assert "sk-ant" not in preview
    assert_no_secrets(entry)


# --- opaque_http --------------------------------------------------------------------------------------------------


def test_opaque_entry_shape_headers_and_previews() -> None:
    ex = exchange(
        method="get",
        path="/api/claude_code/settings",
        request_body=b"",
        response=json.dumps({"error": {"type": "not_found_error", "message": "nope"}}, indent=2).encode(),
        status=404,
        content_type="application/json",
        extra_request_headers=[("Accept", "a"), ("accept", "b")],
    )
    event = build(ex, max_preview=4096)
    assert (event["kind"], event["ts"], event["duration"]) == ("opaque_http", STARTED_AT, 1234)
    entry = event["entry"]
    assert (entry["method"], entry["path"], entry["status"], entry["host"]) == (
        "GET",
        "/api/claude_code/settings",
        404,
        "api.anthropic.com",
    )
    headers = entry["requestHeaders"]
    assert headers["accept"] == "a, b"  # names lower-cased, repeats joined
    assert headers["x-claude-code-session-id"] == SESSION_ID
    assert "sk-ant-test-not-a-real-key" not in headers["x-api-key"]  # redacted by header name
    assert entry["responseHeaders"] == {"content-type": "application/json"}
    assert entry["requestBodyPreview"] is None
    assert entry["responseBodyPreview"] == '{"error":{"type":"not_found_error","message":"nope"}}'  # compact JSON


def test_opaque_previews_are_bounded_decoded_and_binary_aware() -> None:
    big = ("line of text\n" * 1000).encode()
    ex = exchange(
        method="POST",
        path="/upload",
        request_body=gzip.compress(big),
        response=bytes(range(256)) * 4,
        content_type="application/x-custom",
        extra_request_headers=[("Content-Encoding", "gzip"), ("Content-Type", "text/plain")],
    )
    entry = build(ex, max_preview=500)["entry"]
    assert entry["requestBodyPreview"].startswith("line of text\nline of text\n")
    assert len(entry["requestBodyPreview"]) == 500 and entry["requestBodyPreview"].endswith("…[truncated]")
    assert entry["responseBodyPreview"] == "<1024 bytes binary>"
    image = build(
        exchange(method="GET", path="/i.png", request_body=b"", response=b"\x89PNG....", content_type="image/png")
    )["entry"]
    assert image["responseBodyPreview"] == "<8 bytes binary>"
    octets = exchange(method="GET", path="/o", request_body=b"", response=b"plain ascii", content_type="audio/ogg")
    assert build(octets)["entry"]["responseBodyPreview"] == "<11 bytes binary>"  # by content type alone
    svg = exchange(method="GET", path="/s.svg", request_body=b"", response=b"<svg/>", content_type="image/svg+xml")
    assert build(svg)["entry"]["responseBodyPreview"] == "<svg/>"
    plain = exchange(method="GET", path="/big", request_body=b"", response=big, content_type="text/plain")
    assert len(build(plain)["entry"]["responseBodyPreview"]) == 4096  # the default max_preview


def test_opaque_with_no_response_and_odd_method() -> None:
    entry = build(exchange(method="M-SEARCH", path="/x", status=None, request_body=b"hello"))["entry"]
    assert entry["method"] == "MSEARCH"
    assert entry["status"] is None and entry["responseHeaders"] == {} and entry["responseBodyPreview"] is None
    assert entry["requestBodyPreview"] == "hello"


def test_form_bodies_are_redacted_field_by_field() -> None:
    form = f"grant_type=refresh_token&client_id=abc&note={GITHUB_TOKEN}".encode()
    ex = exchange(
        path="/v1/oauth/token",
        request_body=form,
        response=b"{}",
        content_type="application/json",
        extra_request_headers=[("Content-Type", "application/x-www-form-urlencoded")],
    )
    event = build(ex)
    preview = event["entry"]["requestBodyPreview"]
    assert preview.startswith("grant_type=refresh_token&client_id=abc&note=[REDACTED")
    assert_no_secrets(event)


# --- robustness ---------------------------------------------------------------------------------------------------


def test_malformed_request_json_still_gives_an_llm_entry() -> None:
    ex = exchange(
        request_body=b'{"model": "claude-x", "messages": [}} garbage ' + ANTHROPIC_KEY.encode(),
        response=sse(*text_events()),
    )
    event = build(ex)
    entry = event["entry"]
    assert event["kind"] == "llm_exchange" and entry["truncated"] is True
    assert entry["request"]["messages"] == [] and entry["request"]["model"] == ""
    assert entry["response"]["content"] == [{"type": "text", "text": "Hello, world!"}]
    assert_no_secrets(event)


def test_non_utf8_lone_surrogates_nan_and_deep_nesting_are_made_valid() -> None:
    deep: Any = "bottom"
    for _ in range(150):
        deep = {"d": [deep]}
    request = claude_code_request(
        temperature=float("nan"),
        messages=[
            {"role": "user", "content": "placeholder"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t", "name": "n", "input": {"deep": deep, "inf": float("inf")}},
                    {"type": "text", "text": "placeholder"},
                ],
            },
        ],
    )
    raw = json.dumps(request).replace('"placeholder"', '"bad \\ud800 surrogate \\udfff"').replace("Infinity", "1e999")
    raw = raw.encode()
    raw = raw.replace(b"claude-opus-5-5", b"claude-\xff\xfe-opus")  # invalid UTF-8 in the model name
    entry = llm(exchange(request_body=raw, response=sse(*text_events())))
    request_entry = entry["request"]
    assert request_entry["model"] == "claude-\ufffd\ufffd-opus"
    assert request_entry["temperature"] is None
    assert request_entry["messages"][0]["content"][0]["text"] == "bad \ufffd surrogate \ufffd"
    tool_input = request_entry["messages"][1]["content"][0]["input"]
    assert tool_input["inf"] is None
    assert "[nested deeper than 64 levels]" in json.dumps(tool_input)
    assert request_entry["messages"][1]["content"][1]["text"] == "bad \ufffd surrogate \ufffd"  # in a text block


def test_huge_claimed_request_with_a_truncated_copy_is_salvaged() -> None:
    request = claude_code_request()
    request["messages"].append({"role": "user", "content": "z" * 200_000 + " " + ANTHROPIC_KEY})
    full = json.dumps(request).encode()
    copy = full[: len(full) - 50]  # the copy stops inside the last message, 500 MB claimed on the wire
    ex = exchange(
        request_body=copy, request_truncated=True, request_bytes=500 * 1024 * 1024, response=sse(*text_events())
    )
    event = build(ex)
    entry = event["entry"]
    assert entry["truncated"] is True
    assert entry["requestBytes"] == 500 * 1024 * 1024
    assert entry["request"]["model"] == "claude-opus-5-5"
    assert entry["request"]["messages"][0]["content"][1]["text"] == "say hi"  # salvaged from the partial JSON
    assert entry["request"]["messages"][-1]["content"][0]["text"].startswith("zzz")
    assert_no_secrets(event)


def test_corrupt_and_unsupported_encodings_never_raise() -> None:
    corrupt = b"\x1f\x8b\x08\x00" + bytes(range(200))
    garbage = llm(exchange(chunks=[(1.0, corrupt)], content_type="application/json", content_encoding="gzip"))
    assert garbage["truncated"] is True and garbage["response"]["content"] == []
    assert garbage["response"]["error"] == {"type": "undecodable_response", "message": "corrupt 'gzip' body"}
    opaque_corrupt = build(
        exchange(
            method="GET",
            path="/x",
            request_body=b"",
            chunks=[(1.0, corrupt)],
            content_type="application/json",
            content_encoding="gzip",
        )
    )["entry"]
    assert opaque_corrupt["responseBodyPreview"] == "<204 bytes, corrupt gzip data>"
    cut = gzip.compress(sse(*text_events()))
    partial = llm(exchange(chunks=[(1.0, cut[: len(cut) // 2])], content_encoding="gzip"))
    assert partial["truncated"] is True
    unsupported = llm(exchange(response=b"\x00\x01", content_encoding="compress"))
    assert unsupported["truncated"] is True
    assert unsupported["response"]["error"]["type"] == "undecodable_response"
    opaque = build(
        exchange(
            method="GET",
            path="/x",
            request_body=b"",
            response=b"\x00\x01",
            content_type="text/plain",
            content_encoding="compress",
        )
    )["entry"]
    assert opaque["responseBodyPreview"] == "<2 bytes compress-encoded>"


def test_decompression_bomb_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_entry, "MAX_DECODED_BYTES", 4096)
    body = sse(*text_events(["a" * 10_000]))
    plain = llm(exchange(response=body))  # the cap holds for identity bodies too
    assert plain["truncated"] is True and plain["response"]["content"] == [{"type": "text", "text": ""}]
    entry = llm(exchange(response=gzip.compress(body), content_encoding="gzip"))
    assert entry["truncated"] is True
    # The block start fits under the cap; the 10 kB delta event does not, so it never arrives.
    assert entry["response"]["content"] == [{"type": "text", "text": ""}]


def test_an_oversized_event_is_shrunk_to_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_entry, "MAX_EVENT_BYTES", 200_000)
    request = claude_code_request(messages=[{"role": "user", "content": "q" * 1_000_000}])
    event = build(exchange(request=request, response=sse(*text_events())))
    entry = event["entry"]
    assert entry["truncated"] is True
    assert len(json.dumps(event)) <= 200_000
    text = entry["request"]["messages"][0]["content"][0]["text"]
    assert text.startswith("qqq") and text.endswith("…[truncated 934464 chars]")
    assert entry["response"]["content"] == [{"type": "text", "text": "Hello, world!"}]


def test_shaping_failure_falls_back_to_a_bare_valid_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(self: object, ex: CapturedExchange) -> dict[str, Any]:
        raise RuntimeError(f"something quoting {ANTHROPIC_KEY}")

    monkeypatch.setattr(trace_entry._Shaper, "llm_event", boom)
    with caplog.at_level(logging.ERROR, logger="ac7_core.trace_entry"):
        event = build(exchange(response=sse(*text_events()), path=f"/v1/messages?k={GITHUB_TOKEN}"))
    assert event["kind"] == "opaque_http"
    assert event["entry"]["path"] == "" and event["entry"]["requestHeaders"] == {}
    assert "RuntimeError" in caplog.text and ANTHROPIC_KEY not in caplog.text
    assert_no_secrets(event)


def test_timings_fall_back_and_stay_ordered() -> None:
    ex = exchange(response=sse(*text_events()), ended_at_ms=None, first_byte_ms=float("nan"))
    entry = llm(ex)
    assert entry["endedAt"] == STARTED_AT + int(ex.response_chunks[-1][0])
    assert entry["firstByteMs"] is None
    backwards = llm(exchange(response=sse(*text_events()), ended_at_ms=STARTED_AT - 5))
    assert backwards["endedAt"] == STARTED_AT


def test_long_paths_session_ids_and_tool_names_are_capped() -> None:
    request = claude_code_request(tools=[{"name": "t" * 300, "input_schema": {"type": "object"}}])
    ex = exchange(path="/v1/messages?" + "a=b&" * 1000, request=request, response=sse(*text_events()))
    ex.request_headers = [(k, "s" * 1000 if k == "X-Claude-Code-Session-Id" else v) for k, v in ex.request_headers]
    entry = llm(ex)
    assert len(entry["path"]) <= 2048 and entry["path"].endswith("…[truncated]")
    assert entry["sessionId"] == "s" * 256
    assert entry["request"]["tools"] == [{"name": "t" * 256, "description": "", "inputSchema": {"type": "object"}}]
