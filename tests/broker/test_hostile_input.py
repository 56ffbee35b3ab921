"""Hostile input against every broker endpoint: always a documented 4xx with the JSON error shape, never a 5xx.

Each endpoint gets its own fresh broker and a table of hostile requests (malformed, mistyped, oversized, oddly
encoded, wrongly routed). After the barrage the broker must still be healthy and hold exactly the data stored
before it: a rejected request stores nothing.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from activity_samples import json_body, llm_exchange, opaque_http
from broker_harness import Running
from yarl import URL

MIB = 1024 * 1024
TWO_MIB = 2 * MIB
JSON_CT = {"Content-Type": "application/json"}
CODE_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Case:
    label: str
    method: str
    path: str  # already percent-encoded; sent verbatim
    expect: frozenset[int]
    body: bytes | None = None
    chunked: bool = False
    who: str | None = None  # bearer identity; None: no Authorization header
    headers: dict[str, str] = field(default_factory=dict)
    json_error: bool = True  # every 4xx answer must be {"error", "code"}


@dataclass(frozen=True)
class Endpoint:
    key: str
    method: str
    path: str
    who: str | None  # a caller entitled to use it
    ok: int  # the answer to a well-formed request (or one whose body the endpoint ignores)
    body: str  # "json": reads a JSON object; "none": takes no body; "get": a GET
    name_path: str | None = None  # the path with a {name} segment, for hostile slot names


ENDPOINTS = [
    Endpoint("healthz", "GET", "/healthz", None, 200, "get"),
    Endpoint("session_totp", "POST", "/session/totp", None, 401, "json"),
    Endpoint("session", "GET", "/session", "alice", 200, "get"),
    Endpoint("logout", "POST", "/session/logout", "alice", 204, "none"),
    Endpoint("briefing", "GET", "/briefing", "alice", 200, "get"),
    Endpoint("roster", "GET", "/roster", "alice", 200, "get"),
    Endpoint("push", "POST", "/push", "alice", 201, "json"),
    Endpoint("subscribe", "GET", "/subscribe?name=alice", "alice", 400, "get"),  # 400: not an Upgrade request
    Endpoint("history", "GET", "/history", "alice", 200, "get"),
    Endpoint("busy", "POST", "/presence/busy", "ivy", 204, "json"),
    Endpoint("activity_upload", "POST", "/agents/ivy/activity", "ivy", 201, "json", "/agents/{name}/activity"),
    Endpoint("activity_list", "GET", "/agents/ivy/activity", "alice", 200, "get", "/agents/{name}/activity"),
    Endpoint(
        "activity_stream", "GET", "/agents/ivy/activity/stream", "alice", 400, "get", "/agents/{name}/activity/stream"
    ),
    Endpoint("rotate_token", "POST", "/slots/dan/rotate-token", "alice", 200, "none", "/slots/{name}/rotate-token"),
    Endpoint("enroll_totp", "POST", "/slots/hana/totp", "alice", 200, "none", "/slots/{name}/totp"),
]


def S(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII-escaped: "\ud800" travels as the JSON escape \ud800


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HUGE_INT = "1" * 5000  # beyond Python's default int-from-string limit (4300 digits)
DEEP = "[" * 100_000

# Bodies that are wrong for every JSON endpoint, whatever its schema.
MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated", b"{"),
    ("close brace", b"}"),
    ("single quotes", b"{'a': 1}"),
    ("trailing comma", b'{"a": 1,}'),
    ("trailing garbage", b'{"a": 1} trailing'),
    ("NUL byte", b"\x00"),
    ("array", b"[]"),
    ("array of objects", b'[{"body": "x"}]'),
    ("string", b'"hello"'),
    ("number", b"42"),
    ("null", b"null"),
    ("true", b"true"),
    ("NaN", b"NaN"),
    ("huge integer", HUGE_INT.encode()),
    ("100000 nested arrays", DEEP.encode()),
    ("100000 nested, closed", nested(100_000).encode()),
    ("non-UTF-8 bytes", b'{"a": "\xff\xfe\xfd"}'),
    ("bad UTF-8 sequence", b'{"a": "\xc3\x28"}'),
    ("UTF-8 encoded surrogate", b'{"a": "\xed\xa0\x80"}'),
    ("overlong UTF-8", b'{"a": "\xc0\xaf"}'),
]


def wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return 7
    if value is None:
        return []
    if isinstance(value, dict):
        return []
    return {}


def push_bodies() -> list[tuple[str, bytes, frozenset[int]]]:
    bad = S(400)
    cases: list[tuple[str, bytes, frozenset[int]]] = []
    wrong = {
        "to": [1, 1.5, True, [], {}, "", "a" * 2000, "\u0000", "🚀", "\u202eivy", "ivy\n", "\ud800", ["ivy"]],
        "title": [1, True, [], {}, "x" * 257, "\ud800", "ok\udfff"],
        "body": [None, 1, True, [], {}, "", "x" * 65537, "\ud800", "a\udc00b", [0] * 10_000],
        "level": [None, 1, [], {}, "INFO", "bogus", "info\u0000", "\u202einfo"],
        "data": [[], "x", 1, True, 1.5, {"\ud800": 1}, {"k": "\udfff"}, {f"k{i}": 0 for i in range(10_000)}],
    }
    for key, values in wrong.items():
        for value in values:
            body = {"body": "x", key: value}
            cases.append((f"{key}={ascii(value)[:40]}", dumps(body), bad))
    cases += [
        ("missing body", dumps({"title": "t"}), bad),
        ("from field", dumps({"body": "x", "from": "mike"}), bad),
        ("id field", dumps({"body": "x", "id": "01a20121-d750-741f-8099-8464643ca393"}), bad),
        ("ts field", dumps({"body": "x", "ts": 1}), bad),
        ("data NaN", b'{"body": "x", "data": {"n": NaN}}', bad),
        ("data Infinity", b'{"body": "x", "data": {"n": Infinity}}', bad),
        ("data -Infinity", b'{"body": "x", "data": {"n": [-Infinity]}}', bad),
        ("data 1e999", b'{"body": "x", "data": {"n": 1e999}}', bad),
        ("data huge integer", f'{{"body": "x", "data": {{"n": {HUGE_INT}}}}}'.encode(), bad),
        ("body huge integer", f'{{"body": {HUGE_INT}}}'.encode(), bad),
        ("data nested 100000", f'{{"body": "x", "data": {{"a": {nested(100_000)}}}}}'.encode(), bad),
        ("data over 64 KiB", dumps({"body": "x", "data": {"k": "v" * 70_000}}), bad),
    ]
    return cases


def totp_bodies() -> list[tuple[str, bytes, frozenset[int]]]:
    bad = S(400)
    cases: list[tuple[str, bytes, frozenset[int]]] = []
    codes = [None, 123456, 1.5, True, [], {}, "12345", "1234567", "abcdef", "123456\n", " 123456"]
    codes.append("\uff11\uff12\uff13\uff14\uff15\uff16")  # fullwidth digits
    codes += ["\u0000" * 6, "\ud800" * 6, "12345\u0000", [0] * 10_000]
    for code in codes:
        cases.append((f"code={ascii(code)[:40]}", dumps({"code": code, "slot": "alice"}), bad))
    for slot in [1, True, [], {}, "", "a" * 2000, "\u0000", "🚀", "alice\n", "\ud800", "../alice"]:
        cases.append((f"slot={ascii(slot)[:40]}", dumps({"code": "000000", "slot": slot}), bad))
    cases += [
        ("missing code", dumps({"slot": "alice"}), bad),
        ("extra field", dumps({"code": "000000", "slot": "alice", "admin": True}), bad),
        ("code huge integer", f'{{"code": {HUGE_INT}}}'.encode(), bad),
        ("code NaN", b'{"code": NaN}', bad),
        # Well-formed but wrong codes: refused as invalid (or, once locked out, rate limited).
        ("wrong code", dumps({"code": "000000", "slot": "alice"}), S(401, 429)),
        ("wrong code, unknown slot", dumps({"code": "000000", "slot": "nobody"}), S(401, 429)),
        ("wrong code, unenrolled slot", dumps({"code": "000000", "slot": "dan"}), S(401, 429)),
        ("wrong code, codeless", dumps({"code": "000000"}), S(401, 429)),
    ]
    return cases


def busy_bodies() -> list[tuple[str, bytes, frozenset[int]]]:
    bad = S(400)
    cases = [
        (f"busy={ascii(v)[:40]}", dumps({"busy": v}), bad)
        for v in [None, 0, 1, "true", "false", [], {}, 1.5, [True] * 10_000]
    ]
    cases += [
        ("missing busy", dumps({}), bad),
        ("extra field", dumps({"busy": True, "slot": "alice"}), bad),
        ("busy huge integer", f'{{"busy": {HUGE_INT}}}'.encode(), bad),
        ("busy NaN", b'{"busy": NaN}', bad),
    ]
    return cases


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into the fixed structure of an event (not into free-form values)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            if key not in ("input", "raw", "inputSchema", "redactions", "requestHeaders", "responseHeaders"):
                out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def activity_bodies() -> list[tuple[str, bytes, frozenset[int]]]:
    bad = S(400)
    good = [opaque_http(), llm_exchange()]
    cases: list[tuple[str, bytes, frozenset[int]]] = []
    for value in [None, {}, "x", 1, True, [], [None], [1], ["x"], [[]], [{}]]:
        cases.append((f"events={ascii(value)[:30]}", dumps({"events": value}), bad))
    cases += [
        ("missing events", dumps({}), bad),
        ("extra field", dumps({"events": good, "agent": "alice"}), bad),
        ("501 events", dumps({"events": [opaque_http()] * 501}), bad),
        ("10000 events", dumps({"events": [{}] * 10_000}), bad),
        ("10000 valid-looking events", dumps({"events": [opaque_http()] * 10_000}), bad),
        ("valid then invalid", dumps({"events": [*good, {"kind": "opaque_http"}]}), bad),
        ("duration NaN", dumps({"events": good}).replace(b'"duration": 15', b'"duration": NaN'), bad),
        (
            "ts huge integer",
            dumps({"events": good}).replace(b'"ts": 1700000000000', b'"ts": ' + HUGE_INT.encode(), 1),
            bad,
        ),
        (
            "deep free-form input",
            dumps(
                {
                    "events": [
                        _set(
                            llm_exchange(),
                            ("entry", "request", "messages", 1, "content", 1, "input"),
                            json.loads(nested(100)),
                        )
                    ]
                }
            ),
            bad,
        ),
        (
            "image data",
            dumps(
                {
                    "events": [
                        _set(
                            llm_exchange(),
                            ("entry", "request", "messages", 2, "content", 0, "content", 1),
                            {"type": "image", "mediaType": "image/png", "data": "AAAA"},
                        )
                    ]
                }
            ),
            bad,
        ),
        ("lone surrogate text", dumps({"events": [llm_exchange(text="\ud800")]}), bad),
        (
            "lone surrogate header",
            dumps({"events": [_set(opaque_http(), ("entry", "requestHeaders"), {"x": "\udfff"})]}),
            bad,
        ),
        (
            "10000 headers",
            dumps(
                {"events": [_set(opaque_http(), ("entry", "requestHeaders"), {f"h{i}": "v" for i in range(10_000)})]}
            ),
            bad,
        ),
        ("kind of the other entry", dumps({"events": [_set(opaque_http(), ("kind",), "llm_exchange")]}), bad),
        ("ts before 2000", dumps({"events": [_set(opaque_http(), ("ts",), -5)]}), bad),
        ("ts float", dumps({"events": [_set(opaque_http(), ("ts",), 1.7e12)]}), bad),
    ]
    # The wrong JSON type in each field of both event kinds.
    for event in good:
        for path in _paths(event):
            if path[-1] in ("input", "raw"):  # free-form: any JSON value is valid there
                continue
            value = wrong_type(_get(event, path))
            label = ".".join(str(p) for p in path)
            cases.append((f"{event['kind']}.{label}={value!a}", dumps({"events": [_set(event, path, value)]}), bad))
    return cases


JSON_BODIES: dict[str, Callable[[], list[tuple[str, bytes, frozenset[int]]]]] = {
    "push": push_bodies,
    "session_totp": totp_bodies,
    "busy": busy_bodies,
    "activity_upload": activity_bodies,
}

HOSTILE_NAMES = [
    "..%2F..%2Fetc",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2E%2E",
    "%00",
    "ivy%00",
    "ivy%0A",
    "a" * 2000,
    "%F0%9F%9A%80",  # emoji
    "%E2%80%AEyvi",  # RTL override
    "%D8%B9%D8%B1%D8%A8%D9%8A",  # Arabic
    "%FF%FE",  # not UTF-8
    "%ED%A0%80",  # an encoded surrogate
    "IVY",
    "%20ivy",
]


def cases_for(ep: Endpoint) -> list[Case]:
    cases: list[Case] = []
    unsafe = ep.method == "POST"

    def add(label: str, expect: frozenset[int], **kw: Any) -> None:
        kw.setdefault("method", ep.method)
        kw.setdefault("path", ep.path)
        kw.setdefault("who", ep.who)
        cases.append(Case(label, expect=expect, **kw))

    # --- authentication -------------------------------------------------------------------------------------
    if ep.who is not None:
        add("no credentials", S(401), who=None)
        for label, value in [
            ("unknown token", "Bearer ac7_" + "A" * 43),
            ("not ac7 token", "Bearer hunter2"),
            ("empty bearer", "Bearer "),
            ("basic auth", "Basic YWxpY2U6cGFzc3dvcmQ="),
            ("4 KB token", "Bearer ac7_" + "x" * 4000),
            ("token with NUL escape", "Bearer ac7_%00"),
            ("bare scheme", "Bearer"),
        ]:
            add(label, S(401), who=None, headers={"Authorization": value})
        add("junk session cookie", S(401), who=None, headers={"Cookie": "ac7_session=" + "z" * 200})
        add("oversized session cookie", S(401), who=None, headers={"Cookie": "ac7_session=" + "z" * 5000})
    if unsafe:
        add(
            "cross-site cookie request",
            S(403),
            who=None,
            headers={"Cookie": "ac7_session=whatever", "Origin": "https://evil.example", **JSON_CT},
            body=b"{}",
        )

    # --- wrong methods and paths ----------------------------------------------------------------------------
    others = {"GET", "POST", "PUT", "DELETE", "PATCH"} - {ep.method}
    if ep.key in ("activity_upload", "activity_list"):
        others -= {"GET", "POST"}
    for method in sorted(others):
        add(f"method {method}", S(405), method=method, body=b"{}" if method != "GET" else None, headers=JSON_CT)
    base = ep.path.split("?")[0]
    add("unknown sub-path", S(404), path=base + "/nope")
    add("trailing slash", S(404), path=base + "/")
    add("doubled slash", S(404), path="/" + base)

    # --- bodies ---------------------------------------------------------------------------------------------
    if ep.body == "json":
        bad = S(400)
        too_big = S(413) if ep.key != "activity_upload" else S(400)  # activity takes up to 16 MiB
        for label, body in MALFORMED:
            add(f"body: {label}", bad, body=body, headers=JSON_CT)
        add("body: malformed, no content type", bad, body=b"{", headers={})
        for label, body, expect in JSON_BODIES[ep.key]():
            add(f"field: {label}", expect, body=body, headers=JSON_CT)
        for ctype in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-patch+json",
            "text/json",
        ):
            add(f"content type {ctype}", S(415), body=b'{"body": "x"}', headers={"Content-Type": ctype})
        big = b'{"body": "' + b"x" * TWO_MIB + b'"}'
        add("2 MiB body with Content-Length", too_big, body=big, headers=JSON_CT)
        add("2 MiB body, chunked", too_big, body=big, chunked=True, headers=JSON_CT)
        add("2 MiB body, no content type", too_big, body=big, headers={})
        add("body: gzip that is not gzip", bad, body=b"not gzip", headers={**JSON_CT, "Content-Encoding": "gzip"})
        add("body: deflate that is not", bad, body=b"not zlib", headers={**JSON_CT, "Content-Encoding": "deflate"})
        bomb = gzip.compress(b'{"events": ["' + b"a" * (32 * MIB) + b'"]}')
        add("body: gzip bomb", S(413), body=bomb, headers={**JSON_CT, "Content-Encoding": "gzip"})
    elif ep.body == "none":
        # The endpoint reads no body; whatever is sent must not break it, and the 1 MiB cap still holds.
        tolerated = S(ep.ok, 400, 415)
        for label, body in MALFORMED[:8]:
            add(f"ignored body: {label}", tolerated, body=body, headers=JSON_CT)
        add("ignored body: text", tolerated, body=b"hello", headers={"Content-Type": "text/plain"})
        big = b"x" * TWO_MIB
        add("2 MiB body with Content-Length", S(413), body=big, headers=JSON_CT)
        add("2 MiB body, chunked", S(413), body=big, chunked=True, headers=JSON_CT)
    else:
        tolerated = S(ep.ok, 400, 413)
        add("GET with a malformed body", tolerated, body=b"{", headers=JSON_CT)
        add("GET with a 2 MiB body", tolerated, body=b"x" * TWO_MIB, headers=JSON_CT)
        add("GET with a chunked 2 MiB body", tolerated, body=b"x" * TWO_MIB, chunked=True, headers=JSON_CT)

    # --- query strings ----------------------------------------------------------------------------------------
    junk_query = "%00=%FF&%F0%9F%9A%80=%E2%80%AE&x=" + "a" * 2000 + "&x=&&=&"
    sep = "&" if "?" in ep.path else "?"
    if ep.key not in ("history", "activity_list"):
        add(
            "junk query string",
            S(ep.ok, 400) if ep.body == "json" else S(ep.ok),
            path=ep.path + sep + junk_query,
            **({"body": b"{}", "headers": JSON_CT} if ep.body == "json" else {}),
        )
    if ep.key == "history":
        for query in [
            "limit=99999999999999999999",
            "limit=-1",
            "limit=abc",
            "limit=0",
            "limit=1001",
            "limit=1.5",
            "limit=1e3",
            "limit=%EF%BC%91",
            "limit=",
            "limit=%205",
            "limit=%2B5",
            "limit=%00",
            "before=-5",
            "before=1:notauuid",
            "before=abc",
            "before=99999999999999999999",
            "before=9223372036854775808",
            "before=1:",
            "before=:",
            "before=%00",
            "before=",
            "before=1:01a20121-d755-7562-88d7-22a4bfb64e5D",
            "before=%F0%9F%9A%80",
            "with=",
            "with=%00",
            "with=" + "a" * 2000,
            "with=%F0%9F%9A%80",
            "with=%D8%B9%D8%B1%D8%A8",
            "with=%FF",
            "with=%ED%A0%80",
            "with=ivy%0A",
            "with=..%2Fivy",
        ]:
            add(f"query {query[:40]}", S(400), path=f"/history?{query}")
        add("junk query string", S(200), path="/history?" + junk_query)
    if ep.key == "activity_list":
        for query in [
            "limit=abc",
            "limit=1.5",
            "limit=",
            "limit=%EF%BC%91",
            "limit=%2B5",
            "before=-5",
            "before=1:notauuid",
            "before=abc",
            "before=99999999999999999999",
            "before=9223372036854775808",
            "before=%00",
            "from=abc",
            "from=-1",
            "from=1e3",
            "to=abc",
            "to=-1",
            "to=99999999999999999999",
            "kind=bogus",
            "kind=",
            "kind=%00",
            "kind=LLM_EXCHANGE",
            "kind=%F0%9F%9A%80",
        ]:
            add(f"query {query[:40]}", S(400), path=f"/agents/ivy/activity?{query}")
        # Out-of-range limits are clamped (or refused); either way never an error of ours.
        for query in ["limit=99999999999999999999", "limit=-1"]:
            add(f"query {query}", S(200, 400), path=f"/agents/ivy/activity?{query}")
        add("junk query string", S(200), path="/agents/ivy/activity?" + junk_query)
    if ep.key == "subscribe":
        for name in ["", "dan", "%00", "a" * 2000, "%F0%9F%9A%80", "%FF", "alice%0A", "ALICE"]:
            expect = S(400) if name == "" else S(403)
            add(f"subscribe name={name[:30]}", expect, path=f"/subscribe?name={name}")
        add("subscribe without name", S(400), path="/subscribe")
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        add("upgrade without a key", S(400), headers=upgrade)
        add(
            "upgrade, bad version",
            S(400),
            headers={**upgrade, "Sec-WebSocket-Version": "99", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
        )
        add("upgrade for someone else", S(403), path="/subscribe?name=dan", headers=upgrade)
        add("upgrade, no credentials", S(401), who=None, headers=upgrade)
    if ep.key == "activity_stream":
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        add("upgrade without a key", S(400), headers=upgrade)
        add("upgrade by a non-director", S(403), who="mike", headers=upgrade)
        add("plain GET by a non-director", S(403), who="mike")

    # --- hostile slot names in the path -------------------------------------------------------------------------
    if ep.name_path is not None:
        for name in HOSTILE_NAMES:
            path = ep.name_path.replace("{name}", name)
            extra: dict[str, Any] = {}
            if ep.method == "POST":
                extra = {"body": dumps({"events": [opaque_http()]}), "headers": JSON_CT}
            add(f"name {name[:30]}", S(404), path=path, **extra)
        add("name of an unknown slot", S(404), path=ep.name_path.replace("{name}", "zed"))
    return cases


# --- sending and checking ---------------------------------------------------------------------------------------


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


async def send(broker: Running, case: Case) -> tuple[int, dict[str, str], bytes]:
    headers: dict[str, str] = {}
    if case.who is not None:
        headers.update(broker.auth(case.who))
    headers.update(case.headers)
    data: Any = case.body
    if case.chunked and case.body is not None:
        data = _chunks(case.body)
    skip = [] if "Content-Type" in headers else ["Content-Type"]
    # A fresh session per case: a request that poisons its connection cannot affect the next one.
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            case.method,
            URL(broker.url + case.path, encoded=True),
            data=data,
            headers=headers,
            skip_auto_headers=skip,
            allow_redirects=False,
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def problems_with(case: Case, status: int, headers: dict[str, str], raw: bytes) -> list[str]:
    problems = []
    if status >= 500:
        problems.append(f"server error {status} (expected {sorted(case.expect)})")
    elif status not in case.expect:
        problems.append(f"status {status}, expected {sorted(case.expect)}")
    for marker in (b"Traceback", b'File "/'):
        if marker in raw:
            problems.append("traceback in body")
    if status >= 400 and case.json_error:
        try:
            body = json.loads(raw)
        except ValueError:
            problems.append(f"non-JSON error body {raw[:80]!r}")
        else:
            if not isinstance(body, dict) or set(body) != {"error", "code"}:
                problems.append(f"error body {body!r:.100} is not {{error, code}}")
            elif not isinstance(body["error"], str) or not isinstance(body["code"], str):
                problems.append("error/code are not strings")
            elif not CODE_RE.fullmatch(body["code"]):
                problems.append(f"code {body['code']!r} is not snake_case")
    if status == 401 and b'"unauthenticated"' in raw and "WWW-Authenticate" not in headers:
        problems.append("401 without WWW-Authenticate")
    if status == 405 and "Allow" not in headers:
        problems.append("405 without Allow")
    if status == 429 and "Retry-After" not in headers:
        problems.append("429 without Retry-After")
    return problems


async def seed(http: aiohttp.ClientSession, broker: Running) -> dict[str, Any]:
    """Data stored before the barrage, which must survive it unchanged."""
    for sender, fields in [
        ("alice", {"body": "kickoff 🚀 — שלום — \u202e", "level": "notice", "data": {"ticket": [1, 2]}}),
        ("ivy", {"to": "dan", "body": "nul \u0000 inside", "title": "t"}),
    ]:
        async with http.post(f"{broker.url}/push", json=fields, headers=broker.auth(sender)) as r:
            assert r.status == 201
    async with http.post(
        f"{broker.url}/agents/ivy/activity", json={"events": [opaque_http()]}, headers=broker.auth("ivy")
    ) as r:
        assert r.status == 201
    return await snapshot(http, broker)


async def snapshot(http: aiohttp.ClientSession, broker: Running) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for viewer in ("alice", "ivy"):
        async with http.get(f"{broker.url}/history", headers=broker.auth(viewer)) as r:
            assert r.status == 200
            state[f"history:{viewer}"] = await r.json()
    async with http.get(f"{broker.url}/agents/ivy/activity", headers=broker.auth("ivy")) as r:
        assert r.status == 200
        state["activity:ivy"] = await r.json()
    return state


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.key for e in ENDPOINTS])
async def test_hostile_requests_get_well_formed_4xx(
    endpoint: Endpoint, broker: Running, http: aiohttp.ClientSession
) -> None:
    before = await seed(http, broker)
    cases = cases_for(endpoint)
    assert len(cases) >= 10
    failures = []
    for case in cases:
        try:
            status, headers, raw = await asyncio.wait_for(send(broker, case), 60)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{case.method} {case.path[:60]} [{case.label}]: no answer ({exc!r})")
            continue
        for problem in problems_with(case, status, headers, raw):
            failures.append(f"{case.method} {case.path[:60]} [{case.label}]: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} hostile requests mishandled:\n" + "\n".join(failures)

    async with http.get(f"{broker.url}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"
    assert await snapshot(http, broker) == before  # intact, and nothing rejected was stored


# --- below HTTP parsing: raw bytes on a socket --------------------------------------------------------------------


async def raw_exchange(broker: Running, request: bytes) -> tuple[int, bytes, bytes]:
    host, port = broker.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    assert match, data[:200]
    return int(match.group(1)), head, body


async def test_hostile_bytes_below_the_json_layer(broker: Running, http: aiohttp.ClientSession) -> None:
    before = await seed(http, broker)
    token = broker.team.tokens["alice"].encode()

    def req(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
        return (
            line
            + b"\r\nHost: 127.0.0.1\r\n"
            + b"".join(h + b"\r\n" for h in headers)
            + b"Connection: close\r\n\r\n"
            + body
        )

    # (label, request, acceptable statuses, must the body be our JSON error shape?)
    cases: list[tuple[str, bytes, frozenset[int], bool]] = [
        # Non-UTF-8 bytes in headers the broker itself interprets: an ordinary 401, not a crash.
        ("Authorization not UTF-8", req(b"GET /roster HTTP/1.1", b"Authorization: Bearer ac7_\xff\xfe"), S(401), True),
        ("Authorization latin-1", req(b"GET /roster HTTP/1.1", b"Authorization: Bearer ac7_caf\xe9"), S(401), True),
        ("Cookie not UTF-8", req(b"GET /roster HTTP/1.1", b"Cookie: ac7_session=\xff\xfe\xfd"), S(401), True),
        (
            "Cookie not UTF-8 on logout",
            req(b"POST /session/logout HTTP/1.1", b"Cookie: ac7_session=\xc3\x28", b"Content-Length: 0"),
            S(401),
            True,
        ),
        (
            "Origin not UTF-8",
            req(
                b"POST /push HTTP/1.1",
                b"Cookie: ac7_session=x",
                b"Origin: https://\xff",
                b"Content-Length: 2",
                body=b"{}",
            ),
            S(403),
            True,
        ),
        (
            "Content-Type not UTF-8",
            req(
                b"POST /push HTTP/1.1",
                b"Authorization: Bearer " + token,
                b"Content-Type: application/\xff",
                b"Content-Length: 2",
                body=b"{}",
            ),
            S(415),
            True,
        ),
        # Malformed HTTP is refused by the HTTP parser itself, before any handler; the answer still has our shape.
        ("unknown method", req(b"BREW /roster HTTP/1.1", b"Authorization: Bearer " + token), S(400), True),
        (
            "raw byte in path",
            req(b"GET /agents/\xff/activity HTTP/1.1", b"Authorization: Bearer " + token),
            S(400),
            True,
        ),
        (
            "raw byte in query",
            req(b"GET /history?limit=\xff HTTP/1.1", b"Authorization: Bearer " + token),
            S(400),
            True,
        ),
        ("bad Content-Length", req(b"POST /push HTTP/1.1", b"Content-Length: abc"), S(400), True),
        ("negative Content-Length", req(b"POST /push HTTP/1.1", b"Content-Length: -1"), S(400), True),
        (
            "Content-Length and chunked",
            req(b"POST /push HTTP/1.1", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
            S(400),
            True,
        ),
        (
            "bad chunk size",
            req(
                b"POST /push HTTP/1.1",
                b"Authorization: Bearer " + token,
                b"Content-Type: application/json",
                b"Transfer-Encoding: chunked",
                body=b"zz\r\n{}\r\n0\r\n\r\n",
            ),
            S(400),
            True,
        ),
        ("header without colon", req(b"GET /healthz HTTP/1.1", b"NoColonHere"), S(400), True),
        ("10 KB header", req(b"GET /healthz HTTP/1.1", b"X-Big: " + b"a" * 10_000), S(400, 431), True),
        ("100 KB URL", req(b"GET /history?x=" + b"a" * 100_000 + b" HTTP/1.1"), S(400, 414), True),
        ("garbage request line", b"HELLO THERE\r\n\r\n", S(400), True),
    ]
    failures = []
    for label, request, expect, must_be_json in cases:
        try:
            status, head, body = await raw_exchange(broker, request)
        except (OSError, TimeoutError, AssertionError) as exc:
            failures.append(f"[{label}]: no parsable answer ({exc!r})")
            continue
        case = Case(label, "RAW", "", expect, json_error=must_be_json)
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip()] = value.strip()
        failures += [f"[{label}]: {p}" for p in problems_with(case, status, headers, body)]
    assert not failures, "\n".join(failures)
    async with http.get(f"{broker.url}/healthz") as r:
        assert r.status == 200
    assert await snapshot(http, broker) == before


async def test_malformed_http_is_neither_echoed_nor_logged(broker: Running, caplog: pytest.LogCaptureFixture) -> None:
    """A request the HTTP parser refuses gets the JSON error shape, and neither the answer nor the log repeats its
    bytes: a mistyped Authorization line must not put a bearer token into the broker's log."""
    token = broker.team.tokens["alice"].encode()
    tls_client_hello = bytes.fromhex("160301002a0100002603035a") + b"\x00" * 32 + b"\r\n\r\n"
    cases = [
        (b"GET /roster HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + token + b"\r\n\r\n", "malformed HTTP request"),
        (b"GET /roster HTTP/1.1\r\nHost: x\r\nX-Token: " + token * 200 + b"\r\n\r\n", "too long"),
        (b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: " + token + b"\r\n\r\n", "malformed HTTP request"),
        (tls_client_hello, "not an HTTP request"),
    ]
    caplog.set_level(logging.DEBUG)
    for request, sentence in cases:
        status, head, body = await raw_exchange(broker, request)
        assert status == 400, (status, head, body)
        assert b"content-type: application/json" in head.lower(), head
        error = json.loads(body)
        assert error["code"] == "bad_request" and sentence in error["error"], error
        assert token not in head + body
    logged = "\n".join(
        r.getMessage() + "\n" + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert token.decode() not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], logged


async def test_odd_but_valid_unicode_round_trips(broker: Running, http: aiohttp.ClientSession) -> None:
    texts = [
        "emoji 🚀👩🏽‍💻🏳️‍🌈",
        "RTL \u202eevil\u202c עברית العربية",
        "NUL \u0000 in the middle\u0000",
        "combining e\u0301 and zero-width\u200b joiner",
        "astral \U0001d518\U0001d52b\U0001d526 \U0010fffd",
        "control \u0001\u001f\u007f and line\u2028separator",
    ]
    ws = await http.ws_connect(f"{broker.url}/subscribe", params={"name": "dan"}, headers=broker.auth("dan"))
    while broker.broker.state.messages.count("dan") < 1:
        await asyncio.sleep(0.02)
    sent = []
    for text in texts:
        fields = {"to": "dan", "body": text, "title": text[:20], "data": {text: [text], "\u0000": None}}
        async with http.post(f"{broker.url}/push", json=fields, headers=broker.auth("ivy")) as r:
            assert r.status == 201, await r.text()
            message = (await json_body(r))["message"]
        assert (message["body"], message["title"], message["data"]) == (text, text[:20], fields["data"])
        sent.append(message)
    for message in sent:
        frame = await asyncio.wait_for(ws.receive(), 20)
        assert json.loads(frame.data) == message
    await ws.close()
    async with http.get(f"{broker.url}/history", params={"with": "ivy"}, headers=broker.auth("dan")) as r:
        assert (await json_body(r))["messages"] == list(reversed(sent))

    events = [llm_exchange(text=text) for text in texts]
    async with http.post(f"{broker.url}/agents/ivy/activity", json={"events": events}, headers=broker.auth("ivy")) as r:
        assert r.status == 201
    async with http.get(f"{broker.url}/agents/ivy/activity", headers=broker.auth("ivy")) as r:
        rows = (await json_body(r))["activity"]
    assert [row["event"] for row in reversed(rows)] == events


async def test_hostile_websocket_frames_close_only_that_socket(broker: Running, http: aiohttp.ClientSession) -> None:
    url = f"{broker.url}/subscribe"
    victim = await http.ws_connect(url, params={"name": "ivy"}, headers=broker.auth("ivy"))
    bystander = await http.ws_connect(url, params={"name": "dan"}, headers=broker.auth("dan"))
    await victim.send_str("hello?")  # small stray frames are ignored
    await victim.send_bytes(b"\x00\xff")
    await victim.send_str("x" * 100_000)  # clients send only control frames: a big frame is hostile
    msg = await asyncio.wait_for(victim.receive(), 20)
    while msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        msg = await asyncio.wait_for(victim.receive(), 20)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert victim.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    # The other subscriber is untouched and the broker still delivers.
    async with http.post(f"{broker.url}/push", json={"to": "dan", "body": "ok"}, headers=broker.auth("alice")) as r:
        assert r.status == 201
        sent = (await r.json())["message"]
    frame = await asyncio.wait_for(bystander.receive(), 20)
    assert json.loads(frame.data) == sent
    await bystander.close()
