"""Helpers for the bridge, link and presence tests: a real broker on loopback, short private dirs for Unix sockets,
a raw protocol client, a fake runner, and a driver for the real `ac7 mcp-bridge` process over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from mcp import ClientSession
from mcp.client.extension import NotificationBinding
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import InitializeResult
from pydantic import BaseModel, ConfigDict

from ac7_broker.server import RunningBroker, start_broker
from ac7_broker.settings import Settings
from ac7_cli.runner.bridge_link import MAX_FRAME, BrokerCallError
from ac7_core.config_file import create_config
from ac7_core.tokens import mint_token

AC7 = Path(sys.executable).parent / "ac7"
BRIDGE_ARGV = [str(AC7), "mcp-bridge"]
AGENT = "ivy"
TEST_SETTINGS = Settings(config_poll_interval=0.05, history_rate=1000.0, history_burst=1000.0)

# name, role, authority
TEAM = [
    ("alice", "lead", "director"),
    ("ivy", "engineer", "individual-contributor"),
    ("dan", "engineer", "individual-contributor"),
]


@dataclass
class Team:
    config_path: Path
    tokens: dict[str, str]


def write_team(directory: Path) -> Team:
    tokens = {name: mint_token() for name, _, _ in TEAM}
    doc = {
        "team": {"name": "acme", "directive": "Ship the billing service", "brief": "Context."},
        "roles": {
            "lead": {"description": "Plans and reviews", "instructions": ""},
            "engineer": {"description": "Writes and tests code", "instructions": ""},
        },
        "slots": [
            {"name": name, "role": role, "authority": authority, "token": tokens[name]}
            for name, role, authority in TEAM
        ],
    }
    path = directory / "ac7.json"
    create_config(path, doc, env={})
    return Team(path, tokens)


async def run_broker(team: Team, port: int = 0, **overrides: Any) -> RunningBroker:
    settings = dataclasses.replace(TEST_SETTINGS, **overrides)
    return await start_broker(team.config_path, "127.0.0.1", port, settings)


def port_of(broker: RunningBroker) -> int:
    return int(broker.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A short 0700 directory (a Unix socket path must fit in 107 bytes; pytest's tmp_path may not)."""
    path = Path(tempfile.mkdtemp(prefix="ac7t-"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AC7_")}


class Api:
    """A bearer-authenticated broker client, shaped like the runner's: `call` is a `BrokerCall`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.url + path, json=body, params=params, headers=headers) as r:
            payload = await r.json(content_type=None) if r.content_length != 0 else None
            if r.status >= 400:
                message = payload.get("error") if isinstance(payload, dict) else None
                raise BrokerCallError(r.status, str(message or r.reason))
            return payload


async def eventually[T](
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, every: float = 0.05, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something other than None/False (a deadline, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(every)


async def roster_of(api: Api) -> dict[str, dict[str, Any]]:
    result = await api.call("GET", "/roster")
    return {m["name"]: m for m in result["teammates"]}


async def history_of(api: Api, **query: Any) -> list[dict[str, Any]]:
    result = await api.call("GET", "/history", query=query)
    messages: list[dict[str, Any]] = result["messages"]
    return messages


# --- the runner ⇄ bridge protocol, spoken by hand ---


class LinkClient:
    """A raw client of the runner's bridge socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0

    @classmethod
    async def connect(cls, path: Path) -> LinkClient:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=4 * MAX_FRAME)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(obj).encode() + b"\n")

    async def recv(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next frame, or None when the runner closed the connection."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
        except (ConnectionError, OSError):
            return None
        if not line:
            return None
        frame: dict[str, Any] = json.loads(line)
        return frame

    async def hello(self, key: str) -> dict[str, Any] | None:
        await self.send({"op": "hello", "key": key})
        return await self.recv()

    async def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.send({"id": request_id, "op": op, "args": args or {}})
        while True:
            frame = await self.recv()
            assert frame is not None, f"connection closed while waiting for the answer to {op}"
            if frame.get("id") == request_id:
                return frame

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any] | None:
        while True:
            frame = await self.recv(timeout)
            if frame is None or "event" in frame:
                return frame

    async def closed(self, timeout: float = 20.0) -> bool:
        """True once the runner has closed the connection (frames before that are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.recv(max(0.01, deadline - time.monotonic())) is None:
                return True
        return False

    def close(self) -> None:
        self.writer.close()


def message(sender: str, to: str | None, body: str, **extra: Any) -> dict[str, Any]:
    """A broker Message as the runner would publish it."""
    base = {
        "id": f"m-{body}",
        "ts": 1_700_000_000_000,
        "from": sender,
        "to": to,
        "title": None,
        "body": body,
        "level": "info",
        "data": {},
    }
    return {**base, **extra}


@dataclass
class FakeRunner:
    """A stand-in for the runner's socket, to put the bridge in situations the real runner never would."""

    path: Path
    key: str
    agent: str = AGENT
    hellos: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=4 * MAX_FRAME)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = json.loads(await reader.readline() or b"{}")
        if hello.get("key") != self.key:
            writer.close()
            return
        self.hellos += 1
        writer.write(json.dumps({"event": "hello", "agent": self.agent, "team": "acme", "teammates": []}).encode())
        writer.write(b"\n")
        await writer.drain()
        self.writers.append(writer)
        self.connected.set()
        while line := await reader.readline():
            frame = json.loads(line)
            answer = {"id": frame["id"], "ok": True, "result": {"teammates": []}}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()

    async def push(self, msg: dict[str, Any]) -> None:
        for writer in self.writers:
            writer.write(json.dumps({"event": "message", "message": msg}).encode() + b"\n")
            await writer.drain()

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        self.connected.clear()

    async def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()


# --- the real bridge process, driven with the MCP client library ---


class ChannelParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str
    meta: dict[str, Any] | None = None


@dataclass
class BridgeProcess:
    session: ClientSession
    init: InitializeResult
    notes: asyncio.Queue[ChannelParams]

    async def next_note(self, timeout: float = 20.0) -> ChannelParams:
        return await asyncio.wait_for(self.notes.get(), timeout)


@contextlib.asynccontextmanager
async def bridge_process(env: dict[str, str]) -> AsyncIterator[BridgeProcess]:
    """Spawn the real `ac7 mcp-bridge`, connect an MCP client over its stdio and complete the handshake."""
    notes: asyncio.Queue[ChannelParams] = asyncio.Queue()

    async def on_note(params: ChannelParams) -> None:
        notes.put_nowait(params)

    params = StdioServerParameters(command=BRIDGE_ARGV[0], args=BRIDGE_ARGV[1:], env=env)
    binding = NotificationBinding(method="notifications/claude/channel", params_type=ChannelParams, handler=on_note)
    # The bridge's stderr goes to ours, so pytest shows its log lines when a test fails.
    async with (
        stdio_client(params, errlog=sys.stderr) as (read, write),
        ClientSession(read, write, notification_bindings=[binding]) as session,
    ):
        init = await asyncio.wait_for(session.initialize(), 60)
        yield BridgeProcess(session, init, notes)
