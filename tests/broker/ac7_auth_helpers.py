"""Helpers shared by the broker auth tests: TOTP codes, logins, raw cookie parsing, polling."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from ac7_core.totp import hotp, step_at

SESSION_MAX_AGE = 7 * 24 * 3600  # DESIGN §4: 7-day sliding TTL


def current_step() -> int:
    return step_at(time.time())


def code_for(secret: str, offset: int = 0) -> str:
    """The code of the time-step `offset` steps from now (±1 is inside the accepted window)."""
    return hotp(secret, current_step() + offset)


def wrong_code(secret: str) -> str:
    """A well-formed code that matches none of the steps near now, so it is wrong whenever it is checked."""
    now = current_step()
    near = {hotp(secret, s) for s in range(now - 4, now + 5)}
    for n in range(1_000_000):
        candidate = f"{(n * 7919 + 123456) % 1_000_000:06d}"
        if candidate not in near:
            return candidate
    raise AssertionError("unreachable")


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    @property
    def set_cookies(self) -> list[str]:
        return list(self.headers.getall("Set-Cookie", []))


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    data: Any = None,
    **kwargs: Any,
) -> Reply:
    """One request; the reply with its JSON body decoded (or text, or None when empty)."""
    async with http.request(method, url, headers=headers, json=json, data=data, **kwargs) as r:
        text = await r.text()
        body: Any = None
        if text:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = text
        return Reply(r.status, r.headers, body)


async def login(
    http: aiohttp.ClientSession,
    url: str,
    code: str,
    slot: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Reply:
    body: dict[str, Any] = {"code": code}
    if slot is not None:
        body["slot"] = slot
    return await call(http, "POST", f"{url}/session/totp", json=body, headers=headers, **kwargs)


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """`name=value; Attr; Attr=v` → (name, value, {attr-lowercased: value-or-""})."""
    first, *rest = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        if not part:
            continue
        key, _, val = part.partition("=")
        attrs[key.strip().lower()] = val.strip()
    return name.strip(), value.strip().strip('"'), attrs


def session_cookie(reply: Reply, name: str = "ac7_session") -> tuple[str, dict[str, str]]:
    """The value and attributes of the one Set-Cookie for `name` in `reply`."""
    found = [parse_set_cookie(h) for h in reply.set_cookies]
    matching = [(v, a) for n, v, a in found if n == name]
    assert len(matching) == 1, f"expected one Set-Cookie for {name}, got {reply.set_cookies}"
    return matching[0]


def cookie_header(value: str, name: str = "ac7_session") -> dict[str, str]:
    return {"Cookie": f"{name}={value}"}


@asynccontextmanager
async def bare_session(**kwargs: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps no cookies: every credential it sends is one the test put in the headers."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **kwargs) as session:
        yield session


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict), reply.body
    assert reply.body.get("code") == code, reply.body
    assert isinstance(reply.body.get("error"), str)
    assert reply.body["error"]
    assert reply.headers.get("Content-Type", "").startswith("application/json")


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `check` until it is true or `deadline` seconds pass; whether it became true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        if await check():
            return True
        if loop.time() >= end:
            return False
        await asyncio.sleep(interval)


def db_bytes(config_dir: Path) -> bytes:
    """Everything SQLite has on disk for the main database, WAL included."""
    return b"".join(p.read_bytes() for p in sorted(config_dir.glob("ac7.db*")) if p.is_file())


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
