"""Activity upload validation: valid events pass untouched, and every invalid shape fails at an exact path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from ac7_core.activity import (
    ACTIVITY_KINDS,
    MAX_DEPTH,
    MAX_EVENTS,
    ActivityError,
    validate_event,
    validate_upload,
)
from ac7_core.errors import Ac7Error

TS = 1_700_000_000_000
LONE = "\ud800"
E = "events[0].entry"
Q = "events[0].entry.request"
M = "events[0].entry.request.messages"
R = "events[0].entry.response"
H = "events[1].entry"


def llm_exchange(ts: int = TS) -> dict[str, Any]:
    """A streamed exchange reassembled into blocks of every type, as the runner uploads it."""
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
            "redactions": {"anthropic-api-key": 2, "github.pat": 1},
            "request": {
                "model": "claude-sonnet-4-5",
                "maxTokens": 32000,
                "temperature": 1,
                "system": [{"type": "text", "text": "You are Claude Code. Key: [REDACTED:anthropic-api-key]"}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Fix the failing test — naïve café 🚀"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "text": "Look at the test first."},
                            {"type": "text", "text": "Let me read it."},
                            {
                                "type": "tool_use",
                                "id": "toolu_01",
                                "name": "Bash",
                                "input": {"command": "pytest -q", "opts": [1, 2.5, True, None, {"deep": ["x"]}]},
                            },
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
                                    {"type": "unknown", "raw": {"type": "document", "title": "log"}},
                                ],
                            },
                            {"type": "tool_result", "toolUseId": "toolu_00", "isError": None, "content": "ok"},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "unknown", "raw": {"type": "redacted_thinking"}}]},
                ],
                "tools": [
                    {
                        "name": "Bash",
                        "description": "Run a shell command",
                        "inputSchema": {
                            "type": "object",
                            "properties": {"command": {"type": "string"}},
                            "required": ["command"],
                        },
                    }
                ],
            },
            "response": {
                "id": "msg_01",
                "model": "claude-sonnet-4-5",
                "stopReason": "tool_use",
                "stopSequence": None,
                "content": [
                    {"type": "text", "text": "Running it again."},
                    {"type": "tool_use", "id": "toolu_02", "name": "Bash", "input": {"command": "pytest -q"}},
                ],
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


def opaque_http(ts: int = TS) -> dict[str, Any]:
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
            "path": "/v1/rgstr",
            "status": 202,
            "requestHeaders": {"content-type": "application/json", "authorization": "[REDACTED:authorization]"},
            "responseHeaders": {},
            "requestBodyPreview": '{"events":[]}',
            "responseBodyPreview": None,
        },
    }


def upload() -> dict[str, Any]:
    return {"events": [llm_exchange(), opaque_http()]}


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


# --- valid input --------------------------------------------------------------------------------------------------


def test_valid_upload_passes_and_returns_its_events_untouched() -> None:
    body = upload()
    before = copy.deepcopy(body)
    events = validate_upload(body)
    assert events is body["events"]
    assert body == before


def test_valid_upload_survives_a_json_round_trip() -> None:
    raw = json.dumps(upload(), ensure_ascii=True)
    assert len(validate_upload(json.loads(raw))) == 2


def test_each_event_kind_validates_alone() -> None:
    validate_event(llm_exchange())
    validate_event(opaque_http(), "events[7]")
    assert ACTIVITY_KINDS == ("llm_exchange", "opaque_http")


def test_truncated_exchange_without_response_passes() -> None:
    event = llm_exchange()
    event["entry"].update(truncated=True, response=None, firstByteMs=None, firstTokenMs=None, sessionId=None)
    event["entry"]["request"].update(maxTokens=None, temperature=None, tools=[], system=[])
    validate_event(event)


def test_error_response_passes_with_any_error_object() -> None:
    event = llm_exchange()
    response = event["entry"]["response"]
    response.update(id=None, model=None, stopReason=None, content=[], status=529)
    response["usage"] = dict.fromkeys(response["usage"])
    response["error"] = {"type": "overloaded_error", "message": "Overloaded", "extra": {"retry": [1, 2]}}
    validate_event(event)


def test_boundaries_that_are_allowed() -> None:
    body = {"events": [opaque_http(ts) for ts in range(TS, TS + MAX_EVENTS)]}
    assert len(validate_upload(body)) == MAX_EVENTS
    event = opaque_http()
    entry = event["entry"]
    entry.update(requestBodyPreview="é" * 4096, responseBodyPreview="x" * 4096, status=None, method="PROPFIND")
    entry["requestHeaders"] = {f"x-h{i}": "v" for i in range(200)}
    validate_event(event)
    event = llm_exchange(946_684_800_000)
    event["entry"].update(startedAt=946_684_800_000, endedAt=4_102_444_800_000, redactions={})
    event["duration"] = 86_400_000
    event["entry"]["request"]["messages"][1]["content"][2]["input"] = nested_list(MAX_DEPTH)
    event["entry"]["request"]["tools"][0]["inputSchema"] = {"a": nested_list(MAX_DEPTH - 1)}
    event["entry"]["response"]["error"] = nested_dict(MAX_DEPTH)
    validate_event(event)


def test_astral_characters_are_not_lone_surrogates() -> None:
    event = llm_exchange()
    event["entry"]["request"]["system"][0]["text"] = "😀\U0010ffff" * 1000
    event["entry"]["request"]["messages"][1]["content"][2]["input"] = {"ключ 😀": ["значение 😀"]}
    validate_event(event)


def test_error_is_one_line_path_and_reason() -> None:
    body = upload()
    body["events"][0]["entry"]["request"]["messages"][2]["content"][0]["content"][0]["text"] = "a\n" + LONE
    with pytest.raises(ActivityError) as caught:
        validate_upload(body)
    error = caught.value
    assert isinstance(error, Ac7Error)
    assert error.path == f"{M}[2].content[0].content[0].text"
    assert error.reason == "invalid unicode (lone surrogate)"
    assert str(error) == f"{error.path}: {error.reason}"
    assert "\n" not in str(error)


def test_extra_key_names_are_shown_safely_on_one_line() -> None:
    body = upload()
    body["events"][1]["entry"]["x\n" + LONE + "y" * 500] = 1
    with pytest.raises(ActivityError) as caught:
        validate_upload(body)
    message = str(caught.value)
    assert "\n" not in message
    assert message.isascii()
    assert len(message) < 200


def test_first_error_wins() -> None:
    body = upload()
    body["events"][0]["ts"] = True
    body["events"][1]["duration"] = -1
    with pytest.raises(ActivityError) as caught:
        validate_upload(body)
    assert caught.value.path == "events[0].ts"


def test_default_event_path() -> None:
    with pytest.raises(ActivityError) as caught:
        validate_event({"kind": "nope"})
    assert caught.value.path == "event.kind"


# --- invalid input ------------------------------------------------------------------------------------------------

Body = dict[str, Any]


def _llm(body: Body) -> dict[str, Any]:
    entry: dict[str, Any] = body["events"][0]["entry"]
    return entry


def _req(body: Body) -> dict[str, Any]:
    request: dict[str, Any] = _llm(body)["request"]
    return request


def _msgs(body: Body) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = _req(body)["messages"]
    return messages


def _resp(body: Body) -> dict[str, Any]:
    response: dict[str, Any] = _llm(body)["response"]
    return response


def _http(body: Body) -> dict[str, Any]:
    entry: dict[str, Any] = body["events"][1]["entry"]
    return entry


def _tool_use(body: Body) -> dict[str, Any]:
    block: dict[str, Any] = _msgs(body)[1]["content"][2]
    return block


def _result(body: Body) -> dict[str, Any]:
    block: dict[str, Any] = _msgs(body)[2]["content"][0]
    return block


Mutation = Callable[[Body], Any]

CASES: list[tuple[str, Mutation, str, str]] = [
    # upload envelope
    ("body-extra-key", lambda b: b.update(cursor=1), "body", "unexpected key 'cursor'"),
    ("body-missing-events", lambda b: b.pop("events"), "body", "missing required key 'events'"),
    ("events-not-list", lambda b: b.update(events={"0": b["events"][0]}), "events", "must be an array, got object"),
    ("zero-events", lambda b: b.update(events=[]), "events", "at least 1"),
    ("501-events", lambda b: b.update(events=[opaque_http()] * 501), "events", "at most 500 events, got 501"),
    # event envelope
    ("event-not-object", lambda b: b["events"].append("x"), "events[2]", "must be an object, got string"),
    ("event-missing-kind", lambda b: b["events"][1].pop("kind"), "events[1]", "missing required key 'kind'"),
    ("event-bad-kind", lambda b: b["events"][0].update(kind="llm"), "events[0].kind", "'llm_exchange', 'opaque_http'"),
    ("event-extra-key", lambda b: b["events"][0].update(agent="x"), "events[0]", "unexpected key 'agent'"),
    ("event-missing-ts", lambda b: b["events"][0].pop("ts"), "events[0]", "missing required key 'ts'"),
    ("ts-bool", lambda b: b["events"][0].update(ts=True), "events[0].ts", "must be an integer, got boolean"),
    ("ts-float", lambda b: b["events"][0].update(ts=float(TS)), "events[0].ts", "must be an integer, got number"),
    ("ts-seconds", lambda b: b["events"][0].update(ts=TS // 1000), "events[0].ts", ">= 946684800000"),
    ("ts-far-future", lambda b: b["events"][1].update(ts=4_102_444_800_001), "events[1].ts", "<= 4102444800000"),
    ("duration-negative", lambda b: b["events"][1].update(duration=-0.5), "events[1].duration", ">= 0"),
    ("duration-over-a-day", lambda b: b["events"][1].update(duration=86_400_001), "events[1].duration", "<= 86400000"),
    ("duration-nan", lambda b: b["events"][0].update(duration=float("nan")), "events[0].duration", "finite"),
    ("duration-bool", lambda b: b["events"][0].update(duration=False), "events[0].duration", "got boolean"),
    ("duration-string", lambda b: b["events"][0].update(duration="5"), "events[0].duration", "must be a number"),
    ("entry-not-object", lambda b: b["events"][0].update(entry=None), E, "must be an object, got null"),
    ("entry-missing-kind", lambda b: _http(b).pop("kind"), H, "missing required key 'kind'"),
    (
        "llm-with-opaque-entry",
        lambda b: b["events"][0].update(entry=opaque_http()["entry"]),
        f"{E}.kind",
        "must be 'anthropic_messages' for an llm_exchange event",
    ),
    (
        "opaque-with-llm-entry",
        lambda b: b["events"][1].update(entry=llm_exchange()["entry"]),
        f"{H}.kind",
        "must be 'opaque_http' for an opaque_http event",
    ),
    # anthropic_messages entry
    ("entry-missing-host", lambda b: _llm(b).pop("host"), E, "missing required key 'host'"),
    ("entry-extra-key", lambda b: _llm(b).update(costUsd=0.1), E, "unexpected key 'costUsd'"),
    (
        "ended-before-started",
        lambda b: _llm(b).update(endedAt=TS - 1835),
        f"{E}.endedAt",
        "before startedAt",
    ),
    ("started-bool", lambda b: _llm(b).update(startedAt=True), f"{E}.startedAt", "got boolean"),
    ("first-token-negative", lambda b: _llm(b).update(firstTokenMs=-1), f"{E}.firstTokenMs", ">= 0"),
    ("first-byte-inf", lambda b: _llm(b).update(firstByteMs=float("inf")), f"{E}.firstByteMs", "finite"),
    ("http-version-long", lambda b: _llm(b).update(httpVersion="H" * 17), f"{E}.httpVersion", "at most 16"),
    ("host-long", lambda b: _llm(b).update(host="h" * 256), f"{E}.host", "at most 255 characters"),
    ("path-long", lambda b: _llm(b).update(path="/" * 2049), f"{E}.path", "at most 2048"),
    ("path-not-string", lambda b: _llm(b).update(path=None), f"{E}.path", "must be a string, got null"),
    ("session-long", lambda b: _llm(b).update(sessionId="s" * 257), f"{E}.sessionId", "at most 256"),
    ("request-bytes-bool", lambda b: _llm(b).update(requestBytes=True), f"{E}.requestBytes", "got boolean"),
    ("response-bytes-neg", lambda b: _llm(b).update(responseBytes=-1), f"{E}.responseBytes", ">= 0"),
    ("bytes-unsafe-int", lambda b: _llm(b).update(responseBytes=2**53), f"{E}.responseBytes", "<= 9007"),
    ("truncated-not-bool", lambda b: _llm(b).update(truncated=0), f"{E}.truncated", "must be a boolean"),
    ("redactions-list", lambda b: _llm(b).update(redactions=[]), f"{E}.redactions", "must be an object"),
    (
        "redaction-bad-rule-id",
        lambda b: _llm(b)["redactions"].update({"Bad Rule": 1}),
        f'{E}.redactions["Bad Rule"]',
        "rule id must match",
    ),
    (
        "redaction-negative-count",
        lambda b: _llm(b)["redactions"].update({"aws": -1}),
        f"{E}.redactions.aws",
        ">= 0",
    ),
    (
        "redaction-bool-count",
        lambda b: _llm(b)["redactions"].update({"aws": True}),
        f"{E}.redactions.aws",
        "got boolean",
    ),
    (
        "redactions-too-many",
        lambda b: _llm(b).update(redactions={f"r{i}": 1 for i in range(201)}),
        f"{E}.redactions",
        "at most 200 entries",
    ),
    # request
    ("request-null", lambda b: _llm(b).update(request=None), Q, "must be an object, got null"),
    (
        "request-missing-tools",
        lambda b: _req(b).pop("tools"),
        Q,
        "missing required key 'tools'",
    ),
    ("model-long", lambda b: _req(b).update(model="m" * 257), f"{Q}.model", "at most 256"),
    ("max-tokens-negative", lambda b: _req(b).update(maxTokens=-1), f"{Q}.maxTokens", ">= 0"),
    ("max-tokens-float", lambda b: _req(b).update(maxTokens=1.5), f"{Q}.maxTokens", "integer"),
    ("temperature-string", lambda b: _req(b).update(temperature="1"), f"{Q}.temperature", "number"),
    ("system-string", lambda b: _req(b).update(system="hi"), f"{Q}.system", "array of blocks"),
    ("messages-object", lambda b: _req(b).update(messages={}), M, "must be an array, got object"),
    ("message-not-object", lambda b: _req(b)["messages"].append([]), f"{M}[4]", "must be an object, got array"),
    ("bad-role", lambda b: _msgs(b)[0].update(role="system"), f"{M}[0].role", "'user' or 'assistant'"),
    ("message-extra-key", lambda b: _msgs(b)[3].update(name="x"), f"{M}[3]", "unexpected key 'name'"),
    ("tools-not-list", lambda b: _req(b).update(tools=None), f"{Q}.tools", "must be an array"),
    (
        "tool-name-long",
        lambda b: _req(b)["tools"][0].update(name="n" * 257),
        f"{Q}.tools[0].name",
        "at most 256",
    ),
    (
        "tool-description-null",
        lambda b: _req(b)["tools"][0].update(description=None),
        f"{Q}.tools[0].description",
        "must be a string",
    ),
    (
        "tool-schema-not-object",
        lambda b: _req(b)["tools"][0].update(inputSchema=[]),
        f"{Q}.tools[0].inputSchema",
        "must be an object",
    ),
    ("tool-not-object", lambda b: _req(b)["tools"].append("Bash"), f"{Q}.tools[1]", "must be an object, got string"),
    # blocks
    ("block-not-object", lambda b: _msgs(b)[0]["content"].append("hi"), f"{M}[0].content[1]", "must be an object"),
    ("block-missing-type", lambda b: _msgs(b)[0]["content"][0].pop("type"), f"{M}[0].content[0]", "key 'type'"),
    (
        "block-unknown-type",
        lambda b: _msgs(b)[0]["content"][0].update(type="document"),
        f"{M}[0].content[0].type",
        "must be one of 'text', 'tool_use', 'tool_result', 'thinking', 'image', 'unknown'",
    ),
    ("text-not-string", lambda b: _msgs(b)[0]["content"][0].update(text=1), f"{M}[0].content[0].text", "string"),
    (
        "thinking-extra-key",
        lambda b: _msgs(b)[1]["content"][0].update(signature="sig"),
        f"{M}[1].content[0]",
        "unexpected key 'signature'",
    ),
    ("tool-use-missing-id", lambda b: _tool_use(b).pop("id"), f"{M}[1].content[2]", "missing required key 'id'"),
    ("tool-use-name-null", lambda b: _tool_use(b).update(name=None), f"{M}[1].content[2].name", "must be a string"),
    (
        "tool-result-content-number",
        lambda b: _result(b).update(content=3),
        f"{M}[2].content[0].content",
        "must be a string or an array of blocks",
    ),
    (
        "tool-result-is-error-string",
        lambda b: _result(b).update(isError="false"),
        f"{M}[2].content[0].isError",
        "must be a boolean",
    ),
    (
        "tool-result-use-id-missing",
        lambda b: _result(b).pop("toolUseId"),
        f"{M}[2].content[0]",
        "missing required key 'toolUseId'",
    ),
    (
        "tool-use-inside-tool-result",
        lambda b: _result(b)["content"].append(copy.deepcopy(_tool_use(b))),
        f"{M}[2].content[0].content[3].type",
        "a tool_use block is not allowed inside tool_result content",
    ),
    (
        "bogus-type-inside-tool-result",
        lambda b: _result(b)["content"].append({"type": "search_result"}),
        f"{M}[2].content[0].content[3].type",
        "must be one of 'text', 'image', 'unknown' inside tool_result content",
    ),
    (
        "nested-block-bad",
        lambda b: _result(b)["content"][0].update(text=None),
        f"{M}[2].content[0].content[0].text",
        "must be a string",
    ),
    (
        "image-with-data",
        lambda b: _result(b)["content"][1].update(data="iVBORw0KGgo="),
        f"{M}[2].content[0].content[1]",
        "image data is never stored",
    ),
    (
        "image-with-source",
        lambda b: _result(b)["content"][1].update(source={"type": "base64", "data": "iVBORw0KGgo="}),
        f"{M}[2].content[0].content[1]",
        "image data is never stored (unexpected key 'source')",
    ),
    (
        "image-media-type-long",
        lambda b: _result(b)["content"][1].update(mediaType="i" * 256),
        f"{M}[2].content[0].content[1].mediaType",
        "at most 255",
    ),
    (
        "unknown-missing-raw",
        lambda b: _msgs(b)[3]["content"][0].pop("raw"),
        f"{M}[3].content[0]",
        "missing required key 'raw'",
    ),
    # strings, numbers and depth everywhere
    (
        "lone-surrogate-system",
        lambda b: _req(b)["system"][0].update(text="ok " + LONE),
        f"{Q}.system[0].text",
        "invalid unicode (lone surrogate)",
    ),
    (
        "lone-surrogate-deep-in-input",
        lambda b: _tool_use(b)["input"]["opts"][4]["deep"].append("é\udfff"),
        f"{M}[1].content[2].input.opts[4].deep[1]",
        "invalid unicode (lone surrogate)",
    ),
    (
        "lone-surrogate-input-key",
        lambda b: _tool_use(b)["input"].update({"k" + LONE: 1}),
        f'{M}[1].content[2].input["k\\ud800"]',
        "key has invalid unicode (lone surrogate)",
    ),
    (
        "lone-surrogate-unknown-raw",
        lambda b: _msgs(b)[3]["content"].append({"type": "unknown", "raw": LONE}),
        f"{M}[3].content[1].raw",
        "invalid unicode (lone surrogate)",
    ),
    (
        "lone-surrogate-error-message",
        lambda b: _resp(b).update(error={"type": "api_error", "message": LONE}),
        f"{R}.error.message",
        "invalid unicode (lone surrogate)",
    ),
    (
        "nan-in-input",
        lambda b: _tool_use(b)["input"]["opts"].append(float("nan")),
        f"{M}[1].content[2].input.opts[5]",
        "must be a finite number",
    ),
    (
        "non-json-value-in-input",
        lambda b: _tool_use(b)["input"].update(when={1, 2}),
        f"{M}[1].content[2].input.when",
        "must be a JSON value, got set",
    ),
    (
        "depth-65-in-input",
        lambda b: _tool_use(b).update(input=nested_list(MAX_DEPTH + 1)),
        f"{M}[1].content[2].input" + "[0]" * MAX_DEPTH,
        "nested deeper than 64 levels",
    ),
    (
        "non-string-key-in-input",
        lambda b: _tool_use(b)["input"]["opts"][4].update({7: "x"}),
        f"{M}[1].content[2].input.opts[4][7]",
        "object keys must be strings",
    ),
    (
        "depth-65-objects-in-error",
        lambda b: _resp(b).update(error=nested_dict(MAX_DEPTH + 1)),
        f"{R}.error" + ".k" * MAX_DEPTH,
        "nested deeper than 64 levels",
    ),
    (
        "depth-65-in-schema",
        lambda b: _req(b)["tools"][0].update(inputSchema={"a": {"b": nested_list(MAX_DEPTH - 1)}}),
        f"{Q}.tools[0].inputSchema.a.b" + "[0]" * (MAX_DEPTH - 2),
        "nested deeper than 64 levels",
    ),
    # response
    ("response-list", lambda b: _llm(b).update(response=[]), R, "must be an object or null, got array"),
    ("response-missing-usage", lambda b: _resp(b).pop("usage"), R, "missing required key 'usage'"),
    ("response-id-number", lambda b: _resp(b).update(id=7), f"{R}.id", "must be a string, got integer"),
    ("response-content-null", lambda b: _resp(b).update(content=None), f"{R}.content", "array of blocks"),
    ("usage-null", lambda b: _resp(b).update(usage=None), f"{R}.usage", "must be an object, got null"),
    (
        "usage-extra-key",
        lambda b: _resp(b)["usage"].update(serviceTier=1),
        f"{R}.usage",
        "unexpected key 'serviceTier'",
    ),
    ("tokens-negative", lambda b: _resp(b)["usage"].update(inputTokens=-3), f"{R}.usage.inputTokens", ">= 0"),
    ("tokens-bool", lambda b: _resp(b)["usage"].update(outputTokens=True), f"{R}.usage.outputTokens", "got boolean"),
    ("response-status-99", lambda b: _resp(b).update(status=99), f"{R}.status", ">= 100"),
    ("error-string", lambda b: _resp(b).update(error="boom"), f"{R}.error", "must be an object or null, got string"),
    # opaque_http entry
    ("http-extra-key", lambda b: _http(b).update(query="a=1"), H, "unexpected key 'query'"),
    ("http-missing-preview", lambda b: _http(b).pop("responseBodyPreview"), H, "key 'responseBodyPreview'"),
    ("http-ended-before", lambda b: _http(b).update(endedAt=TS - 16), f"{H}.endedAt", "must not be before startedAt"),
    ("method-lowercase", lambda b: _http(b).update(method="get"), f"{H}.method", "uppercase"),
    ("method-long", lambda b: _http(b).update(method="A" * 17), f"{H}.method", "1-16 uppercase"),
    ("status-600", lambda b: _http(b).update(status=600), f"{H}.status", "<= 599"),
    ("status-bool", lambda b: _http(b).update(status=True), f"{H}.status", "must be an integer, got boolean"),
    ("headers-list", lambda b: _http(b).update(responseHeaders=[]), f"{H}.responseHeaders", "must be an object"),
    (
        "header-value-not-string",
        lambda b: _http(b)["requestHeaders"].update({"content-length": 12}),
        f'{H}.requestHeaders["content-length"]',
        "must be a string, got integer",
    ),
    (
        "header-value-lone-surrogate",
        lambda b: _http(b)["responseHeaders"].update(etag=LONE),
        f"{H}.responseHeaders.etag",
        "invalid unicode (lone surrogate)",
    ),
    (
        "header-name-lone-surrogate",
        lambda b: _http(b)["responseHeaders"].update({"x-" + LONE: "v"}),
        f'{H}.responseHeaders["x-\\ud800"]',
        "header name has invalid unicode",
    ),
    (
        "header-name-not-string",
        lambda b: _http(b)["requestHeaders"].update({None: "v"}),
        f"{H}.requestHeaders[None]",
        "header names must be strings",
    ),
    (
        "headers-too-many",
        lambda b: _http(b).update(requestHeaders={f"x-{i}": "v" for i in range(201)}),
        f"{H}.requestHeaders",
        "at most 200 entries",
    ),
    (
        "preview-4097",
        lambda b: _http(b).update(responseBodyPreview="x" * 4097),
        f"{H}.responseBodyPreview",
        "at most 4096 characters, got 4097",
    ),
    (
        "request-preview-long",
        lambda b: _http(b).update(requestBodyPreview="é" * 4097),
        f"{H}.requestBodyPreview",
        "at most 4096",
    ),
    (
        "preview-lone-surrogate",
        lambda b: _http(b).update(requestBodyPreview="{" + LONE + "}"),
        f"{H}.requestBodyPreview",
        "invalid unicode (lone surrogate)",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_upload_fails_at_exact_path(mutate: Mutation, path: str, fragment: str) -> None:
    body = upload()
    validate_upload(copy.deepcopy(body))  # the untouched sample is valid, so the mutation alone is at fault
    mutate(body)  # mutators edit the body in place; what they return is ignored
    with pytest.raises(ActivityError) as caught:
        validate_upload(body)
    assert caught.value.path == path
    assert fragment in caught.value.reason
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("body", [[upload()], None, "events", 3, True])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(ActivityError) as caught:
        validate_upload(body)
    assert caught.value.path == "body"
    assert caught.value.reason.startswith("must be an object, got ")
