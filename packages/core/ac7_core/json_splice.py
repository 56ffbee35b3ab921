"""Rewrite a JSON document in place, touching only the text of the values that changed.

An operator's hand-formatted config keeps its layout: rotating one slot's token re-renders that slot's object and
leaves every other byte of the file as it was. Unchanged values are copied from the original text; changed or new
values are rendered with two-space indentation aligned to where they sit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


class DuplicateKeyError(ValueError):
    def __init__(self, key: str, line: int, column: int) -> None:
        super().__init__(f"duplicate key {json.dumps(key)} at line {line} column {column}")
        self.key = key


@dataclass
class _Span:
    start: int
    end: int
    members: dict[str, _Span] = field(default_factory=dict)
    items: list[_Span] = field(default_factory=list)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _parse(text: str, pos: int) -> _Span:
    """Locate every value's span. `text` must already be valid JSON (json.loads succeeded)."""
    pos = _skip_ws(text, pos)
    start = pos
    if text[pos] == "{":
        span = _Span(start, start)
        pos = _skip_ws(text, pos + 1)
        if text[pos] == "}":
            span.end = pos + 1
            return span
        while True:
            key_pos = pos
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            if key in span.members:
                raise DuplicateKeyError(key, *_line_col(text, key_pos))
            pos = _skip_ws(text, pos) + 1  # past ':'
            child = _parse(text, pos)
            span.members[key] = child
            pos = _skip_ws(text, child.end)
            if text[pos] == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            span.end = pos + 1  # past '}'
            return span
    if text[pos] == "[":
        span = _Span(start, start)
        pos = _skip_ws(text, pos + 1)
        if text[pos] == "]":
            span.end = pos + 1
            return span
        while True:
            child = _parse(text, pos)
            span.items.append(child)
            pos = _skip_ws(text, child.end)
            if text[pos] == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            span.end = pos + 1
            return span
    _, end = _DECODER.raw_decode(text, pos)
    return _Span(start, end)


def check_duplicate_keys(text: str) -> None:
    """Raise DuplicateKeyError if any object in the (valid) JSON `text` repeats a key."""
    _parse(text, 0)


def _same(a: Any, b: Any) -> bool:
    # json.dumps distinguishes what == does not (True vs 1, 1 vs 1.0, key order).
    return json.dumps(a) == json.dumps(b)


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    end = line_start
    while end < len(text) and text[end] in " \t":
        end += 1
    return text[line_start:end]


def _child_indent(text: str, span: _Span, indent: str) -> str:
    children = list(span.members.values()) or span.items
    if children and "\n" in text[span.start : children[0].start]:
        return _line_indent(text, children[0].start)
    return indent + "  "


def _dump(value: Any, indent: str) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


def _render(text: str, span: _Span, old: Any, new: Any) -> str:
    if _same(old, new):
        return text[span.start : span.end]
    indent = _line_indent(text, span.start)
    if isinstance(old, dict) and isinstance(new, dict) and list(old) == list(new):
        return _splice(text, span, [(span.members[k], old[k], new[k]) for k in new])
    inner = _child_indent(text, span, indent)
    if isinstance(old, dict) and isinstance(new, dict):
        members = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: "
            + (_render(text, span.members[k], old[k], v) if k in old else _dump(v, inner))
            for k, v in new.items()
        ]
        return "{\n" + ",\n".join(members) + "\n" + indent + "}" if members else "{}"
    if isinstance(old, list) and isinstance(new, list):
        return _render_list(text, span, old, new, indent, inner)
    return _dump(new, indent)


def _splice(text: str, span: _Span, parts: list[tuple[_Span, Any, Any]]) -> str:
    out: list[str] = []
    cursor = span.start
    for child, old, new in parts:
        out.append(text[cursor : child.start])
        out.append(_render(text, child, old, new))
        cursor = child.end
    out.append(text[cursor : span.end])
    return "".join(out)


def _identity(value: Any) -> Any:
    """What makes a list item "the same entry" after an edit: a slot's name, say."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"]
    return None


def _list_plan(old: list[Any], new: list[Any]) -> list[int | None]:
    """For each new item, the old item it continues (equal first, else same identity), or None if it is new."""
    used: set[int] = set()
    plan: list[int | None] = []
    next_equal = 0
    for value in new:
        match = next((i for i in range(next_equal, len(old)) if i not in used and _same(old[i], value)), None)
        if match is not None:
            next_equal = match + 1
        else:
            ident = _identity(value)
            if ident is not None:
                match = next((i for i in range(len(old)) if i not in used and _identity(old[i]) == ident), None)
        if match is not None:
            used.add(match)
        plan.append(match)
    return plan


def _render_list(text: str, span: _Span, old: list[Any], new: list[Any], indent: str, inner: str) -> str:
    plan = _list_plan(old, new)
    if plan == list(range(len(old))):
        return _splice(text, span, list(zip(span.items, old, new, strict=True)))
    rendered = [
        _dump(value, inner) if i is None else _render(text, span.items[i], old[i], value)
        for i, value in zip(plan, new, strict=True)
    ]
    if not rendered:
        return "[]"
    return "[\n" + ",\n".join(inner + r for r in rendered) + "\n" + indent + "]"


def rewrite(text: str, new: Any) -> str:
    """`text` (valid JSON) re-rendered to hold `new`, with the text of unchanged values untouched."""
    old = json.loads(text)
    root = _parse(text, 0)
    return text[: root.start] + _render(text, root, old, new) + text[root.end :]


def render_new(value: Any) -> str:
    """The canonical text of a freshly created document."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
