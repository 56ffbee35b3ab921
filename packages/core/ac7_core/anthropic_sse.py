"""Server-sent events, and reassembly of an Anthropic Messages stream into the message a non-streamed call returns.

`SseParser` is an incremental parser of the WHATWG `text/event-stream` format: bytes in (any chunking — a chunk may
end inside a line, inside a `\\r\\n` pair or inside a UTF-8 multibyte character), `SseEvent`s out. Lines end with
`\\n`, `\\r\\n` or a lone `\\r`; they are split as bytes and decoded only once complete (UTF-8, invalid bytes → U+FFFD,
a leading BOM dropped), so a split multibyte character is never mangled. `:` lines are comments; a line without a
colon is a field with an empty value; one space after the colon is dropped; several `data:` lines join with `\\n`; a
blank line dispatches the event (none when it has no `data`); `event:` names it (default `message`); `id:` (without
NUL) persists across events and `retry:` takes ASCII digits only. At the end of the stream an event that never got
its blank line is dropped, as the spec and the official SDK both do.

`StreamAccumulator` feeds on those events (or raw chunks) and rebuilds the `Message` exactly as the official SDK's
stream accumulator does, in the non-streamed wire shape (snake_case keys):

- `message_start` seeds id, model, role, usage, stop fields (a second `message_start` is ignored).
- `content_block_start` opens the block at `index` from a copy of `content_block`; every block type is kept as sent
  (`text`, `tool_use`, `thinking`, `redacted_thinking`, `server_tool_use`, `web_search_tool_result`, future types…).
- `content_block_delta`: `text_delta` appends to a text block; `thinking_delta` to a thinking block;
  `input_json_delta` collects `partial_json` for any other block (tool_use, server_tool_use, …); `citations_delta`
  appends the citation to the text block's `citations` list (kept, as the SDK does; the trace entry has no room for
  them); `signature_delta` is dropped (signatures are opaque and never traced); any other delta type is ignored.
  A delta for an index with no open block is ignored.
- The collected JSON is parsed when the message is built: nothing collected → the block keeps the `input` it started
  with (normally `{}`); valid JSON → `input` is the parsed value; otherwise (a stream cut inside a tool call, or a
  model emitting bad JSON) **`input` is the raw concatenated string** and `unparsed_inputs` counts it. The block keeps
  its id and name so it still pairs with the `tool_result` of the next request; a string is unambiguous because a
  real tool input is always an object.
- `message_delta`: every key of `delta` is copied onto the message (stop_reason, stop_sequence, …); `usage` merges
  key by key over message_start's, non-null values only (the counts are cumulative totals, so later values win, and a
  count absent or null in the delta keeps message_start's — e.g. cache_read_input_tokens).
- `message_stop` sets `complete`; `ping` and unknown event types are ignored; `error` stores `payload["error"]`
  (e.g. `{"type": "overloaded_error", "message": "Overloaded"}`) in `error`.
- Events arriving before `message_start` are tolerated (the SDK would raise): the message starts from a skeleton with
  null id/model, so a stream that carries only an `error` event still yields a message.

Timing: `feed(chunk, at_ms)` stamps each event it completes with `at_ms`; `first_delta_ms` is the stamp of the first
`content_block_delta` of any delta type — the arrival time of the chunk that *completed* that event, i.e. the moment
a client could first have shown a token. Decoding cost is linear: text and JSON pieces are joined once, in `message`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # the `event:` name, "message" when none was given
    data: str  # the `data:` lines joined with "\n"
    id: str | None = None  # the last event id seen so far (it persists across events, per the spec)
    retry: int | None = None  # a `retry:` given inside this event


class SseParser:
    """Incremental `text/event-stream` parser: `feed(bytes) -> [SseEvent]`, then `close()` at the end of the body."""

    __slots__ = ("_after_cr", "_buf", "_data", "_event", "_first_line", "_last_id", "_retry", "dropped_partial")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._after_cr = False  # the previous chunk ended with "\r": a "\n" opening the next one belongs to it
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] = []
        self._retry: int | None = None
        self._last_id: str | None = None
        self.dropped_partial = False  # close() found an unterminated line or an undispatched event

    def feed(self, chunk: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        if not chunk:
            return events
        buf = self._buf
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return events
        scan = len(buf)  # what is already buffered holds no line ending (complete lines are always consumed)
        buf += chunk
        pos = 0
        match = _EOL.search(buf, scan)
        while match is not None:
            self._line(bytes(buf[pos : match.start()]), events)
            pos = match.end()
            if pos == len(buf) and buf[pos - 1] == 0x0D:  # a lone "\r" at the very end: maybe half of "\r\n"
                self._after_cr = True
            match = _EOL.search(buf, pos)
        if pos:
            del buf[:pos]
        return events

    def close(self) -> list[SseEvent]:
        """End of the body: an unterminated line or an event without its blank line is dropped (never dispatched)."""
        self.dropped_partial = bool(self._buf) or bool(self._data)
        self._buf.clear()
        self._data = []
        self._event = None
        self._retry = None
        return []

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data), self._last_id, self._retry))
            self._event = None
            self._data = []
            self._retry = None
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)


class _Block:
    """One content block being rebuilt: its start payload plus the pieces its deltas bring."""

    __slots__ = ("base", "citations", "json_parts", "text_parts", "thinking_parts")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.text_parts: list[str] = []
        self.thinking_parts: list[str] = []
        self.json_parts: list[str] = []
        self.citations: list[Any] | None = None

    def build(self) -> tuple[dict[str, Any], bool]:
        """The block as a non-streamed response carries it, and whether its tool input failed to parse."""
        out = dict(self.base)
        kind = out.get("type")
        if kind == "text":
            start = out.get("text")
            out["text"] = (start if isinstance(start, str) else "") + "".join(self.text_parts)
            if self.citations is not None:
                earlier = out.get("citations")
                out["citations"] = (list(earlier) if isinstance(earlier, list) else []) + self.citations
        elif kind == "thinking":
            start = out.get("thinking")
            out["thinking"] = (start if isinstance(start, str) else "") + "".join(self.thinking_parts)
        unparsed = False
        if self.json_parts:
            raw = "".join(self.json_parts)
            if raw:
                try:
                    out["input"] = json.loads(raw)
                except (ValueError, RecursionError):
                    out["input"] = raw
                    unparsed = True
        return out, unparsed


class StreamAccumulator:
    """Rebuilds one Anthropic Messages response from its SSE stream (see the module docstring for the rules)."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self._message: dict[str, Any] = {
            "id": None,
            "type": "message",
            "role": "assistant",
            "model": None,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {},
        }
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self.started = False  # message_start seen
        self.complete = False  # message_stop seen
        self.error: dict[str, Any] | None = None  # the payload of an `error` event
        self.first_delta_ms: float | None = None
        self.events = 0  # SSE events dispatched
        self.ignored_events = 0  # events whose data was not a JSON object, or that did not fit the stream's state
        self.closed = False
        self._built: tuple[list[dict[str, Any]], int] | None = None  # content + unparsed count, until the next event

    # --- input ----------------------------------------------------------------------------------------------------

    def feed(self, chunk: bytes, at_ms: float | None = None) -> None:
        """Feed raw body bytes (already content-decoded); `at_ms` is when this chunk arrived."""
        for event in self._parser.feed(chunk):
            self.feed_event(event, at_ms)

    def close(self) -> None:
        """The body ended; an unterminated trailing event is dropped (`dropped_partial` tells)."""
        self._parser.close()
        self.closed = True

    @property
    def dropped_partial(self) -> bool:
        return self._parser.dropped_partial

    def feed_event(self, event: SseEvent, at_ms: float | None = None) -> None:
        self.events += 1
        try:
            payload = json.loads(event.data)
        except (ValueError, RecursionError):
            self.ignored_events += 1
            return
        if not isinstance(payload, dict):
            self.ignored_events += 1
            return
        self.feed_payload(payload, event.event, at_ms)

    def feed_payload(self, payload: dict[str, Any], event_name: str = "message", at_ms: float | None = None) -> None:
        """Apply one decoded event payload; its kind is `payload["type"]`, else the SSE event name."""
        self._built = None
        kind = payload.get("type")
        if not isinstance(kind, str):
            kind = event_name
        if kind == "content_block_delta":
            if at_ms is not None and self.first_delta_ms is None:
                self.first_delta_ms = at_ms
            self._delta(payload)
        elif kind == "content_block_start":
            index = _index(payload)
            block = payload.get("content_block")
            if index is None or not isinstance(block, dict):
                self.ignored_events += 1
                return
            self._blocks[index] = _Block(dict(block))
        elif kind in ("content_block_stop", "ping"):
            pass
        elif kind == "message_start":
            self._start(payload)
        elif kind == "message_delta":
            self._message_delta(payload)
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            error = payload.get("error")
            self.error = dict(error) if isinstance(error, dict) else {"type": "error", "message": str(error)}
        else:
            self.ignored_events += 1

    # --- output ---------------------------------------------------------------------------------------------------

    @property
    def message(self) -> dict[str, Any]:
        """The reassembled message in the non-streamed wire shape (a new top-level dict on every call; the blocks
        are shared between calls until the next event, so treat them as read-only)."""
        out = dict(self._message)
        out["content"] = list(self._build()[0])
        out["usage"] = dict(self._usage)
        return out

    @property
    def unparsed_inputs(self) -> int:
        """How many blocks ended with tool-input JSON that did not parse (their `input` is the raw string)."""
        return self._build()[1]

    def _build(self) -> tuple[list[dict[str, Any]], int]:
        if self._built is None:
            content: list[dict[str, Any]] = []
            unparsed = 0
            for _, block in sorted(self._blocks.items()):
                built, bad = block.build()
                content.append(built)
                unparsed += bad
            self._built = (content, unparsed)
        return self._built

    # --- event handlers -------------------------------------------------------------------------------------------

    def _start(self, payload: dict[str, Any]) -> None:
        message = payload.get("message")
        if self.started or not isinstance(message, dict):
            self.ignored_events += 1
            return
        self.started = True
        for key, value in message.items():
            if key == "usage":
                if isinstance(value, dict):
                    self._usage = {**dict(value), **self._usage}
            elif key == "content":
                if isinstance(value, list):  # never seen in practice: seed blocks positionally, as the SDK would
                    for i, block in enumerate(value):
                        if isinstance(block, dict) and i not in self._blocks:
                            self._blocks[i] = _Block(dict(block))
            else:
                self._message[key] = value

    def _delta(self, payload: dict[str, Any]) -> None:
        index = _index(payload)
        delta = payload.get("delta")
        block = self._blocks.get(index) if index is not None else None
        if block is None or not isinstance(delta, dict):
            self.ignored_events += 1
            return
        kind = delta.get("type")
        block_type = block.base.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if block_type == "text" and isinstance(text, str):
                block.text_parts.append(text)
        elif kind == "input_json_delta":
            part = delta.get("partial_json")
            if block_type not in ("text", "thinking") and isinstance(part, str):
                block.json_parts.append(part)
        elif kind == "thinking_delta":
            thinking = delta.get("thinking")
            if block_type == "thinking" and isinstance(thinking, str):
                block.thinking_parts.append(thinking)
        elif kind == "citations_delta" and block_type == "text" and "citation" in delta:
            if block.citations is None:
                block.citations = []
            block.citations.append(delta["citation"])
        # signature_delta: dropped on purpose; unknown delta types: nothing to merge them into.

    def _message_delta(self, payload: dict[str, Any]) -> None:
        delta = payload.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key not in ("content", "usage", "type"):
                    self._message[key] = value
        usage = payload.get("usage")
        if isinstance(usage, dict):
            for key, value in usage.items():
                if value is not None:
                    self._usage[key] = value


def _index(payload: dict[str, Any]) -> int | None:
    index = payload.get("index")
    if type(index) is int and index >= 0:
        return index
    return None


def reassemble(chunks: Iterable[tuple[float | None, bytes]]) -> StreamAccumulator:
    """Run a whole captured body through a fresh accumulator: `(arrival ms or None, bytes)` pairs, then close."""
    acc = StreamAccumulator()
    for at_ms, chunk in chunks:
        acc.feed(chunk, at_ms)
    acc.close()
    return acc
