"""Turn one `CapturedExchange` into a redacted DESIGN §5 activity event (`llm_exchange` or `opaque_http`).

`build_event(ex)` never raises and always returns an event that passes `ac7_core.activity.validate_event` (it runs
the validator itself; should the shaped event ever fail it, a minimal `opaque_http` event without bodies is returned
and the problem logged). Every string that ends up in an event went through `ac7_core.redaction` first: bodies are
parsed and shaped *before* redaction only in memory, and nothing raw is ever copied out.

**Classification.** `POST` to a path whose part before `?` ends with `/v1/messages` (any prefix, any query:
`/v1/messages?beta=true`, `/gateway/v1/messages`; not `/v1/messages/count_tokens`) → `llm_exchange`; anything else
the proxy traced → `opaque_http`. The host is not checked: the proxy hands over traced hosts only.

**Bodies.** `Content-Encoding` (a comma list, applied in reverse) is undone incrementally per chunk: gzip/x-gzip,
deflate (zlib or raw), br, zstd, identity. Output is capped at `MAX_DECODED_BYTES` (decompression bombs stop there,
the entry is marked truncated). If the first decoding step fails before producing anything and the raw bytes look
like plain JSON/SSE, the header is taken to have lied (a proxy that decoded but kept the header) and the bytes are
used as they are. Request JSON is parsed with `NaN`/`Infinity` mapped to null; invalid UTF-8 is replaced (U+FFFD);
a body that does not parse (a capped copy, a cut stream) is salvaged with a partial JSON parse when `pydantic_core`
is available (it ships with `mcp`), and the entry is marked truncated.

**llm_exchange request.** `model` (string, "" when absent), `maxTokens`, `temperature` (numbers, else null),
`system` (a string → one text block; a block list → blocks), `messages` (string content → one text block), `tools`
(`name`, `description` — "" when absent, as for server tools like `web_search_20250305`, whose `type` stands in for a
missing name — and `inputSchema`, `{}` when absent). Claude Code puts `role: "system"` messages inside `messages`
(the environment block, possibly with empty content); the trace has only user/assistant roles, so **their blocks are
appended to `request.system`**, in order. A message with any other role becomes a user message holding one
`unknown` block `{"role", "content"}`.

**Blocks.** text `{text}` (citations and cache_control dropped); tool_use `{id, name, input}`; tool_result
`{toolUseId, content (string, or text/image/unknown blocks), isError (is_error is true)}`; thinking `{text}`
(signature dropped); image `{mediaType}` from `source.media_type` ("" for url/file sources) — image data is never
stored; anything else (document, redacted_thinking, server_tool_use, web_search_tool_result, search_result, a block
missing its required fields…) → `{type:"unknown", raw}`. In every free-form value (raw, tool input, schemas, errors)
base64 payloads (`{"type": "base64", "data": …}`), `redacted_thinking.data` and thinking `signature`s are replaced
by a short `[omitted: N chars]` note; lone surrogates become U+FFFD, non-finite numbers null, and containers nested
deeper than 64 levels a `[nested deeper than 64 levels]` note.

**llm_exchange response.** null when no response head arrived (`status` None). `text/event-stream` (or a body
sniffed as SSE) → `StreamAccumulator`; JSON → the message as is; a JSON `{"type": "error", "error": {…}}` (any
status) → `error` is the inner object (plus `request_id` when the body had one); a non-JSON error body →
`{"type": "http_error", "message": <redacted preview>}`; an unreadable success body →
`{"type": "unparsable_response", …}`; a body in an unsupported or corrupt content coding →
`{"type": "undecodable_response", …}`; an SSE `error` event → `error`. Unparsable streamed tool input stays a string
(see `anthropic_sse`). `usage` maps input/output/cache-creation/cache-read token counts (integers, else null).

**truncated** is true when the entry is partial for any reason: the proxy capped a body copy, `ex.error` is set, no
response arrived, a stream lacks `message_stop` (cut, or ended by an `error` event), a body could not be decoded or
parsed in full, or the event was shrunk to fit `MAX_EVENT_BYTES`.

**Timings** (all ms). `ts` = `startedAt` = `ex.started_at_ms`; `endedAt` = `ex.ended_at_ms` (else start + the last
chunk's offset), never before `startedAt`; `duration` = `endedAt - startedAt` (≤ 1 day). `firstByteMs` =
`ex.first_byte_ms` as captured. `firstTokenMs` = the offset, as recorded in `ex.response_chunks` (ms since
`started_at_ms`), of the chunk that completed the first `content_block_delta` event; null for non-streamed responses
and for streams without a delta. Both rounded to 0.1 ms. `requestBytes`/`responseBytes` = the wire sizes captured
(at least the copy's length).

**opaque_http.** Headers go through `redact_headers`, then names are lower-cased, repeats joined with ", ", values
capped at 8 KiB, at most 200 names. Body previews: content-decoded, then JSON (parsed, `redact_json`, compact dump)
or form data (`redact_json` per field) or text (`redact_text`), redacted over a 64 KiB window *before* being cut to
`max_preview` (≤ 4096) chars, with `…[truncated]` when cut; binary bodies (by content type — `image/svg+xml` is
text — or by content) become `<N bytes binary>`, unsupported codings `<N bytes br-encoded>`, corrupt ones
`<N bytes, corrupt gzip data>`. The query string of every path goes through `redact_json` field by field, so
`?code_verifier=…` is caught by key as well as by pattern.

**Size.** An event larger than `MAX_EVENT_BYTES` (compact UTF-8 JSON) is shrunk: long strings are cut (64 KiB, then
8 KiB, 1 KiB, 256 chars) with a `…[truncated N chars]` note, and as a last resort message/tool/content lists are
emptied; `truncated` is set.
"""

from __future__ import annotations

import codecs
import importlib
import json
import logging
import math
import re
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from ac7_core.activity import (
    MAX_DEPTH,
    MAX_DURATION_MS,
    MAX_MAP_ENTRIES,
    MAX_PREVIEW,
    MAX_SAFE_INT,
    TS_MAX,
    TS_MIN,
    ActivityError,
    validate_event,
)
from ac7_core.anthropic_sse import StreamAccumulator
from ac7_core.capture import CapturedExchange
from ac7_core.redaction import Redactions, redact_headers, redact_json, redact_text

log = logging.getLogger(__name__)

MAX_DECODED_BYTES = 64 * 1024 * 1024  # per body, after content decoding
MAX_EVENT_BYTES = 8 * 1024 * 1024  # the broker takes upload bodies up to 16 MiB
MAX_HEADER_VALUE = 8192
PREVIEW_WINDOW = 64 * 1024  # chars redacted before a preview is cut, so a long secret straddling the cut is caught
PREVIEW_DECODE_BYTES = 1024 * 1024  # bytes of a body decoded for an opaque preview
TRUNCATED_MARK = "…[truncated]"
SESSION_HEADER = "x-claude-code-session-id"

_SURROGATE = re.compile("[\ud800-\udfff]")
_METHOD = re.compile(r"[A-Z]{1,16}")
_SSE_START = re.compile(rb"\s*(?:event|data|id|retry)?:")
_JSON_START = re.compile(rb"\s*[\[{]")
_SHRINK_CAPS = (65536, 8192, 1024, 256)
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream", "application/zip")
_BINARY_HINTS = ("protobuf", "grpc", "msgpack", "gzip", "pdf", "wasm")


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_brotli: Any = _optional_module("brotli")  # mitmproxy dependencies: present wherever the runner runs
_zstd: Any = _optional_module("zstandard")
_pydantic_core: Any = _optional_module("pydantic_core")


# --- public API ---------------------------------------------------------------------------------------------------


def is_messages_call(method: str, path: str) -> bool:
    """True for `POST …/v1/messages` with or without a query string."""
    if method.upper() != "POST":
        return False
    bare = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return bare.endswith("/v1/messages")


def build_event(ex: CapturedExchange, *, max_preview: int = MAX_PREVIEW) -> dict[str, Any]:
    """The redacted ActivityEvent for one captured exchange. Never raises; always valid (see the module docstring)."""
    try:
        if is_messages_call(str(ex.method), str(ex.path)):
            event = _Shaper().llm_event(ex)
        else:
            event = _Shaper().opaque_event(ex, max(64, min(int(max_preview), MAX_PREVIEW)))
        validate_event(event)
        return event
    except ActivityError as exc:  # a shaping bug: the path and reason name no captured values
        log.error("trace: shaped event failed validation (%s); recording a bare opaque_http event", exc)
    except Exception as exc:  # never let one odd exchange break the trace host; the message could quote data
        log.error("trace: could not shape an exchange (%s); recording a bare opaque_http event", type(exc).__name__)
    return _bare_event(ex)


# --- shaping ------------------------------------------------------------------------------------------------------


class _Shaper:
    """Builds one event. Every string reaches the event through `text` (redact_text), `free` (redact_json) or one
    `redact_shaped` pass (redact_json) over the shaped block and tool lists; `counts` tallies every rule that fired."""

    def __init__(self) -> None:
        self.counts = Redactions()
        self.truncated = False

    # --- redaction entry points ---

    def text(self, value: str, limit: int | None = None) -> str:
        out = redact_text(_clean(value), self.counts)
        if limit is not None and len(out) > limit:
            out = out[:limit]
        return out

    def free(self, value: Any) -> Any:
        return redact_json(_sanitize(value, 1), self.counts)

    # --- llm_exchange ---

    def llm_event(self, ex: CapturedExchange) -> dict[str, Any]:
        started, ended = _times(ex)
        request = self.request(ex)
        response, first_token_ms = self.response(ex)
        if ex.request_truncated or ex.response_truncated or ex.error is not None or response is None:
            self.truncated = True
        session = _header(ex.request_headers, SESSION_HEADER)
        entry: dict[str, Any] = {
            "kind": "anthropic_messages",
            "startedAt": started,
            "endedAt": ended,
            "firstByteMs": _ms(ex.first_byte_ms),
            "firstTokenMs": _ms(first_token_ms),
            "httpVersion": _clean(str(ex.http_version))[:16],
            "host": self.text(str(ex.host), 255),
            "path": self.path(str(ex.path)),
            "sessionId": self.text(session, 256) if session is not None else None,
            "requestBytes": _count(ex.request_bytes, len(ex.request_body)),
            "responseBytes": _count(ex.response_bytes, sum(len(c) for _, c in ex.response_chunks)),
            "truncated": False,
            "redactions": {},
            "request": request,
            "response": response,
        }
        event = {"kind": "llm_exchange", "ts": started, "duration": ended - started, "entry": entry}
        if _size(event) > MAX_EVENT_BYTES:
            _shrink(event, entry)
            self.truncated = True
        entry["truncated"] = self.truncated
        entry["redactions"] = dict(self.counts.as_dict())
        return event

    def request(self, ex: CapturedExchange) -> dict[str, Any]:
        body, complete = _decode_whole(ex.request_body, _header(ex.request_headers, "content-encoding"))
        parsed, whole = _parse_json(body)
        if not complete or not whole:
            self.truncated = True
        req = parsed if isinstance(parsed, dict) else {}
        if not isinstance(parsed, dict):
            self.truncated = True
        model = req.get("model")
        system: list[dict[str, Any]] = self.content(req.get("system"), none_is_empty=True)
        messages: list[dict[str, Any]] = []
        raw_messages = req.get("messages")
        for message in raw_messages if isinstance(raw_messages, list) else []:
            if not isinstance(message, dict):
                messages.append({"role": "user", "content": [self.unknown(message)]})
                continue
            role = message.get("role")
            if role in ("user", "assistant"):
                messages.append({"role": role, "content": self.content(message.get("content"), none_is_empty=True)})
            elif role == "system":
                system.extend(self.content(message.get("content"), none_is_empty=True))
            else:
                raw = {"role": role, "content": message.get("content")}
                messages.append({"role": "user", "content": [self.unknown(raw)]})
        tools: list[dict[str, Any]] = []
        raw_tools = req.get("tools")
        for tool in raw_tools if isinstance(raw_tools, list) else []:
            if isinstance(tool, dict):
                tools.append(self.tool(tool))
        parts = self.redact_shaped({"system": system, "messages": messages, "tools": tools})
        for tool in parts["tools"]:
            tool["name"] = tool["name"][:256]
        _cap_media(parts["system"])
        for message in parts["messages"]:
            _cap_media(message["content"])
        return {
            "model": self.text(model, 256) if isinstance(model, str) else "",
            "maxTokens": _int_or_none(req.get("max_tokens")),
            "temperature": _number_or_none(req.get("temperature")),
            **parts,
        }

    # Shaping (below, down to `unknown`) only cleans strings (lone surrogates) and free-form values (`_sanitize`);
    # redaction then runs once over the shaped lists (`redact_shaped`), which costs a fraction of one `redact_text`
    # call per string. The shapes' own keys (type, text, id, name, input, content, raw, …) are never secret-key names.

    def redact_shaped(self, parts: dict[str, Any]) -> dict[str, Any]:
        out = redact_json(parts, self.counts)
        if not isinstance(out, dict) or out.keys() != parts.keys():  # never expected; the validator would object
            raise TypeError("redact_json changed the shape of the entry")
        return out

    def tool(self, tool: dict[str, Any]) -> dict[str, Any]:
        name = tool.get("name")
        if not isinstance(name, str):
            kind = tool.get("type")
            name = kind if isinstance(kind, str) else ""
        description = tool.get("description")
        schema = tool.get("input_schema")
        shaped = _sanitize(schema, 1) if isinstance(schema, dict) else {}
        return {
            "name": _clean(name),
            "description": _clean(description) if isinstance(description, str) else "",
            "inputSchema": shaped if isinstance(shaped, dict) else {},
        }

    def content(self, value: Any, *, none_is_empty: bool) -> list[dict[str, Any]]:
        if isinstance(value, str):
            return [{"type": "text", "text": _clean(value)}]
        if isinstance(value, list):
            return [self.block(item, in_tool_result=False) for item in value]
        if value is None and none_is_empty:
            return []
        return [self.unknown(value)]

    def block(self, raw: Any, *, in_tool_result: bool) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return self.unknown(raw)
        kind = raw.get("type")
        if kind == "text" and isinstance(raw.get("text"), str):
            return {"type": "text", "text": _clean(raw["text"])}
        if kind == "image":
            source = raw.get("source")
            media = source.get("media_type") if isinstance(source, dict) else None
            return {"type": "image", "mediaType": _clean(media) if isinstance(media, str) else ""}
        if in_tool_result:
            return self.unknown(raw)
        if kind == "tool_use" and isinstance(raw.get("id"), str) and isinstance(raw.get("name"), str):
            return {
                "type": "tool_use",
                "id": _clean(raw["id"]),
                "name": _clean(raw["name"]),
                "input": _sanitize(raw.get("input"), 1),
            }
        if kind == "tool_result" and isinstance(raw.get("tool_use_id"), str):
            content = raw.get("content")
            shaped: str | list[dict[str, Any]]
            if isinstance(content, str):
                shaped = _clean(content)
            elif isinstance(content, list):
                shaped = [self.block(item, in_tool_result=True) for item in content]
            elif content is None:
                shaped = ""
            else:
                shaped = [self.unknown(content)]
            return {
                "type": "tool_result",
                "toolUseId": _clean(raw["tool_use_id"]),
                "content": shaped,
                "isError": raw.get("is_error") is True,
            }
        if kind == "thinking":
            text = raw.get("thinking")
            if not isinstance(text, str):
                text = raw.get("text")
            if isinstance(text, str) or text is None:
                return {"type": "thinking", "text": _clean(text or "")}
        return self.unknown(raw)

    def unknown(self, raw: Any) -> dict[str, Any]:
        return {"type": "unknown", "raw": _sanitize(raw, 1)}

    def response(self, ex: CapturedExchange) -> tuple[dict[str, Any] | None, float | None]:
        status = ex.status
        if status is None:
            return None, None
        decoder = _Decoder(_header(ex.response_headers, "content-encoding"), MAX_DECODED_BYTES)
        chunks: list[tuple[float | None, bytes]] = []
        last_at: float | None = None
        for at_ms, chunk in ex.response_chunks:
            last_at = at_ms
            out = decoder.feed(chunk)
            if out:
                chunks.append((at_ms, out))
        tail = decoder.flush()
        if tail:
            chunks.append((last_at, tail))
        message: dict[str, Any] | None = None
        error: Any = None
        first_token: float | None = None
        if decoder.failed or not decoder.complete:
            self.truncated = True
        encoding = _clean(_header(ex.response_headers, "content-encoding") or "")[:64]
        if decoder.failed:
            error = {"type": "undecodable_response", "message": f"unsupported content-encoding {encoding!r}"}
            return self.shape_response(None, error, status), None
        if not chunks and any(chunk for _, chunk in ex.response_chunks):
            error = {"type": "undecodable_response", "message": f"corrupt {encoding!r} body"}
            return self.shape_response(None, error, status), None
        content_type = (_header(ex.response_headers, "content-type") or "").lower()
        head = b"".join(c for _, c in chunks[:64])[:64]
        if "text/event-stream" in content_type or ("json" not in content_type and _SSE_START.match(head)):
            acc = StreamAccumulator()
            for stamp, chunk in chunks:
                acc.feed(chunk, stamp)
            acc.close()
            first_token = acc.first_delta_ms
            if not acc.complete:
                self.truncated = True
            if acc.started or acc.events:
                message = acc.message
            if acc.error is not None:
                error = acc.error
            elif not acc.started and status >= 400:
                error = self.http_error(b"".join(c for _, c in chunks), "http_error")
        else:
            body = b"".join(c for _, c in chunks)
            parsed, whole = _parse_json(body) if _JSON_START.match(body[:64]) else (None, False)
            if parsed is not None and not whole:
                self.truncated = True
            if isinstance(parsed, dict) and (parsed.get("type") == "error" or ("error" in parsed and status >= 400)):
                inner = parsed.get("error")
                error = dict(inner) if isinstance(inner, dict) else {"type": "error", "message": inner}
                if "request_id" in parsed and "request_id" not in error:
                    error["request_id"] = parsed["request_id"]
            elif isinstance(parsed, dict) and status < 400:
                message = parsed
            elif not body:
                if status >= 400:
                    error = {"type": "http_error", "message": ""}
                else:
                    self.truncated = True
            else:
                self.truncated = status < 400 or self.truncated
                error = self.http_error(body, "http_error" if status >= 400 else "unparsable_response")
        return self.shape_response(message, error, status), first_token

    def http_error(self, body: bytes, kind: str) -> dict[str, Any]:
        return {"type": kind, "message": self.preview_text(body, MAX_PREVIEW)}

    def shape_response(self, message: dict[str, Any] | None, error: Any, status: int) -> dict[str, Any]:
        msg = message or {}
        raw_content = msg.get("content")
        usage = msg.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        shaped_error = self.free(error) if error is not None else None

        def opt_text(key: str) -> str | None:
            value = msg.get(key)
            return self.text(value) if isinstance(value, str) else None

        content = self.redact_shaped({"content": self.content(raw_content, none_is_empty=True)})["content"]
        _cap_media(content)
        return {
            "id": opt_text("id"),
            "model": opt_text("model"),
            "stopReason": opt_text("stop_reason"),
            "stopSequence": opt_text("stop_sequence"),
            "content": content,
            "usage": {
                "inputTokens": _int_or_none(usage.get("input_tokens")),
                "outputTokens": _int_or_none(usage.get("output_tokens")),
                "cacheCreationInputTokens": _int_or_none(usage.get("cache_creation_input_tokens")),
                "cacheReadInputTokens": _int_or_none(usage.get("cache_read_input_tokens")),
            },
            "status": status if 100 <= status <= 599 else None,
            "error": shaped_error if isinstance(shaped_error, dict) or shaped_error is None else {"raw": shaped_error},
        }

    # --- opaque_http ---

    def opaque_event(self, ex: CapturedExchange, max_preview: int) -> dict[str, Any]:
        started, ended = _times(ex)
        status = ex.status if isinstance(ex.status, int) and 100 <= ex.status <= 599 else None
        response_body = ex.response_body
        entry = {
            "kind": "opaque_http",
            "startedAt": started,
            "endedAt": ended,
            "host": self.text(str(ex.host), 255),
            "method": _method(ex.method),
            "path": self.path(str(ex.path)),
            "status": status,
            "requestHeaders": self.headers(ex.request_headers),
            "responseHeaders": self.headers(ex.response_headers) if ex.status is not None else {},
            "requestBodyPreview": self.preview(
                ex.request_body, ex.request_headers, ex.request_truncated, ex.request_bytes, max_preview
            ),
            "responseBodyPreview": self.preview(
                response_body, ex.response_headers, ex.response_truncated, ex.response_bytes, max_preview
            ),
        }
        return {"kind": "opaque_http", "ts": started, "duration": ended - started, "entry": entry}

    def headers(self, headers: list[tuple[str, str]]) -> dict[str, str]:
        clean = [(_clean(str(name)), _clean(str(value))) for name, value in headers]
        out: dict[str, str] = {}
        for name, value in redact_headers(clean, self.counts):
            key = _clean(str(name)).lower()[:256]
            text = _clean(str(value))
            if key in out:
                out[key] = _cut(out[key] + ", " + text, MAX_HEADER_VALUE)
            elif len(out) < MAX_MAP_ENTRIES:
                out[key] = _cut(text, MAX_HEADER_VALUE)
        return out

    def path(self, path: str) -> str:
        base, sep, query = _clean(path).partition("?")
        out = self.text(base)
        if sep:
            out += "?" + self.query(query)
        return _cut(out, 2048)

    def query(self, query: str) -> str:
        fragment = ""
        if "#" in query:
            query, fragment = query.split("#", 1)
            fragment = "#" + self.text(fragment)
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            return self.text(query) + fragment
        shaped = []
        for key, value in pairs:
            redacted = self.free({key: value})  # one field at a time: keys are redacted too, and may change
            name, text = next(iter(redacted.items())) if isinstance(redacted, dict) and redacted else ("", "")
            shaped.append((str(name), text if isinstance(text, str) else ""))
        return urlencode(shaped, quote_via=quote, safe="[]:/,") + fragment

    def preview(
        self, body: bytes, headers: list[tuple[str, str]], truncated: bool, wire_bytes: int, limit: int
    ) -> str | None:
        if not body:
            return None
        encoding = _header(headers, "content-encoding")
        decoder = _Decoder(encoding, PREVIEW_DECODE_BYTES)
        decoded = decoder.feed(body) + decoder.flush()
        size = _count(wire_bytes, len(body))
        if decoder.failed:
            return f"<{size} bytes {_clean(encoding or '')[:32]}-encoded>"
        if not decoded:
            return f"<{size} bytes, corrupt {_clean(encoding or '')[:32]} data>"
        cut = truncated or not decoder.complete
        content_type = (_header(headers, "content-type") or "").lower()
        binary_type = content_type.startswith(_BINARY_TYPES) and not content_type.startswith("image/svg")
        if binary_type or any(hint in content_type for hint in _BINARY_HINTS):
            return f"<{size} bytes binary>"
        text = _as_text(decoded)
        if text is None:
            return f"<{size} bytes binary>"
        shaped: str | None = None
        if "json" in content_type or _JSON_START.match(decoded[:64]):
            parsed, whole = _parse_json(decoded)
            if parsed is not None:
                shaped = json.dumps(self.free(parsed), ensure_ascii=False, separators=(",", ":"))
                cut = cut or not whole
        elif "x-www-form-urlencoded" in content_type:
            shaped = self.query(text[:PREVIEW_WINDOW])
            cut = cut or len(text) > PREVIEW_WINDOW
        if shaped is None:
            shaped = self.text(text[:PREVIEW_WINDOW])
            cut = cut or len(text) > PREVIEW_WINDOW
        return _cut(shaped, limit, force_mark=cut)

    def preview_text(self, body: bytes, limit: int) -> str:
        text = _as_text(body)
        if text is None:
            return f"<{len(body)} bytes binary>"
        return _cut(self.text(text[:PREVIEW_WINDOW]), limit, force_mark=len(text) > PREVIEW_WINDOW)


# --- body decoding ------------------------------------------------------------------------------------------------


class _Stage:
    """One content-coding undone incrementally, with bounded output per call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._zlib: Any = None
        self._pending = b""  # deflate: bytes held until the zlib/raw choice can be made
        self._brotli: Any = None
        self._zstd: Any = None
        if name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(wbits=47)
        elif name == "br":
            if _brotli is None:
                raise _Unsupported(name)
            self._brotli = _brotli.Decompressor()
        elif name == "zstd":
            if _zstd is None:
                raise _Unsupported(name)
            self._zstd = _zstd.ZstdDecompressor().decompressobj(read_across_frames=True)
        elif name != "deflate":
            raise _Unsupported(name)

    def finished(self) -> bool:
        """Whether the coded stream reached its proper end (unknown for zstd: assumed)."""
        if self._zlib is not None:
            return bool(self._zlib.eof)
        if self._brotli is not None:
            return bool(self._brotli.is_finished())
        return self._zstd is not None or not self._pending

    def feed(self, data: bytes, budget: int) -> bytes:
        """Decode `data`, returning at most about `budget` bytes (more input is dropped once it is spent)."""
        if self.name == "deflate" and self._zlib is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            first, second = self._pending[0], self._pending[1]
            zlib_header = (first & 0x0F) == 8 and ((first << 8) | second) % 31 == 0
            self._zlib = zlib.decompressobj(wbits=15 if zlib_header else -15)
            data, self._pending = self._pending, b""
        if self._zlib is not None:
            out = self._inflate(data, budget)
        elif self._brotli is not None:
            out = self._unbrotli(data, budget)
        else:
            out = self._unzstd(data, budget)
        return out

    def _inflate(self, data: bytes, budget: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while data and total <= budget:
            part = self._zlib.decompress(data, budget - total + 1)
            parts.append(part)
            total += len(part)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                rest = self._zlib.unused_data
                if not rest.strip(b"\0") or self.name == "deflate":
                    break
                self._zlib = zlib.decompressobj(wbits=47)  # a further gzip member
                data = rest
        return b"".join(parts)

    def _unbrotli(self, data: bytes, budget: int) -> bytes:
        parts = [self._brotli.process(data, output_buffer_limit=max(budget + 1, 1))]
        total = len(parts[0])
        while total <= budget and not self._brotli.can_accept_more_data():
            part = self._brotli.process(b"", output_buffer_limit=budget - total + 1)
            if not part:
                break
            parts.append(part)
            total += len(part)
        return b"".join(parts)

    def _unzstd(self, data: bytes, budget: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        for start in range(0, len(data), 256):  # a 256-byte slice inflates to at most ~8 MiB
            part = self._zstd.decompress(data[start : start + 256])
            parts.append(part)
            total += len(part)
            if total > budget:
                break
        return b"".join(parts)


class _Unsupported(Exception):
    pass


class _Decoder:
    """A Content-Encoding chain undone chunk by chunk, output capped at `limit` bytes."""

    def __init__(self, header: str | None, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.failed = False  # an unsupported coding: nothing is decoded
        self.complete = True  # False: decoding broke off (corrupt or cut data, or the cap) — the output is partial
        self.stages: list[_Stage] = []
        self._held: list[bytes] | None = []  # raw input kept until the first output, to replay if the header lied
        self._held_size = 0
        self._identity = False
        names = [n.strip().lower() for n in (header or "").split(",")]
        try:
            self.stages = [_Stage(n) for n in reversed(names) if n and n != "identity"]
        except _Unsupported:
            self.failed = True

    def feed(self, chunk: bytes) -> bytes:
        if self.failed or not self.complete or not chunk:
            return b""
        if not self.stages or self._identity:
            return self._take(chunk)
        if self._held is not None:
            self._held.append(chunk)
            self._held_size += len(chunk)
            if self._held_size > 1024 * 1024:
                self._held = None
        data = chunk
        try:
            for stage in self.stages:
                data = stage.feed(data, self.limit - self.total)
        except Exception:
            held = b"".join(self._held) if self._held is not None else b""
            if self.total == 0 and held and _looks_plain(held[:64]):
                self._identity = True  # the header lied: the bytes were never encoded (or were decoded already)
                self._held = None
                return self._take(held)
            self.complete = False
            return b""
        if data:
            self._held = None
        return self._take(data)

    def flush(self) -> bytes:
        """End of input: a coding whose stream did not finish (a cut gzip body, say) marks the output partial."""
        if self.stages and not self._identity and not self.failed and self.total and not self.stages[0].finished():
            self.complete = False
        return b""

    def _take(self, data: bytes) -> bytes:
        room = self.limit - self.total
        if len(data) > room:
            data = data[:room]
            self.complete = False
        self.total += len(data)
        return data


def _looks_plain(raw: bytes) -> bool:
    return bool(_JSON_START.match(raw) or _SSE_START.match(raw))


def _decode_whole(body: bytes, encoding: str | None) -> tuple[bytes, bool]:
    decoder = _Decoder(encoding, MAX_DECODED_BYTES)
    out = decoder.feed(body) + decoder.flush()
    return out, decoder.complete and not decoder.failed


# --- JSON, text and value helpers -----------------------------------------------------------------------------------


def _nan_to_none(_: str) -> None:
    return None


def _parse_json(body: bytes) -> tuple[Any, bool]:
    """`(value, whole)`: the parsed body, or a partial parse of a cut body (whole False), or `(None, False)`."""
    if not body:
        return None, False
    try:
        return json.loads(body, parse_constant=_nan_to_none), True
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
        try:
            return json.loads(text, parse_constant=_nan_to_none), True
        except (ValueError, RecursionError):
            pass
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
    if _pydantic_core is None:
        return None, False
    try:
        return _pydantic_core.from_json(text, allow_partial="trailing-strings"), False
    except Exception:
        return None, False


def _as_text(data: bytes) -> str | None:
    """UTF-8 text (a multibyte character cut at the end is fine), or None for binary data."""
    sample = data[:PREVIEW_DECODE_BYTES]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return None
    probe = text[:4096]
    controls = sum(1 for ch in probe if ch < " " and ch not in "\t\n\r\f\b")
    if "\0" in probe or controls * 10 > len(probe):
        return None
    return text


def _clean(text: str) -> str:
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _sanitize(value: Any, depth: int) -> Any:
    """A JSON-safe copy: lone surrogates, non-finite floats, excess depth and bulk binary payloads handled."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        if depth > MAX_DEPTH:
            return f"[nested deeper than {MAX_DEPTH} levels]"
        return [_sanitize(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            return f"[nested deeper than {MAX_DEPTH} levels]"
        kind = value.get("type")
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _clean(key) if isinstance(key, str) else str(key)
            bulky = (key == "data" and kind in ("base64", "redacted_thinking")) or (
                key == "signature" and kind == "thinking"
            )
            if bulky and isinstance(item, str):
                out[name] = f"[omitted: {len(item)} chars]"
            else:
                out[name] = _sanitize(item, depth + 1)
        return out
    return _clean(str(value))


def _cap_media(blocks: Any) -> None:
    """Image media types stay within the validator's 255 characters (after redaction, which may lengthen them)."""
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict):
            if block.get("type") == "image" and isinstance(block.get("mediaType"), str):
                block["mediaType"] = block["mediaType"][:255]
            elif block.get("type") == "tool_result":
                _cap_media(block.get("content"))


def _cut(text: str, limit: int, *, force_mark: bool = False) -> str:
    if len(text) <= limit and not force_mark:
        return text
    keep = max(0, limit - len(TRUNCATED_MARK))
    return text[: min(keep, len(text))] + TRUNCATED_MARK


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if str(key).lower() == name:
            return str(value)
    return None


def _int_or_none(value: Any) -> int | None:
    if type(value) is int and 0 <= value <= MAX_SAFE_INT:
        return value
    return None


def _number_or_none(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else None


def _ms(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return round(min(float(value), float(MAX_SAFE_INT)), 1)


def _count(captured: Any, copied: int) -> int:
    value = captured if type(captured) is int else 0
    return max(0, min(max(value, copied), MAX_SAFE_INT))


def _times(ex: CapturedExchange) -> tuple[int, int]:
    started = _epoch(ex.started_at_ms)
    ended_raw = ex.ended_at_ms
    if ended_raw is None or isinstance(ended_raw, bool) or not isinstance(ended_raw, (int, float)):
        offsets = [at for at, _ in ex.response_chunks if isinstance(at, (int, float)) and math.isfinite(at)]
        ended = started + int(max(offsets, default=0))
    else:
        ended = _epoch(ended_raw)
    ended = min(max(ended, started), started + MAX_DURATION_MS, TS_MAX)
    return started, ended


def _epoch(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return TS_MIN
    return min(max(int(value), TS_MIN), TS_MAX)


def _method(method: Any) -> str:
    text = str(method).upper()
    return text if _METHOD.fullmatch(text) else (re.sub("[^A-Z]", "", text)[:16] or "UNKNOWN")


def _safe_method(ex: CapturedExchange) -> str:
    try:
        return _method(ex.method)
    except Exception:
        return "UNKNOWN"


def _size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _shrink(event: dict[str, Any], entry: dict[str, Any]) -> None:
    """Cut long strings, then drop lists, until the event fits MAX_EVENT_BYTES (all strings are already redacted)."""
    for cap in _SHRINK_CAPS:
        for key in ("request", "response"):
            if entry.get(key) is not None:
                entry[key] = _cap_strings(entry[key], cap)
        if _size(event) <= MAX_EVENT_BYTES:
            return
    steps: list[Callable[[], None]] = [
        lambda: entry["request"].__setitem__("tools", []),
        lambda: entry["request"].__setitem__("messages", entry["request"]["messages"][-1:]),
        lambda: entry["request"].__setitem__("system", []),
        lambda: entry["request"].__setitem__("messages", []),
    ]
    if entry.get("response") is not None:
        steps.append(lambda: entry["response"].__setitem__("content", []))
    for step in steps:
        step()
        if _size(event) <= MAX_EVENT_BYTES:
            return


def _cap_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        if len(value) > cap:
            return value[:cap] + f"…[truncated {len(value) - cap} chars]"
        return value
    if isinstance(value, list):
        return [_cap_strings(item, cap) for item in value]
    if isinstance(value, dict):
        return {key: _cap_strings(item, cap) for key, item in value.items()}
    return value


def _bare_event(ex: CapturedExchange) -> dict[str, Any]:
    """The last-resort event: timings, host, method and status only, with no path, headers or bodies."""
    try:
        started, ended = _times(ex)
    except Exception:
        started = ended = TS_MIN
    try:
        status = ex.status if type(ex.status) is int and 100 <= ex.status <= 599 else None
        host = _cut(redact_text(_clean(str(ex.host)), Redactions()), 255)
    except Exception:
        status, host = None, ""
    entry = {
        "kind": "opaque_http",
        "startedAt": started,
        "endedAt": ended,
        "host": host,
        "method": _safe_method(ex),
        "path": "",
        "status": status,
        "requestHeaders": {},
        "responseHeaders": {},
        "requestBodyPreview": None,
        "responseBodyPreview": None,
    }
    return {"kind": "opaque_http", "ts": started, "duration": ended - started, "entry": entry}
