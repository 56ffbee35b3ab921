"""`ac7 mcp-bridge`: the stdio MCP server Claude Code spawns, speaking for the runner that started Claude Code.

The bridge holds no broker token. It connects to the runner's private Unix socket (`AC7_RUNNER_SOCKET`, proving
itself with `AC7_RUNNER_KEY`; see `bridge_link` for the protocol), exposes the team tools `roster`, `send`,
`broadcast` and `recent` (Claude Code names them `mcp__ac7__send` etc.), and turns each team message the runner
pushes into a `notifications/claude/channel` notification.

Two details matter for Claude Code:

- Channel notifications are only registered on a connection that negotiated the handshake protocol era
  (`initialize`). Claude Code first probes with `server/discover` (the 2026-07-28 era) and falls back to
  `initialize` when that probe gets -32601. The SDK's `Server.run` / `MCPServer.run` would answer the probe, lock
  the connection into the modern era, and Claude Code would then skip channels ("no unsolicited notification
  path"). So this module drives the SDK's handshake-only loop itself and refuses `server/discover` explicitly.
- `meta` must map identifier-like keys to strings (Claude Code validates `Record<string, string>` and drops the
  whole notification otherwise). Meta is built only from the message's own fields; its `data` is never copied in,
  so a sender cannot spoof `from`, `messageId` or anything else.

The server always starts, even without a runner (no environment, wrong key, runner gone): the tools then answer
with an error that says why, so Claude Code never sees a dead MCP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_connection
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from ac7_cli.runner.bridge_link import (
    LEVELS,
    MAX_FRAME,
    RECENT_DEFAULT,
    RECENT_MAX,
    FrameError,
    encode_frame,
    is_for_agent,
    read_frame,
)
from ac7_core import __version__

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream
    from mcp.shared.message import SessionMessage

log = logging.getLogger("ac7.bridge")

ENV_SOCKET = "AC7_RUNNER_SOCKET"
ENV_KEY = "AC7_RUNNER_KEY"
SERVER_NAME = "ac7"
CHANNEL_CAPABILITY = "claude/channel"
CHANNEL_METHOD = "notifications/claude/channel"
TOOL_NAMES = ("roster", "send", "broadcast", "recent")

_ONLY_UNDER_RUNNER = (
    "`ac7 mcp-bridge` only works when started by `ac7 claude-code`, which sets AC7_RUNNER_SOCKET and AC7_RUNNER_KEY; "
    "ask the user to start Claude Code through `ac7 claude-code`"
)
MISSING_ENV = f"the ac7 team tools are unavailable because those variables are not set here: {_ONLY_UNDER_RUNNER}"
KEY_REFUSED = (
    f"the ac7 runner refused this bridge (AC7_RUNNER_KEY does not match), so the team tools are unavailable: "
    f"{_ONLY_UNDER_RUNNER}"
)
RUNNER_GONE = "the ac7 runner that started this session is no longer running, so the team tools are unavailable"
RUNNER_SHUT_DOWN = "the ac7 runner has shut down (the session is ending), so the team tools are unavailable"
NOT_CONNECTED = "not connected to the ac7 runner right now (reconnecting); try again in a moment"
LOST_CONNECTION = "lost the connection to the ac7 runner before it answered; try again"

_MAX_PENDING_NOTIFICATIONS = 1000
_SETTLE_FOR_TOOLS_LIST = 3.0


class RunnerUnavailable(Exception):
    """No runner to ask (or it did not answer); the text is a sentence for the model."""


class ToolFailure(Exception):
    """The runner answered ok:false; the text is its sentence."""


class _Fatal(Exception):
    """Reconnecting cannot help."""


class RunnerClient:
    """The bridge's connection to the runner: hello, requests, pushed events, reconnects while the runner lives."""

    def __init__(
        self,
        socket_path: str | None,
        key: str | None,
        on_message: Callable[[dict[str, Any]], None],
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        wait_ready: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self._path = socket_path
        self._key = key
        self._on_message = on_message
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._wait_ready = wait_ready
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.identity: dict[str, Any] | None = None
        self.fatal: str | None = None if socket_path and key else MISSING_ENV
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._ever_connected = False
        # Set whenever the state is settled (connected, or fatally not); cleared while (re)connecting.
        self._settled = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def wait_settled(self, patience: float) -> bool:
        """Wait up to `patience` s for a hello or a definite failure; True if connected."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), patience)
        return self.connected

    async def run(self) -> None:
        """Connect, and reconnect with bounded backoff whenever the socket drops, until reconnecting cannot help."""
        delay = self._backoff_initial
        try:
            while self.fatal is None:
                established = False
                try:
                    established = await self._session()
                except _Fatal as exc:
                    self.fatal = str(exc)
                    log.warning("%s", exc)
                except (OSError, TimeoutError, FrameError) as exc:
                    log.info("runner connection failed: %s", exc)
                finally:
                    self._drop()
                if self.fatal is not None:
                    break
                if established:
                    delay = self._backoff_initial
                    log.warning("lost the connection to the ac7 runner; reconnecting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
        finally:
            self._drop()
            self._settled.set()

    async def close(self) -> None:
        self.fatal = self.fatal or RUNNER_SHUT_DOWN
        self._drop()
        self._settled.set()

    async def request(self, op: str, args: Mapping[str, Any]) -> Any:
        if self.fatal is None and not self.connected:
            await self.wait_settled(self._wait_ready)
        if self.fatal is not None:
            raise RunnerUnavailable(self.fatal)
        writer = self._writer
        if writer is None:
            raise RunnerUnavailable(NOT_CONNECTED)
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                frame = encode_frame({"id": request_id, "op": op, "args": dict(args)})
            except (FrameError, TypeError, ValueError):
                raise ToolFailure("the arguments are too large or not valid JSON") from None
            try:
                async with self._write_lock:
                    writer.write(frame)
                    await writer.drain()
            except (ConnectionError, OSError):
                raise RunnerUnavailable(LOST_CONNECTION) from None
            try:
                return await asyncio.wait_for(future, self._request_timeout)
            except TimeoutError:
                raise RunnerUnavailable(
                    f"the ac7 runner did not answer within {self._request_timeout:g} s; try again"
                ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _session(self) -> bool:
        """One connection: returns True if it was established (then dropped), raises if it never was."""
        assert self._path is not None and self._key is not None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self._path, limit=MAX_FRAME), self._connect_timeout
            )
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if self._ever_connected:
                raise _Fatal(RUNNER_GONE) from None
            raise _Fatal(f"{RUNNER_GONE} (nothing listens at {self._path}: {exc.strerror})") from None
        try:
            writer.write(encode_frame({"op": "hello", "key": self._key}))
            await writer.drain()
            hello = await asyncio.wait_for(read_frame(reader), self._connect_timeout)
            if hello is None:
                raise _Fatal(KEY_REFUSED)
            if hello.get("event") != "hello" or not isinstance(hello.get("agent"), str):
                raise _Fatal("the ac7 runner answered with something unexpected; the team tools are unavailable")
            self.identity = {
                "agent": hello["agent"],
                "team": hello.get("team") if isinstance(hello.get("team"), str) else "",
                "teammates": [m for m in hello.get("teammates") or [] if isinstance(m, dict)],
            }
            self._writer = writer
            self._ever_connected = True
            self._settled.set()
            log.info("connected to the ac7 runner as %s", self.identity["agent"])
            while (frame := await read_frame(reader)) is not None:
                self._handle(frame)
            return True
        finally:
            writer.close()

    def _handle(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if event == "message":
            message = frame.get("message")
            if isinstance(message, dict):
                try:
                    self._on_message(message)
                except Exception:
                    log.exception("forwarding a team message failed")
            return
        if event == "shutdown":
            raise _Fatal(RUNNER_SHUT_DOWN)
        request_id = frame.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return
        if frame.get("ok") is True:
            future.set_result(frame.get("result"))
        else:
            error = frame.get("error")
            future.set_exception(ToolFailure(error if isinstance(error, str) and error else "the request failed"))

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fatal is None:
            self._settled.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RunnerUnavailable(self.fatal or LOST_CONNECTION))


# --- channel notifications ---


def channel_params(message: Any, agent: str | None) -> dict[str, Any] | None:
    """`notifications/claude/channel` params for a broker Message, or None if it must not reach the model.

    Never the agent's own messages, never a DM between others, never a message without a known agent. `meta` holds
    only string values taken from the message's own fields: `data` is never copied in.
    """
    if agent is None or not is_for_agent(message, agent):
        return None
    message_id, ts, body = message.get("id"), message.get("ts"), message.get("body")
    if not isinstance(message_id, str) or not message_id or not isinstance(body, str):
        return None
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    to = message.get("to")
    title = message.get("title")
    level = message.get("level")
    meta = {
        "source": SERVER_NAME,
        "from": message["from"],
        "level": level if level in LEVELS else "info",
        "thread": "dm" if to is not None else "broadcast",
        "messageId": message_id,
        "ts": str(ts),
    }
    if to is not None:
        meta["to"] = to
    content = f"{title}\n\n{body}" if isinstance(title, str) and title else body
    return {"content": content, "meta": meta}


# --- tools ---


def tool_definitions(identity: Mapping[str, Any] | None) -> list[types.Tool]:
    team = f"team {identity['team']}" if identity and identity.get("team") else "your team"
    you = f" You are {identity['agent']}." if identity else ""
    mates = [m for m in (identity or {}).get("teammates", []) if isinstance(m.get("name"), str)]
    roster_line = (
        " Teammates: " + ", ".join(f"{m['name']} ({m.get('role')}, {m.get('authority')})" for m in mates) + "."
        if mates
        else ""
    )
    level = {
        "type": "string",
        "enum": list(LEVELS),
        "default": "info",
        "description": "How urgent it is; use warning or above only when it needs attention now.",
    }
    body = {"type": "string", "minLength": 1, "maxLength": 65536, "description": "The message text."}
    title = {"type": "string", "maxLength": 256, "description": "Optional short subject line."}
    return [
        types.Tool(
            name="roster",
            description=(
                f"List the members of {team}: each one's role and authority, whether they are connected right now, "
                f"and whether they are busy working.{you}"
            ),
            input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        ),
        types.Tool(
            name="send",
            description=(
                f"Send a direct message to one teammate on {team}. It reaches them at once if they are connected "
                f"and waits in their history otherwise.{roster_line}"
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "to": {"type": "string", "description": "The teammate's slot name (roster lists them)."},
                    "body": body,
                    "title": title,
                    "level": level,
                },
                "required": ["to", "body"],
                "additionalProperties": False,
            },
        ),
        types.Tool(
            name="broadcast",
            description=(
                f"Send a message to everyone on {team} at once. Use send instead for something meant for one teammate."
            ),
            input_schema={
                "type": "object",
                "properties": {"body": body, "title": title, "level": level},
                "required": ["body"],
                "additionalProperties": False,
            },
        ),
        types.Tool(
            name="recent",
            description=(
                f"Read recent messages on {team} that you can see (broadcasts and your direct messages), oldest "
                'first. New messages from teammates also arrive on their own as <channel source="ac7"> '
                "notifications; use this to catch up or to reread a conversation."
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "with": {"type": "string", "description": "Only your direct messages with this teammate."},
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": RECENT_MAX,
                        "default": RECENT_DEFAULT,
                        "description": "How many messages, newest ones (default 20).",
                    },
                },
                "additionalProperties": False,
            },
        ),
    ]


def _when(ms: Any) -> str:
    if isinstance(ms, bool) or not isinstance(ms, int):
        return "?"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_result(tool: str, result: Any, agent: str | None) -> str:
    """The text the model reads for a successful tool call."""
    if tool == "roster":
        mates = result.get("teammates", [])
        lines = [f"{len(mates)} member(s):"]
        for m in mates:
            you = " (you)" if m.get("name") == agent else ""
            status = "online" if m.get("connected") else "offline"
            if m.get("busy"):
                status += ", busy"
            if not m.get("connected"):
                status += f" (last seen {_when(m['lastSeen'])})" if m.get("lastSeen") else " (not seen yet)"
            lines.append(f"- {m.get('name')}{you}: {m.get('role')}, {m.get('authority')}; {status}")
        return "\n".join(lines)
    if tool in ("send", "broadcast"):
        message = result.get("message", {})
        target = f"sent to {message.get('to')}" if tool == "send" else "broadcast to the team"
        return f"{target} (message {message.get('id')})"
    if tool == "recent":
        messages = list(reversed(result.get("messages", [])))
        if not messages:
            return "no messages yet"
        lines = [f"{len(messages)} message(s), oldest first:"]
        for m in messages:
            to = m.get("to") or "everyone"
            head = f"[{_when(m.get('ts'))}] {m.get('from')} → {to}"
            if m.get("level") not in (None, "info"):
                head += f" ({m.get('level')})"
            if m.get("title"):
                head += f" [{m['title']}]"
            body = str(m.get("body", "")).replace("\n", "\n    ")
            lines.append(f"{head}: {body}")
        if result.get("nextBefore"):
            lines.append(f"(older messages exist; a larger limit, up to {RECENT_MAX}, shows more)")
        return "\n".join(lines)
    return json.dumps(result, ensure_ascii=False)


def _text_result(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


# --- the MCP server ---


async def _handshake_era_only(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    # Claude Code registers channels only on handshake-era connections: make its new-era probe fall back.
    if ctx.method == "server/discover":
        raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=ctx.method)
    return await call_next(ctx)


class Bridge:
    """The MCP server: tools answered through the runner, team messages forwarded as channel notifications."""

    def __init__(self, socket_path: str | None, key: str | None, **client_options: Any) -> None:
        self.client = RunnerClient(socket_path, key, self._on_runner_message, **client_options)
        self._notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.server: Server[Any] = Server(
            SERVER_NAME, version=__version__, on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        self.server.middleware.insert(0, _handshake_era_only)

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options(NotificationOptions(), {CHANNEL_CAPABILITY: {}})

    async def serve(
        self, read_stream: ReadStream[SessionMessage | Exception], write_stream: WriteStream[SessionMessage]
    ) -> None:
        dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(
            read_stream, write_stream, inline_methods=frozenset({"initialize"})
        )
        connection = Connection.for_loop(dispatcher)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.client.run)
                tg.start_soon(self._forward, connection)
                await serve_connection(
                    self.server,
                    dispatcher,
                    connection=connection,
                    lifespan_state=None,
                    init_options=self.initialization_options(),
                )
                tg.cancel_scope.cancel()
        finally:
            await self.client.close()

    def _on_runner_message(self, message: dict[str, Any]) -> None:
        identity = self.client.identity
        params = channel_params(message, identity["agent"] if identity else None)
        if params is None:
            return
        if self._notifications.qsize() >= _MAX_PENDING_NOTIFICATIONS:
            self._notifications.get_nowait()
            log.warning("Claude Code is not reading notifications; dropped the oldest")
        self._notifications.put_nowait(params)

    async def _forward(self, connection: Connection) -> None:
        await connection.initialized.wait()  # nothing unsolicited before the handshake completes
        while True:
            params = await self._notifications.get()
            await connection.notify(CHANNEL_METHOD, params)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        # The descriptions name the team and teammates, which the runner's hello tells us: wait for it a little.
        await self.client.wait_settled(_SETTLE_FOR_TOOLS_LIST)
        return types.ListToolsResult(tools=tool_definitions(self.client.identity))

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name not in TOOL_NAMES:
            return _text_result(f"unknown tool {params.name!r}; the ac7 tools are {', '.join(TOOL_NAMES)}", error=True)
        try:
            result = await self.client.request(params.name, params.arguments or {})
        except (RunnerUnavailable, ToolFailure) as exc:
            return _text_result(str(exc), error=True)
        agent = self.client.identity["agent"] if self.client.identity else None
        try:
            return _text_result(format_result(params.name, result, agent))
        except (AttributeError, KeyError, TypeError):
            return _text_result(json.dumps(result, ensure_ascii=False))


async def run_bridge(env: Mapping[str, str], **client_options: Any) -> None:
    """Serve MCP on this process's stdin/stdout until stdin closes."""
    bridge = Bridge(env.get(ENV_SOCKET), env.get(ENV_KEY), **client_options)
    async with stdio_server() as (read_stream, write_stream):
        await bridge.serve(read_stream, write_stream)


def exit_on_signals() -> None:
    """Leave at once, with status 0, on SIGINT/SIGTERM/SIGHUP (Claude Code sends SIGINT when it is done).

    A clean unwind is not possible: the SDK reads stdin in a worker thread that cancellation cannot interrupt, and
    there is nothing to save (every answer is flushed as it is written; the runner notices the closed socket).
    """

    def leave(_signum: int, _frame: object) -> None:
        os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


def main(env: Mapping[str, str]) -> None:
    exit_on_signals()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="ac7 mcp-bridge: %(levelname)s %(message)s")
    asyncio.run(run_bridge(env))
