"""Helpers for the activity-uploader tests: a real broker that can be stopped and restarted on the same port and
files, valid activity events tagged for ordering checks, the broker's stored rows read back, and a scripted fake
broker standing in for failure modes (5xx, 429 + Retry-After, a hung request) that a healthy broker never shows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ac7_broker.server import RunningBroker, start_broker
from ac7_broker.settings import Settings
from ac7_core.config_file import create_config
from ac7_core.tokens import mint_token

TS = 1_700_000_000_000
SETTINGS = Settings(config_poll_interval=0.05, shutdown_grace=2.0)


# --- events -------------------------------------------------------------------------------------------------------


def opaque_http(tag: str, ts: int = TS) -> dict[str, Any]:
    """A small valid `opaque_http` event; `path` carries `tag` so rows can be matched and ordered."""
    return {
        "kind": "opaque_http",
        "ts": ts,
        "duration": 15,
        "entry": {
            "kind": "opaque_http",
            "startedAt": ts - 15,
            "endedAt": ts,
            "host": "statsig.anthropic.com",
            "method": "POST",
            "path": tag,
            "status": 202,
            "requestHeaders": {"content-type": "application/json"},
            "responseHeaders": {},
            "requestBodyPreview": '{"events":[]}',
            "responseBodyPreview": None,
        },
    }


def llm_exchange(tag: str, text: str, ts: int = TS) -> dict[str, Any]:
    """A valid `llm_exchange` whose size is set by `text`; `sessionId` carries `tag`."""
    return {
        "kind": "llm_exchange",
        "ts": ts,
        "duration": 812.5,
        "entry": {
            "kind": "anthropic_messages",
            "startedAt": ts - 812,
            "endedAt": ts,
            "firstByteMs": 101.5,
            "firstTokenMs": 240,
            "httpVersion": "HTTP/2.0",
            "host": "api.anthropic.com",
            "path": "/v1/messages",
            "sessionId": tag,
            "requestBytes": len(text),
            "responseBytes": 90,
            "truncated": False,
            "redactions": {},
            "request": {
                "model": "claude-sonnet-4-5",
                "maxTokens": 1024,
                "temperature": 1,
                "system": [{"type": "text", "text": "You are Claude Code."}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                "tools": [],
            },
            "response": {
                "id": "msg_01",
                "model": "claude-sonnet-4-5",
                "stopReason": "end_turn",
                "stopSequence": None,
                "content": [{"type": "text", "text": "Done."}],
                "usage": {
                    "inputTokens": 10,
                    "outputTokens": 2,
                    "cacheCreationInputTokens": 0,
                    "cacheReadInputTokens": 0,
                },
                "status": 200,
                "error": None,
            },
        },
    }


def tag_of(event: dict[str, Any]) -> str:
    entry = event["entry"]
    return str(entry["path"] if event["kind"] == "opaque_http" else entry["sessionId"])


def tags(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"/{prefix}/{i}" for i in range(start, start + count)]


def serialized_size(event: dict[str, Any]) -> int:
    """The size the uploader counts for an event (compact UTF-8 JSON)."""
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


def spool_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line]


# --- polling ------------------------------------------------------------------------------------------------------


async def eventually[T](
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, every: float = 0.05, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something other than None/False; a generous deadline, never a timing check."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(every)


# --- a real broker ------------------------------------------------------------------------------------------------


@dataclass
class LiveBroker:
    """A broker on 127.0.0.1 over a real config and SQLite store in `directory`, restartable on the same port."""

    config_path: Path
    tokens: dict[str, str]
    port: int = 0
    running: RunningBroker | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.running is None
        self.running = await start_broker(self.config_path, "127.0.0.1", self.port, SETTINGS)
        self.port = int(self.running.url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            await running.stop()

    async def rows(self, agent: str) -> list[dict[str, Any]]:
        """Every stored activity row of `agent`, oldest first (read as the agent itself)."""
        rows: list[dict[str, Any]] = []
        before: int | None = None
        async with aiohttp.ClientSession() as http:
            while True:
                query = {"limit": "1000"} | ({} if before is None else {"before": str(before)})
                async with http.get(
                    f"{self.url}/agents/{agent}/activity",
                    params=query,
                    headers={"Authorization": f"Bearer {self.tokens[agent]}"},
                ) as response:
                    assert response.status == 200, await response.text()
                    page = await response.json()
                rows.extend(page["activity"])
                before = page["nextBefore"]
                if before is None:
                    break
        rows.sort(key=lambda row: row["id"])
        return rows

    async def tags(self, agent: str) -> list[str]:
        return [tag_of(row["event"]) for row in await self.rows(agent)]

    async def wait_for_count(self, agent: str, count: int) -> list[str]:
        async def probe() -> list[str] | None:
            found = await self.tags(agent)
            return found if len(found) >= count else None

        return await eventually(probe, what=f"{count} rows stored for {agent}")


def write_team(directory: Path) -> LiveBroker:
    """A config with two agents each holding a bearer token: alice (director) and dan."""
    tokens = {"alice": mint_token(), "dan": mint_token()}
    doc = {
        "team": {"name": "acme", "directive": "Ship it", "brief": "Context."},
        "roles": {"engineer": {"description": "Writes code", "instructions": ""}},
        "slots": [
            {"name": name, "role": "engineer", "authority": authority, "token": tokens[name]}
            for name, authority in (("alice", "director"), ("dan", "individual-contributor"))
        ],
    }
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "ac7.json"
    create_config(path, doc, env={})
    return LiveBroker(path, tokens)


# --- a scripted fake broker ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the fake stops)


@dataclass
class FakeBroker:
    """Answers `POST /agents/{name}/activity` with scripted replies (then 201), recording every request."""

    script: list[Reply] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)  # tags of each request's events, in arrival order
    statuses: list[int] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # tags of events answered 201, in order
    default: Reply = field(default_factory=lambda: Reply(201))
    runner: web.AppRunner | None = None
    url: str = ""
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        batch = [tag_of(event) for event in body["events"]]
        self.requests.append(batch)
        reply = self.script.pop(0) if self.script else self.default
        if reply.hang:
            await self._released.wait()
        self.statuses.append(reply.status)
        if reply.status == 201:
            self.accepted.extend(batch)
            return web.json_response({"accepted": len(batch)}, status=201)
        return web.json_response(
            {"error": f"scripted failure {reply.status}", "code": "scripted"},
            status=reply.status,
            headers=reply.headers,
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/agents/{name}/activity", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        self._released.set()
        if self.runner is not None:
            await self.runner.cleanup()
