"""Validation of uploaded activity (trace) events (DESIGN §5): a pure, fast walk over `json.loads` output.

The broker runs `validate_upload` on every `POST /agents/{name}/activity` body; the runner may run `validate_event`
on what it builds before queueing it. The first problem found raises `ActivityError` with a JSON-ish path
(`events[3].entry.request.messages[0].content[2].input`) and a one-line reason.

Rules, beyond the shapes written in DESIGN §5:

- **Exact keys.** Every fixed-shape object — the upload body, the event, both entry kinds, `request`, each message,
  each tool, `response`, `usage` and every block — must carry exactly its listed keys: a missing key is an error and
  so is any unknown extra key (the producer is our own runner, so strictness catches drift early). "Or null" means
  the key is present with the value `null`, never absent. Missing keys are reported before extra ones.
- **Free-form values** are any JSON value, checked only for valid strings, finite numbers and depth: `tool_use.input`,
  `unknown.raw`, `tools[].inputSchema` (which must be an object) and `response.error` (`null` or any object; its
  inner keys are not constrained). Maps with caller-chosen keys are `redactions` (rule id → count, ids match
  `^[a-z0-9][a-z0-9_.-]{0,63}$`, at most 200 entries) and the header objects (string → string, at most 200 entries).
- **Depth.** A free-form value may nest at most 64 arrays/objects (the value itself counts as level 1 when it is a
  container); the 65th level is an error located at that container. The fixed structure has bounded depth by
  construction, because `tool_result.content` may only hold `text`, `image` and `unknown` blocks (no nested
  `tool_result`, `tool_use` or `thinking` — the Messages API allows none of those there).
- **Strings** must be encodable as UTF-8: a lone surrogate (which `json.loads` happily produces from `"\\ud800"`)
  anywhere — value or key, fixed or free-form — is rejected as "invalid unicode (lone surrogate)".
- **Numbers.** Booleans are never numbers. Integers in the fixed structure lie within JavaScript's safe range
  (≤ 2**53 - 1) so the web UI reads them exactly. Floats must be finite everywhere (`json.loads` accepts `NaN` and
  `Infinity`, which re-serialise as invalid JSON). Timestamps (`ts`, `startedAt`, `endedAt`) are epoch ms in
  [2000-01-01, 2100-01-01]; `duration` is in [0, 1 day] ms.
- **Images** carry only `mediaType` (≤ 255 chars); a block carrying `data` or `source` is rejected with
  "image data is never stored".
- Limits not named in DESIGN §5 are deliberately absent (e.g. text length): the upload body cap (16 MiB) bounds them.

Performance: a straight recursive walk that builds path strings only for the fixed structure (a few hundred per
event) and none inside free-form values, where the path is assembled only while an error propagates. The unicode
check is O(1) for ASCII strings (`str.isascii` reads a flag) and a C-speed `encode` otherwise.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, cast

from ac7_core.errors import Ac7Error

ACTIVITY_KINDS = ("llm_exchange", "opaque_http")
BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking", "image", "unknown")
TOOL_RESULT_BLOCK_TYPES = ("text", "image", "unknown")

MAX_EVENTS = 500
MAX_DEPTH = 64
TS_MIN = 946_684_800_000  # 2000-01-01T00:00:00Z
TS_MAX = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_DURATION_MS = 86_400_000
MAX_SAFE_INT = 2**53 - 1
MAX_PREVIEW = 4096
MAX_MAP_ENTRIES = 200

_RULE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LONE_SURROGATE = "invalid unicode (lone surrogate)"


class ActivityError(Ac7Error):
    """One problem with an activity upload, located by path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Keys:
    """The exact key set of a fixed-shape object, with a stable order for reporting missing keys."""

    __slots__ = ("names", "order")

    def __init__(self, *order: str) -> None:
        self.order = order
        self.names = frozenset(order)


_BODY = _Keys("events")
_EVENT = _Keys("kind", "ts", "duration", "entry")
_LLM_ENTRY = _Keys(
    "kind",
    "startedAt",
    "endedAt",
    "firstByteMs",
    "firstTokenMs",
    "httpVersion",
    "host",
    "path",
    "sessionId",
    "requestBytes",
    "responseBytes",
    "truncated",
    "redactions",
    "request",
    "response",
)
_HTTP_ENTRY = _Keys(
    "kind",
    "startedAt",
    "endedAt",
    "host",
    "method",
    "path",
    "status",
    "requestHeaders",
    "responseHeaders",
    "requestBodyPreview",
    "responseBodyPreview",
)
_REQUEST = _Keys("model", "maxTokens", "temperature", "system", "messages", "tools")
_MESSAGE = _Keys("role", "content")
_TOOL = _Keys("name", "description", "inputSchema")
_RESPONSE = _Keys("id", "model", "stopReason", "stopSequence", "content", "usage", "status", "error")
_USAGE = _Keys("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
_TEXT = _Keys("type", "text")
_TOOL_USE = _Keys("type", "id", "name", "input")
_TOOL_RESULT = _Keys("type", "toolUseId", "content", "isError")
_IMAGE = _Keys("type", "mediaType")
_UNKNOWN = _Keys("type", "raw")


# --- public API ---------------------------------------------------------------------------------------------------


def validate_upload(body: object) -> list[dict[str, Any]]:
    """Check a whole upload body `{"events": [1..500 ActivityEvent]}` and return its events list."""
    if not isinstance(body, dict):
        raise ActivityError("body", f"must be an object, got {_json_type(body)}")
    _exact_keys(body, _BODY, "body")
    events = body["events"]
    if not isinstance(events, list):
        raise ActivityError("events", f"must be an array, got {_json_type(events)}")
    if not events:
        raise ActivityError("events", "must hold at least 1 event")
    if len(events) > MAX_EVENTS:
        raise ActivityError("events", f"must hold at most {MAX_EVENTS} events, got {len(events)}")
    for i, event in enumerate(events):
        validate_event(event, f"events[{i}]")
    return cast(list[dict[str, Any]], events)


def validate_event(event: object, path: str = "event") -> None:
    """Check one ActivityEvent; `path` prefixes every error location (e.g. `events[3]`)."""
    if not isinstance(event, dict):
        raise ActivityError(path, f"must be an object, got {_json_type(event)}")
    if "kind" not in event:
        raise ActivityError(path, "missing required key 'kind'")
    kind = event["kind"]
    if kind == "llm_exchange":
        entry_kind = "anthropic_messages"
    elif kind == "opaque_http":
        entry_kind = "opaque_http"
    else:
        raise ActivityError(f"{path}.kind", "must be one of 'llm_exchange', 'opaque_http'")
    _exact_keys(event, _EVENT, path)
    _int(event["ts"], f"{path}.ts", TS_MIN, TS_MAX)
    _number(event["duration"], f"{path}.duration", 0, MAX_DURATION_MS)
    entry = event["entry"]
    epath = f"{path}.entry"
    if not isinstance(entry, dict):
        raise ActivityError(epath, f"must be an object, got {_json_type(entry)}")
    if "kind" not in entry:
        raise ActivityError(epath, "missing required key 'kind'")
    if entry["kind"] != entry_kind:
        raise ActivityError(f"{epath}.kind", f"must be {entry_kind!r} for an {kind} event")
    if entry_kind == "anthropic_messages":
        _llm_entry(entry, epath)
    else:
        _http_entry(entry, epath)


# --- entries ------------------------------------------------------------------------------------------------------


def _llm_entry(entry: dict[Any, Any], path: str) -> None:
    _exact_keys(entry, _LLM_ENTRY, path)
    _times(entry, path)
    _opt_number(entry["firstByteMs"], f"{path}.firstByteMs", 0, MAX_SAFE_INT)
    _opt_number(entry["firstTokenMs"], f"{path}.firstTokenMs", 0, MAX_SAFE_INT)
    _str(entry["httpVersion"], f"{path}.httpVersion", 16)
    _str(entry["host"], f"{path}.host", 255)
    _str(entry["path"], f"{path}.path", 2048)
    if entry["sessionId"] is not None:
        _str(entry["sessionId"], f"{path}.sessionId", 256)
    _int(entry["requestBytes"], f"{path}.requestBytes", 0, MAX_SAFE_INT)
    _int(entry["responseBytes"], f"{path}.responseBytes", 0, MAX_SAFE_INT)
    _bool(entry["truncated"], f"{path}.truncated")
    _redactions(entry["redactions"], f"{path}.redactions")
    _request(entry["request"], f"{path}.request")
    if entry["response"] is not None:
        _response(entry["response"], f"{path}.response")


def _http_entry(entry: dict[Any, Any], path: str) -> None:
    _exact_keys(entry, _HTTP_ENTRY, path)
    _times(entry, path)
    _str(entry["host"], f"{path}.host", 255)
    method = entry["method"]
    if not isinstance(method, str) or _METHOD_RE.fullmatch(method) is None:
        raise ActivityError(f"{path}.method", "must be 1-16 uppercase letters A-Z")
    _str(entry["path"], f"{path}.path", 2048)
    _status(entry["status"], f"{path}.status")
    _headers(entry["requestHeaders"], f"{path}.requestHeaders")
    _headers(entry["responseHeaders"], f"{path}.responseHeaders")
    if entry["requestBodyPreview"] is not None:
        _str(entry["requestBodyPreview"], f"{path}.requestBodyPreview", MAX_PREVIEW)
    if entry["responseBodyPreview"] is not None:
        _str(entry["responseBodyPreview"], f"{path}.responseBodyPreview", MAX_PREVIEW)


def _times(entry: dict[Any, Any], path: str) -> None:
    started = entry["startedAt"]
    ended = entry["endedAt"]
    _int(started, f"{path}.startedAt", TS_MIN, TS_MAX)
    _int(ended, f"{path}.endedAt", TS_MIN, TS_MAX)
    if ended < started:
        raise ActivityError(f"{path}.endedAt", "must not be before startedAt")


def _request(request: object, path: str) -> None:
    if not isinstance(request, dict):
        raise ActivityError(path, f"must be an object, got {_json_type(request)}")
    _exact_keys(request, _REQUEST, path)
    _str(request["model"], f"{path}.model", 256)
    if request["maxTokens"] is not None:
        _int(request["maxTokens"], f"{path}.maxTokens", 0, MAX_SAFE_INT)
    temperature = request["temperature"]
    if temperature is not None:
        _number(temperature, f"{path}.temperature", -MAX_SAFE_INT, MAX_SAFE_INT)
    _blocks(request["system"], f"{path}.system", False)
    messages = request["messages"]
    mpath = f"{path}.messages"
    if not isinstance(messages, list):
        raise ActivityError(mpath, f"must be an array, got {_json_type(messages)}")
    for i, message in enumerate(messages):
        ipath = f"{mpath}[{i}]"
        if not isinstance(message, dict):
            raise ActivityError(ipath, f"must be an object, got {_json_type(message)}")
        _exact_keys(message, _MESSAGE, ipath)
        if message["role"] != "user" and message["role"] != "assistant":
            raise ActivityError(f"{ipath}.role", "must be 'user' or 'assistant'")
        _blocks(message["content"], f"{ipath}.content", False)
    tools = request["tools"]
    tpath = f"{path}.tools"
    if not isinstance(tools, list):
        raise ActivityError(tpath, f"must be an array, got {_json_type(tools)}")
    for i, tool in enumerate(tools):
        ipath = f"{tpath}[{i}]"
        if not isinstance(tool, dict):
            raise ActivityError(ipath, f"must be an object, got {_json_type(tool)}")
        _exact_keys(tool, _TOOL, ipath)
        _str(tool["name"], f"{ipath}.name", 256)
        _str(tool["description"], f"{ipath}.description")
        schema = tool["inputSchema"]
        if not isinstance(schema, dict):
            raise ActivityError(f"{ipath}.inputSchema", f"must be an object, got {_json_type(schema)}")
        _free(schema, f"{ipath}.inputSchema")


def _response(response: object, path: str) -> None:
    if not isinstance(response, dict):
        raise ActivityError(path, f"must be an object or null, got {_json_type(response)}")
    _exact_keys(response, _RESPONSE, path)
    for key in ("id", "model", "stopReason", "stopSequence"):
        if response[key] is not None:
            _str(response[key], f"{path}.{key}")
    _blocks(response["content"], f"{path}.content", False)
    usage = response["usage"]
    upath = f"{path}.usage"
    if not isinstance(usage, dict):
        raise ActivityError(upath, f"must be an object, got {_json_type(usage)}")
    _exact_keys(usage, _USAGE, upath)
    for key in _USAGE.order:
        if usage[key] is not None:
            _int(usage[key], f"{upath}.{key}", 0, MAX_SAFE_INT)
    _status(response["status"], f"{path}.status")
    error = response["error"]
    if error is not None:
        if not isinstance(error, dict):
            raise ActivityError(f"{path}.error", f"must be an object or null, got {_json_type(error)}")
        _free(error, f"{path}.error")


# --- blocks -------------------------------------------------------------------------------------------------------


def _blocks(blocks: object, path: str, in_tool_result: bool) -> None:
    if not isinstance(blocks, list):
        raise ActivityError(path, f"must be an array of blocks, got {_json_type(blocks)}")
    for i, block in enumerate(blocks):
        _block(block, f"{path}[{i}]", in_tool_result)


def _block(block: object, path: str, in_tool_result: bool) -> None:
    if not isinstance(block, dict):
        raise ActivityError(path, f"must be an object, got {_json_type(block)}")
    if "type" not in block:
        raise ActivityError(path, "missing required key 'type'")
    kind = block["type"]
    if kind == "text":
        _exact_keys(block, _TEXT, path)
        _str(block["text"], f"{path}.text")
    elif kind == "image":
        if "data" in block or "source" in block:
            key = "data" if "data" in block else "source"
            raise ActivityError(path, f"image data is never stored (unexpected key {key!r})")
        _exact_keys(block, _IMAGE, path)
        _str(block["mediaType"], f"{path}.mediaType", 255)
    elif kind == "unknown":
        _exact_keys(block, _UNKNOWN, path)
        _free(block["raw"], f"{path}.raw")
    elif in_tool_result:
        if kind in BLOCK_TYPES:
            raise ActivityError(f"{path}.type", f"a {kind} block is not allowed inside tool_result content")
        raise ActivityError(f"{path}.type", "must be one of 'text', 'image', 'unknown' inside tool_result content")
    elif kind == "tool_use":
        _exact_keys(block, _TOOL_USE, path)
        _str(block["id"], f"{path}.id")
        _str(block["name"], f"{path}.name")
        _free(block["input"], f"{path}.input")
    elif kind == "tool_result":
        _exact_keys(block, _TOOL_RESULT, path)
        _str(block["toolUseId"], f"{path}.toolUseId")
        content = block["content"]
        if isinstance(content, str):
            _str(content, f"{path}.content")
        elif isinstance(content, list):
            _blocks(content, f"{path}.content", True)
        else:
            raise ActivityError(f"{path}.content", f"must be a string or an array of blocks, got {_json_type(content)}")
        if block["isError"] is not None:
            _bool(block["isError"], f"{path}.isError")
    elif kind == "thinking":
        _exact_keys(block, _TEXT, path)
        _str(block["text"], f"{path}.text")
    else:
        raise ActivityError(f"{path}.type", "must be one of " + ", ".join(repr(t) for t in BLOCK_TYPES))


# --- maps ---------------------------------------------------------------------------------------------------------


def _redactions(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise ActivityError(path, f"must be an object, got {_json_type(value)}")
    if len(value) > MAX_MAP_ENTRIES:
        raise ActivityError(path, f"must hold at most {MAX_MAP_ENTRIES} entries, got {len(value)}")
    for rule, count in value.items():
        if not isinstance(rule, str) or _RULE_ID_RE.fullmatch(rule) is None:
            raise ActivityError(_member(path, rule), "rule id must match ^[a-z0-9][a-z0-9_.-]{0,63}$")
        _int(count, _member(path, rule), 0, MAX_SAFE_INT)


def _headers(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise ActivityError(path, f"must be an object, got {_json_type(value)}")
    if len(value) > MAX_MAP_ENTRIES:
        raise ActivityError(path, f"must hold at most {MAX_MAP_ENTRIES} entries, got {len(value)}")
    for name, text in value.items():
        if not isinstance(name, str):
            raise ActivityError(_member(path, name), "header names must be strings")
        if _bad_unicode(name):
            raise ActivityError(_member(path, name), f"header name has {_LONE_SURROGATE}")
        if not isinstance(text, str):
            raise ActivityError(_member(path, name), f"must be a string, got {_json_type(text)}")
        if _bad_unicode(text):
            raise ActivityError(_member(path, name), _LONE_SURROGATE)


# --- free-form JSON values ----------------------------------------------------------------------------------------


class _Bad(Exception):
    """A problem inside a free-form value; path segments are collected, innermost first, as it propagates."""

    def __init__(self, reason: str, *segments: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments = list(segments)


def _free(value: object, path: str) -> None:
    try:
        _walk(value, 1)
    except _Bad as bad:
        raise ActivityError(path + "".join(reversed(bad.segments)), bad.reason) from None


_PLAIN_SCALARS = frozenset({int, bool, type(None)})  # free-form leaves that need no check (floats do: NaN, inf)


def _walk(value: object, depth: int) -> None:
    """Check one free-form JSON value (a container at `depth`); raises `_Bad`, never returns a verdict."""
    if isinstance(value, str):
        if not value.isascii() and _bad_unicode(value):
            raise _Bad(_LONE_SURROGATE)
    elif isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad("object keys must be strings", _segment(key))
            if not key.isascii() and _bad_unicode(key):
                raise _Bad(f"key has {_LONE_SURROGATE}", _segment(key))
            kind = type(item)
            if kind is str:
                if not item.isascii() and _bad_unicode(item):
                    raise _Bad(_LONE_SURROGATE, _segment(key))
                continue
            if kind in _PLAIN_SCALARS:
                continue
            try:
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.segments.append(_segment(key))
                raise
    elif isinstance(value, list):
        if depth > MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
        for i, item in enumerate(value):
            kind = type(item)
            if kind is str:
                if not item.isascii() and _bad_unicode(item):
                    raise _Bad(_LONE_SURROGATE, f"[{i}]")
                continue
            if kind in _PLAIN_SCALARS:
                continue
            try:
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.segments.append(f"[{i}]")
                raise
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad("must be a finite number")
    elif value is None or isinstance(value, int):  # bool is an int: both fine in free-form JSON
        pass
    else:
        raise _Bad(f"must be a JSON value, got {type(value).__name__}")


# --- scalars ------------------------------------------------------------------------------------------------------


def _exact_keys(obj: dict[Any, Any], keys: _Keys, path: str) -> None:
    if obj.keys() == keys.names:
        return
    for key in keys.order:
        if key not in obj:
            raise ActivityError(path, f"missing required key {key!r}")
    for key in obj:
        if key not in keys.names:
            raise ActivityError(path, f"unexpected key {_show(key)}")


def _str(value: object, path: str, limit: int | None = None) -> None:
    if not isinstance(value, str):
        raise ActivityError(path, f"must be a string, got {_json_type(value)}")
    if limit is not None and len(value) > limit:
        raise ActivityError(path, f"must be at most {limit} characters, got {len(value)}")
    if not value.isascii() and _bad_unicode(value):
        raise ActivityError(path, _LONE_SURROGATE)


def _int(value: object, path: str, low: int, high: int) -> None:
    if type(value) is not int:  # exact type: a bool is not an integer here
        raise ActivityError(path, f"must be an integer, got {_json_type(value)}")
    if value < low:
        raise ActivityError(path, f"must be >= {low}")
    if value > high:
        raise ActivityError(path, f"must be <= {high}")


def _number(value: object, path: str, low: int, high: int) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ActivityError(path, "must be a finite number")
    elif not isinstance(value, int) or isinstance(value, bool):
        raise ActivityError(path, f"must be a number, got {_json_type(value)}")
    if value < low:
        raise ActivityError(path, f"must be >= {low}")
    if value > high:
        raise ActivityError(path, f"must be <= {high}")


def _opt_number(value: object, path: str, low: int, high: int) -> None:
    if value is not None:
        _number(value, path, low, high)


def _bool(value: object, path: str) -> None:
    if value is not True and value is not False:
        raise ActivityError(path, f"must be a boolean, got {_json_type(value)}")


def _status(value: object, path: str) -> None:
    if value is not None:
        _int(value, path, 100, 599)


def _bad_unicode(text: str) -> bool:
    """True when `text` holds a lone surrogate. `encode` beats a regex search several-fold on non-ASCII text."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(key: object) -> str:
    """A short, one-line, ASCII rendering of a key for an error message."""
    if isinstance(key, str):
        return ascii(key) if len(key) <= 64 else ascii(key[:64]) + "..."
    return ascii(key)[:64]


def _segment(key: object) -> str:
    if isinstance(key, str) and len(key) <= 64 and _IDENT_RE.fullmatch(key):
        return f".{key}"
    if isinstance(key, str):
        return "[" + json.dumps(key if len(key) <= 64 else key[:64] + "...") + "]"
    return f"[{_show(key)}]"


def _member(path: str, key: object) -> str:
    return path + _segment(key)
