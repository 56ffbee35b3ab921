"""Delivering frames to live WebSockets without letting one slow peer hold up anyone else.

Each socket gets a bounded queue drained by its own writer task. Delivery only enqueues (O(1) per socket), so
the sender never waits on any peer; sends run concurrently, one in flight per socket. A socket whose backlog
reaches the bound is closed (1013 "try again later") instead of being allowed to grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterator

from aiohttp import web

log = logging.getLogger("ac7.broker.fanout")

CLOSE_TOO_SLOW = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_REVOKED = 4001
_CLOSE_TIMEOUT = 1.0


class Subscriber:
    def __init__(
        self, key: str, ws: web.WebSocketResponse, request: web.Request, limit: int, byte_limit: int, credential: str
    ) -> None:
        self.key = key
        self.ws = ws
        self.credential = credential  # what authenticated it, so a rotation or logout can cut it off
        self._request = request
        self._queue: asyncio.Queue[str] = asyncio.Queue(limit)
        # Frames are up to ~1 MB (a 64 K-char body of escaped non-ASCII text), so a frame count alone would let
        # one stalled peer pin hundreds of megabytes; the byte budget is what really bounds memory.
        self._byte_limit = byte_limit
        self.queued_bytes = 0
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer-{key}")
        self.closed = asyncio.Event()

    def offer(self, frame: str) -> bool:
        if self.closed.is_set():
            return False
        if self.queued_bytes + len(frame) > self._byte_limit and self.queued_bytes > 0:
            self.close_soon(CLOSE_TOO_SLOW, "too far behind")
            return False
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close_soon(CLOSE_TOO_SLOW, "too far behind")
            return False
        self.queued_bytes += len(frame)
        return True

    async def _write(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                await self.ws.send_str(frame)
                self.queued_bytes -= len(frame)
        except (ConnectionError, RuntimeError):
            self.close_soon(CLOSE_GOING_AWAY, "send failed")  # peer went away mid-send; the reader notices too

    def close_soon(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._writer.cancel()
            task = asyncio.get_running_loop().create_task(self._close(code, reason))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), _CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            # Cancelling the writer mid-send also cancels the drain future aiohttp shares between writers, which
            # makes close() raise CancelledError at once. Only a cancellation aimed at this task is ours to obey.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            self._abort()
        except (TimeoutError, ConnectionError, RuntimeError):
            self._abort()
        else:
            if code == CLOSE_TOO_SLOW:
                self._abort()  # a peer that stopped reading will not answer the close either

    def _abort(self) -> None:
        # Drop the TCP connection: the handler's read loop ends, and with it the socket's memory.
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def stop(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


_background: set[asyncio.Task[None]] = set()


class Fanout:
    """Live subscribers grouped by key (a slot name for messages, an agent name for activity streams)."""

    def __init__(self, queue_limit: int, byte_limit: int) -> None:
        self.queue_limit = queue_limit
        self.byte_limit = byte_limit
        self._by_key: dict[str, set[Subscriber]] = {}

    def attach(self, key: str, ws: web.WebSocketResponse, request: web.Request, credential: str) -> Subscriber:
        sub = Subscriber(key, ws, request, self.queue_limit, self.byte_limit, credential)
        self._by_key.setdefault(key, set()).add(sub)
        return sub

    async def detach(self, sub: Subscriber) -> None:
        group = self._by_key.get(sub.key)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._by_key[sub.key]
        await sub.stop()

    def deliver(self, keys: Collection[str] | None, frame: str) -> int:
        """Queue `frame` for every socket of `keys` (None: every socket); returns how many took it."""
        groups = self._by_key.values() if keys is None else [self._by_key.get(k, ()) for k in keys]
        return sum(sub.offer(frame) for group in groups for sub in list(group))

    def count(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    def subscribers(self) -> Iterator[Subscriber]:
        for group in list(self._by_key.values()):
            yield from list(group)

    def close_where(self, code: int, reason: str, keep: Callable[[Subscriber], bool]) -> int:
        """Close every subscriber for which `keep(sub)` is false; returns how many."""
        closing = [s for s in self.subscribers() if not keep(s)]
        for sub in closing:
            sub.close_soon(code, reason)
        return len(closing)

    async def close_all(self, grace: float) -> None:
        """Send every socket a going-away close, waiting at most `grace` seconds for the handshakes."""
        subs = list(self.subscribers())
        for sub in subs:
            sub.close_soon(CLOSE_GOING_AWAY, "broker shutting down")
        if subs:
            await asyncio.wait([asyncio.ensure_future(s.ws.close()) for s in subs], timeout=grace)
