"""The runner's side of the MCP bridge: a private Unix socket that `ac7 mcp-bridge` processes connect to.

Claude Code spawns `ac7 mcp-bridge` (a stdio MCP server). The bridge holds no broker token: it reaches the broker
only through this socket, and the runner makes the calls with its own token.

Protocol (newline-delimited UTF-8 JSON, one object per line, at most `MAX_FRAME` bytes per line; a longer line
closes the connection):

- bridge → runner, first frame: `{"op":"hello","key":"…"}`. The key is compared in constant time; a wrong key (or
  any other first frame) closes the connection without an answer. Otherwise the runner answers
  `{"event":"hello","agent":…,"team":…,"teammates":[{name,role,authority}]}`.
- bridge → runner: `{"id":N,"op":"roster"|"send"|"broadcast"|"recent","args":{…}}`; the runner answers
  `{"id":N,"ok":true,"result":…}` or `{"id":N,"ok":false,"error":"<a sentence the model can act on>"}`.
  Requests run concurrently; answers may come out of order.
- runner → bridge: `{"event":"message","message":<Message>}` for every team message the agent should see (addressed
  to it, or a broadcast; never its own), and `{"event":"shutdown"}` when the runner closes.

Several bridges may be connected at once (Claude Code can restart its MCP server); each gets every event.
The socket lives in the runner's 0700 session directory and is itself 0600; on Linux the peer's uid must be ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ac7_core.errors import Ac7Error

log = logging.getLogger("ac7.runner.bridge")

MAX_FRAME = 1024 * 1024  # bytes of JSON per frame, newline excluded
SOCKET_NAME = "bridge.sock"
LEVELS = ("debug", "info", "notice", "warning", "error", "critical")
RECENT_DEFAULT = 20
RECENT_MAX = 100

_HELLO_TIMEOUT = 10.0
_CLOSE_GRACE = 2.0
_MAX_QUEUED_EVENTS = 1000  # per bridge; beyond that events are dropped (they stay in the broker's history)
_MAX_CONCURRENT_REQUESTS = 8  # per bridge
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


class BrokerCallError(Exception):
    """The broker answered 4xx/5xx. `message` is the broker's own error sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"broker answered {self.status}: {self.message}"


class BrokerCall(Protocol):
    """The runner's authenticated broker call: parsed JSON on 2xx, `BrokerCallError` on 4xx/5xx."""

    def __call__(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Awaitable[Any]: ...


class FrameError(Exception):
    """The peer broke the framing rules (a frame too long, not JSON, not an object)."""


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    """One compact JSON line. Raises FrameError if it would exceed MAX_FRAME."""
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8", "replace")
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    return data + b"\n"


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream. The reader's limit must be at least MAX_FRAME."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise FrameError("connection ended in the middle of a frame") from None
        return None
    except asyncio.LimitOverrunError:
        raise FrameError(f"frame longer than {MAX_FRAME} bytes") from None
    if len(line) > MAX_FRAME + 1:
        raise FrameError(f"frame longer than {MAX_FRAME} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("frame is not a JSON object")
    return obj


def is_for_agent(message: Any, agent: str) -> bool:
    """Whether a broker Message should reach `agent`'s model: addressed to it or a broadcast, and not its own."""
    if not isinstance(message, Mapping):
        return False
    sender, to = message.get("from"), message.get("to")
    return isinstance(sender, str) and sender != agent and (to is None or to == agent)


class OpError(Exception):
    """An operation failed; the text is a sentence for the model."""


class _Bridge:
    """One authenticated bridge connection: frames go out through one writer task, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.queue: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue()
        self.events_queued = 0
        self.dropped = 0
        self.requests: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(_MAX_CONCURRENT_REQUESTS)

    def send(self, frame: bytes, *, event: bool = False) -> None:
        if event:
            self.events_queued += 1
        self.queue.put_nowait((frame, event))

    def finish(self) -> None:
        self.queue.put_nowait(None)


class RunnerLink:
    def __init__(
        self,
        session_dir: Path,
        key: str,
        agent: str,
        broker_call: BrokerCall,
        *,
        briefing: Mapping[str, Any] | None = None,
    ) -> None:
        if not key:
            raise ValueError("the bridge key must not be empty")
        self.session_dir = Path(session_dir)
        self.socket_path = self.session_dir / SOCKET_NAME
        self.agent = agent
        self._key = key.encode("utf-8")
        self._call = broker_call
        self._identity: dict[str, Any] | None = _identity(agent, briefing) if briefing is not None else None
        self._server: asyncio.Server | None = None
        self._bridges: set[_Bridge] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def connected(self) -> int:
        """How many bridges have said hello and are connected now."""
        return len(self._bridges)

    async def start(self) -> Path:
        """Listen on `<session_dir>/bridge.sock` (0600). Returns the socket path."""
        mode = self.session_dir.stat().st_mode
        if mode & 0o077:
            raise Ac7Error(f"{self.session_dir} must be private (0700) to hold the bridge socket, not {mode & 0o777:o}")
        if len(os.fsencode(self.socket_path)) > SUN_PATH_MAX:
            raise Ac7Error(f"the bridge socket path {self.socket_path} is too long for a Unix socket")
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path), limit=MAX_FRAME)
        self.socket_path.chmod(0o600)
        log.info("bridge socket listening at %s", self.socket_path)
        return self.socket_path

    def publish(self, message: Mapping[str, Any]) -> None:
        """Push a broker Message to every connected bridge. Never blocks, never raises."""
        if self._closing or not is_for_agent(message, self.agent):
            return
        try:
            frame = encode_frame({"event": "message", "message": message})
        except (FrameError, TypeError, ValueError) as exc:
            log.warning("not forwarding message %s to the bridge: %s", message.get("id"), exc)
            return
        for bridge in list(self._bridges):
            if bridge.events_queued >= _MAX_QUEUED_EVENTS:
                bridge.dropped += 1
                if bridge.dropped == 1 or bridge.dropped % 100 == 0:
                    log.warning("a bridge is not reading; dropped %d message(s) (still in history)", bridge.dropped)
                continue
            bridge.send(frame, event=True)

    async def close(self) -> None:
        """Say `shutdown` to every bridge, close them, stop listening and remove the socket. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for bridge in list(self._bridges):
            bridge.send(encode_frame({"event": "shutdown"}))
            bridge.finish()
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=_CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), _CLOSE_GRACE)
        with contextlib.suppress(OSError):
            self.socket_path.unlink(missing_ok=True)

    # --- connections ---

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except Exception:
            log.exception("bridge connection failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or not _peer_is_us(writer):
            return
        try:
            hello = await asyncio.wait_for(read_frame(reader), _HELLO_TIMEOUT)
        except (FrameError, TimeoutError, OSError) as exc:
            log.warning("refused a bridge connection: no valid hello (%s)", exc)
            return
        key = hello.get("key") if hello is not None and hello.get("op") == "hello" else None
        if not isinstance(key, str) or not hmac.compare_digest(key.encode("utf-8"), self._key):
            log.warning("refused a bridge connection: wrong or missing key")
            return
        identity = await self._get_identity()
        if self.closing:  # close() began while the briefing was fetched
            return
        bridge = _Bridge(reader, writer)
        bridge.send(encode_frame({"event": "hello", **identity}))
        self._bridges.add(bridge)
        log.info("a bridge connected (%d now)", len(self._bridges))
        writer_task = asyncio.create_task(self._write(bridge), name="bridge-writer")
        try:
            await self._read(bridge)
        finally:
            self._bridges.discard(bridge)
            for request in list(bridge.requests):
                request.cancel()
            bridge.finish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer_task, _CLOSE_GRACE)
            log.info("a bridge disconnected (%d left)", len(self._bridges))

    async def _read(self, bridge: _Bridge) -> None:
        # Ends at EOF, on a framing error, or when the writer closes the transport (shutdown, or a dead peer).
        while True:
            try:
                frame = await read_frame(bridge.reader)
            except FrameError as exc:
                log.warning("closing a bridge connection: %s", exc)
                return
            except OSError:
                return
            if frame is None:
                return
            request_id = frame.get("id")
            if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
                log.debug("ignoring a bridge frame without a usable id")
                continue
            task = asyncio.create_task(self._answer(bridge, request_id, frame.get("op"), frame.get("args")))
            bridge.requests.add(task)
            task.add_done_callback(bridge.requests.discard)

    async def _answer(self, bridge: _Bridge, request_id: int | str, op: Any, args: Any) -> None:
        async with bridge.slots:
            try:
                result = await self.run_op(op, args)
                reply: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
            except OpError as exc:
                reply = {"id": request_id, "ok": False, "error": str(exc)}
        try:
            frame = encode_frame(reply)
        except (FrameError, TypeError, ValueError):
            frame = encode_frame(
                {"id": request_id, "ok": False, "error": "the broker's answer was too large to pass on; ask for less"}
            )
        bridge.send(frame)

    @staticmethod
    async def _write(bridge: _Bridge) -> None:
        try:
            while (item := await bridge.queue.get()) is not None:
                frame, event = item
                if event:
                    bridge.events_queued -= 1
                bridge.writer.write(frame)
                await bridge.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            bridge.writer.close()  # wakes the reader if it is still waiting

    async def _get_identity(self) -> dict[str, Any]:
        if self._identity is None:
            try:
                briefing = await self._call("GET", "/briefing")
            except Exception as exc:
                log.warning("could not fetch the briefing for the bridge: %s", exc)
                return _identity(self.agent, None)
            self._identity = _identity(self.agent, briefing if isinstance(briefing, dict) else None)
        return self._identity

    # --- operations ---

    async def run_op(self, op: Any, args: Any) -> Any:
        """Run one bridge operation against the broker. Raises OpError with a sentence for the model."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise OpError("the tool arguments must be a JSON object")
        if op == "roster":
            _only(op, args, set())
            return await self._broker("GET", "/roster")
        if op == "send":
            _only(op, args, {"to", "body", "title", "level"})
            to = args.get("to")
            if not isinstance(to, str) or not to:
                raise OpError("send needs `to`: the slot name of the teammate to message (roster lists them)")
            return await self._broker("POST", "/push", {"to": to, **_message_fields(op, args)}, to=to)
        if op == "broadcast":
            _only(op, args, {"body", "title", "level"})
            return await self._broker("POST", "/push", _message_fields(op, args))
        if op == "recent":
            _only(op, args, {"with", "limit"})
            with_slot = args.get("with")
            if with_slot is not None and (not isinstance(with_slot, str) or not with_slot):
                raise OpError("recent: `with` must be a teammate's slot name, or left out for all your messages")
            limit = args.get("limit", RECENT_DEFAULT)
            if limit is None:
                limit = RECENT_DEFAULT
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= RECENT_MAX:
                raise OpError(
                    f"recent: `limit` must be a whole number from 1 to {RECENT_MAX} (default {RECENT_DEFAULT})"
                )
            return await self._broker("GET", "/history", query={"with": with_slot, "limit": limit})
        raise OpError(f"unknown operation {op!r}; the operations are roster, send, broadcast and recent")

    async def _broker(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        *,
        to: str | None = None,
    ) -> Any:
        if query is not None:
            query = {k: v for k, v in query.items() if v is not None}
        try:
            return await self._call(method, path, body, query)
        except BrokerCallError as exc:
            raise OpError(_sentence(exc, to)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise OpError(f"cannot reach the ac7 broker right now ({_describe(exc)}); try again shortly") from None
        except Exception as exc:
            log.exception("bridge operation %s %s failed", method, path)
            raise OpError(f"the ac7 runner hit an internal error ({type(exc).__name__}); try again") from None


def _only(op: str, args: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        takes = ", ".join(sorted(allowed)) if allowed else "no arguments"
        raise OpError(f"{op} does not take {', '.join(map(repr, extra))}; it takes {takes}")


def _message_fields(op: str, args: Mapping[str, Any]) -> dict[str, Any]:
    body = args.get("body")
    if not isinstance(body, str) or not body.strip():
        raise OpError(f"{op} needs `body`: the message text (not empty)")
    fields: dict[str, Any] = {"body": body}
    title = args.get("title")
    if title is not None:
        if not isinstance(title, str):
            raise OpError(f"{op}: `title` must be a string (or left out)")
        if title:
            fields["title"] = title
    level = args.get("level")
    if level is not None:
        if level not in LEVELS:
            raise OpError(f"{op}: `level` must be one of {', '.join(LEVELS)} (default info)")
        fields["level"] = level
    return fields


def _sentence(exc: BrokerCallError, to: str | None) -> str:
    status, message = exc.status, exc.message.strip().rstrip(".") or "no detail"
    if status == 404 and to is not None:
        return f"{message}; call roster to see the team's slot names"
    if status == 401:
        return (
            "the broker no longer accepts this agent's token (was it rotated?); "
            "the user must restart `ac7 claude-code` with the new token"
        )
    if status == 403:
        return f"the broker refused: {message}"
    if status == 413:
        return f"too large for the broker: {message}; send something shorter"
    if status == 429:
        return f"{message}; wait a few seconds before trying again"
    if status >= 500:
        return f"the broker failed ({status}: {message}); try again shortly"
    return f"the broker rejected the request: {message}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _identity(agent: str, briefing: Mapping[str, Any] | None) -> dict[str, Any]:
    team = ""
    teammates: list[dict[str, Any]] = []
    if briefing is not None:
        team_block = briefing.get("team")
        if isinstance(team_block, dict) and isinstance(team_block.get("name"), str):
            team = team_block["name"]
        for mate in briefing.get("teammates") or []:
            if isinstance(mate, dict) and isinstance(mate.get("name"), str) and mate["name"] != agent:
                teammates.append({k: mate.get(k) for k in ("name", "role", "authority")})
    return {"agent": agent, "team": team, "teammates": teammates}


def _peer_is_us(writer: asyncio.StreamWriter) -> bool:
    """On Linux, refuse a peer running as another user (the 0700 directory should already make that impossible)."""
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or peercred is None:
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except OSError:
        return True
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        log.warning("refused a bridge connection from uid %d", uid)
        return False
    return True
