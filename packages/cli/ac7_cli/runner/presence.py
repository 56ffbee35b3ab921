"""Presence: the runner holds the agent's `/subscribe` socket (so the roster shows it connected, and team messages
reach the bridge), and reports busy while an LLM call is in flight.

`PresenceHolder` keeps `GET /subscribe?name=<agent>` open (aiohttp WebSocket, bearer token, answering the broker's
pings, and pinging itself so a dead broker is noticed), reconnecting with growing, jittered backoff (0.5 s doubling to
30 s, back to 0.5 s once a connection has stayed up a minute). Every text frame that is a Message addressed to the
agent or broadcast, and not sent by the agent itself, goes to `on_message`.

`BusyReporter.set_inflight(n)` is called on the proxy's hot path and never blocks: one worker task posts
`POST /presence/busy {busy:true}` when the count leaves 0, refreshes it every `refresh_interval` (the broker forgets
busy after 30 s) and posts `{busy:false}` when it returns to 0. Posts are serialised, so the broker always ends up
with the latest state. Failures are logged at debug level and retried at the next change or refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp

log = logging.getLogger("ac7.runner.presence")

State = Literal["connecting", "online", "offline"]
OnMessage = Callable[[dict[str, Any]], Any]

_CONNECT_TIMEOUT = 15.0
_POST_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0  # a dead broker must not hold up the runner's teardown


class Backoff:
    """Delays that double from `initial` to `maximum`, with jitter, and start over after a healthy connection."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        healthy_after: float = 60.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.healthy_after = healthy_after
        self._rand = rand
        self._next = initial

    def next_delay(self, connected_for: float | None = None) -> float:
        """The wait before the next attempt; `connected_for` is how long the last connection lasted, if it opened."""
        if connected_for is not None and connected_for >= self.healthy_after:
            self._next = self.initial
        base = self._next
        self._next = min(self._next * 2, self.maximum)
        return base * (0.5 + 0.5 * self._rand())  # "equal jitter": between half and all of the base delay


class PresenceHolder:
    def __init__(
        self,
        url: str,
        token: str,
        agent: str,
        on_message: OnMessage,
        *,
        backoff: Backoff | None = None,
        heartbeat: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent = agent
        self._token = token
        self._on_message = on_message
        self._backoff = backoff or Backoff()
        self._heartbeat = heartbeat
        self._state: State = "connecting"
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def state(self) -> State:
        return self._state

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="presence")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._state = "offline"

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=_CONNECT_TIMEOUT, sock_connect=_CONNECT_TIMEOUT)
        headers = {"Authorization": f"Bearer {self._token}"}
        failing = False
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while not self._closing:
                self._state = "connecting"
                opened_at: float | None = None
                try:
                    async with session.ws_connect(
                        self.url + "/subscribe",
                        params={"name": self.agent},
                        autoping=True,
                        heartbeat=self._heartbeat,
                        timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT),
                    ) as ws:
                        opened_at = time.monotonic()
                        self._state = "online"
                        if failing:
                            log.info("presence: reconnected to %s", self.url)
                        failing = False
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                await self._deliver(msg.data)
                            elif msg.type == aiohttp.WSMsgType.ERROR:
                                break
                except aiohttp.WSServerHandshakeError as exc:
                    if not failing:
                        log.warning("presence: the broker refused the subscription (%s %s)", exc.status, exc.message)
                    failing = True
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if not failing:
                        log.warning("presence: cannot reach the broker at %s (%s); retrying", self.url, exc)
                    failing = True
                self._state = "offline"
                if opened_at is not None and not failing:
                    log.warning("presence: lost the connection to the broker; reconnecting")
                    failing = True
                connected_for = None if opened_at is None else time.monotonic() - opened_at
                await asyncio.sleep(self._backoff.next_delay(connected_for))

    async def _deliver(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.debug("presence: ignored a frame that is not JSON")
            return
        if not _is_message_for(message, self.agent):
            return
        try:
            result = self._on_message(message)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("presence: the message handler failed")


def _is_message_for(message: Any, agent: str) -> bool:
    if not isinstance(message, dict) or not isinstance(message.get("body"), str):
        return False
    sender, to = message.get("from"), message.get("to")
    return isinstance(sender, str) and sender != agent and (to is None or to == agent)


class BusyReporter:
    def __init__(self, url: str, token: str, *, refresh_interval: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.refresh_interval = refresh_interval
        self._inflight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._inflight > 0

    def set_inflight(self, n: int) -> None:
        """Record how many LLM calls are in flight. Call on the event loop's thread; returns at once."""
        if self._closed:
            return
        self._inflight = max(0, n)
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="busy-reporter")
            except RuntimeError:
                log.debug("busy reporter: set_inflight called outside the event loop; ignored")
                return
        self._wake.set()

    async def close(self) -> None:
        """Stop refreshing and tell the broker we are not busy."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._post(False)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        sent: bool | None = None
        sent_at = 0.0
        while True:
            self._wake.clear()
            wanted = self._inflight > 0
            now = time.monotonic()
            if wanted != sent or (wanted and now - sent_at >= self.refresh_interval):
                if await self._post(wanted):
                    sent, sent_at = wanted, now
                else:
                    sent = None  # unknown: post again at the next change or refresh
            if sent is None or wanted:
                wait: float | None = self.refresh_interval
                if sent is not None:
                    wait = max(0.0, sent_at + self.refresh_interval - time.monotonic())
            else:
                wait = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _post(self, busy: bool) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=_POST_TIMEOUT),
            )
        try:
            async with self._session.post(self.url + "/presence/busy", json={"busy": busy}) as response:
                if response.status >= 400:
                    log.debug("busy report answered %s", response.status)
                    return False
                return True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("busy report failed: %s", exc)
            return False
