"""The real `ac7 serve` process: acknowledged writes survive kill -9, and SIGTERM/SIGINT shut it down promptly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from activity_samples import event_tag, tagged
from broker_harness import Team

pytestmark = pytest.mark.slow

AC7 = Path(sys.executable).with_name("ac7")
READY_TIMEOUT = 60.0  # a cold interpreter start on a loaded 2-core box can be slow
WAIT = 30.0
BATCH = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BrokerProcess:
    """`ac7 serve` on the team's config, as an operator runs it."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AC7_")}
        env["PYTHONUNBUFFERED"] = "1"
        for _attempt in range(3):  # another process may take a free port between our probe and the bind
            self.port = free_port()
            self.starts += 1
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(AC7), "serve", "--config", str(self.config), "--port", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    start_new_session=True,  # signals from the test's terminal never reach it
                )
            if await self._ready():
                return
        raise AssertionError(f"broker did not start; log:\n{self.log.read_text(errors='replace')[-3000:]}")

    async def _ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return True
                await asyncio.sleep(0.05)
        raise AssertionError("broker never answered /healthz")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        """Poll without blocking the loop, so in-process WebSocket clients keep answering the broker meanwhile."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"broker still running after {timeout} s")
            await asyncio.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def served(team: Team, tmp_path: Path) -> Iterator[BrokerProcess]:
    assert AC7.exists(), f"no ac7 script next to {sys.executable}"
    process = BrokerProcess(team.config_path, tmp_path / "broker.log")
    yield process
    process.kill()


@dataclass
class Ledger:
    """What the broker acknowledged (2xx) and what was merely attempted."""

    message_ids: list[str] = field(default_factory=list)
    acked_batches: list[tuple[str, list[str]]] = field(default_factory=list)  # (agent, tags)
    tried_batches: list[tuple[str, list[str]]] = field(default_factory=list)
    accepted: int = 0
    errors: int = 0


async def hammer(url: str, team: Team, ledger: Ledger, stop: asyncio.Event) -> None:
    """Four concurrent writers: two pushing messages, two uploading tagged activity batches."""

    async def pusher(http: aiohttp.ClientSession, sender: str, to: str | None) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body: dict[str, Any] = {"body": f"{sender} #{n}"}
            if to is not None:
                body["to"] = to
            try:
                async with http.post(f"{url}/push", json=body, headers=team.auth(sender)) as r:
                    if r.status == 201:
                        ledger.message_ids.append((await r.json())["message"]["id"])
            except (aiohttp.ClientError, OSError):
                ledger.errors += 1
                await asyncio.sleep(0.01)

    async def uploader(http: aiohttp.ClientSession, agent: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            events = tagged(f"crash/{agent}/{n}", BATCH)
            tags = [e["entry"]["path"] for e in events]
            ledger.tried_batches.append((agent, tags))
            try:
                async with http.post(
                    f"{url}/agents/{agent}/activity", json={"events": events}, headers=team.auth(agent)
                ) as r:
                    if r.status == 201:
                        accepted = (await r.json())["accepted"]
                        assert accepted == BATCH
                        ledger.accepted += accepted
                        ledger.acked_batches.append((agent, tags))
            except (aiohttp.ClientError, OSError):
                ledger.errors += 1
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            pusher(http, "alice", None),
            pusher(http, "ivy", "dan"),
            uploader(http, "ivy"),
            uploader(http, "dan"),
        )


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str], **params: Any) -> Any:
    while True:
        async with http.get(url, params={k: str(v) for k, v in params.items()}, headers=headers) as r:
            if r.status == 429:  # history is rate limited per slot; wait as told
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            assert r.status == 200, await r.text()
            return await r.json()


async def all_history(http: aiohttp.ClientSession, url: str, team: Team, viewer: str) -> list[str]:
    ids: list[str] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        page = await get_json(http, f"{url}/history", team.auth(viewer), **params)
        ids += [m["id"] for m in page["messages"]]
        before = page["nextBefore"]
        if before is None:
            return ids


async def all_activity_tags(http: aiohttp.ClientSession, url: str, team: Team, agent: str) -> list[str]:
    tags: list[str] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        page = await get_json(http, f"{url}/agents/{agent}/activity", team.auth(agent), **params)
        tags += [event_tag(row) for row in page["activity"]]
        before = page["nextBefore"]
        if before is None:
            return tags


async def test_acknowledged_writes_survive_kill_9(served: BrokerProcess, team: Team) -> None:
    await served.start()
    ledger = Ledger()
    stop = asyncio.Event()
    writers = asyncio.create_task(hammer(served.url, team, ledger, stop))

    async def progress() -> None:
        while len(ledger.message_ids) < 50 or len(ledger.acked_batches) < 10:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(progress(), WAIT)  # the stream is flowing...
    await asyncio.sleep(1.5)
    assert not writers.done()
    served.signal(signal.SIGKILL)  # ...and the broker dies mid-stream, with requests in flight
    assert await served.wait_exit(WAIT) == -signal.SIGKILL
    await asyncio.sleep(0.2)  # let the writers see the dead socket
    stop.set()
    await asyncio.wait_for(writers, WAIT)
    acked_ids = list(ledger.message_ids)
    assert len(acked_ids) >= 50 and len(ledger.acked_batches) >= 10

    await served.start()  # the same config and database files
    async with aiohttp.ClientSession() as http:
        seen = set(await all_history(http, served.url, team, "ivy"))  # ivy sees the broadcasts and her DMs
        lost = [i for i in acked_ids if i not in seen]
        assert not lost, f"{len(lost)} of {len(acked_ids)} acknowledged messages lost"

        stored: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for agent in ("ivy", "dan"):
            tags = await all_activity_tags(http, served.url, team, agent)
            stored[agent] = set(tags)
            counts[agent] = len(tags)
            assert len(tags) == len(stored[agent])  # nothing stored twice
    assert sum(counts.values()) >= ledger.accepted
    for agent, tags in ledger.acked_batches:
        missing = [t for t in tags if t not in stored[agent]]
        assert not missing, f"acknowledged batch of {agent} lost {missing}"
    # And every batch, acknowledged or cut off by the kill, is all there or not there at all.
    for agent, tags in ledger.tried_batches:
        present = sum(t in stored[agent] for t in tags)
        assert present in (0, len(tags)), f"{agent} batch half stored: {present}/{len(tags)}"


async def slow_body(gate: asyncio.Event) -> AsyncIterator[bytes]:
    yield b'{"events": ['
    await gate.wait()  # never set: the upload stays in flight until the broker goes away
    yield b"]}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_shutdown_is_prompt_with_open_sockets_and_a_request_in_flight(
    served: BrokerProcess, team: Team, sig: int
) -> None:
    await served.start()
    names = ["alice", "mike", "ivy", "dan"]
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(f"{served.url}/subscribe", params={"name": n}, headers=team.auth(n))
            for n in (names[i % 4] for i in range(50))
        ]

        async def all_connected() -> None:
            while True:
                async with http.get(f"{served.url}/roster", headers=team.auth("alice")) as r:
                    if sum(m["connected"] for m in (await r.json())["teammates"]) == 50:
                        return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_connected(), WAIT)

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
            while True:
                msg = await ws.receive()
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    return msg

        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        gate = asyncio.Event()

        async def in_flight() -> int | str:
            try:
                async with http.post(
                    f"{served.url}/agents/ivy/activity",
                    data=slow_body(gate),
                    headers={**team.auth("ivy"), "Content-Type": "application/json"},
                ) as r:
                    return r.status
            except (aiohttp.ClientError, OSError) as exc:
                return type(exc).__name__

        request = asyncio.create_task(in_flight())
        await asyncio.sleep(0.5)  # the request's headers and first chunk are with the broker
        assert not request.done()

        started = time.monotonic()
        served.signal(sig)
        code = await served.wait_exit(WAIT)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 3.0, f"shutdown took {elapsed:.2f} s"

        endings = await asyncio.wait_for(asyncio.gather(*readers), WAIT)
        assert all(ws.closed for ws in sockets)
        assert [m.type for m in endings].count(aiohttp.WSMsgType.CLOSE) == 50, [m.type for m in endings]
        assert {ws.close_code for ws in sockets} == {1001}  # "going away", sent by the broker
        outcome = await asyncio.wait_for(request, WAIT)  # answered or cut off, but not left hanging
        assert outcome != 201
        gate.set()
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
