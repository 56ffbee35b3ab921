"""Presence against a real broker: the /subscribe holder (filtering, reconnecting) and the busy reporter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridge_helpers import AGENT, Api, Team, eventually, port_of, roster_of, run_broker, write_team

from ac7_broker.server import RunningBroker
from ac7_cli.runner.presence import Backoff, BusyReporter, PresenceHolder


@dataclass
class Env:
    team: Team
    broker: RunningBroker
    apis: dict[str, Api]
    received: list[dict[str, Any]]

    def holder(self, **kwargs: Any) -> PresenceHolder:
        return PresenceHolder(self.broker.url, self.team.tokens[AGENT], AGENT, self.received.append, **kwargs)

    def retarget(self, broker: RunningBroker) -> None:
        self.broker = broker
        for api in self.apis.values():
            api.url = broker.url


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    team = write_team(tmp_path)
    brokers = [await run_broker(team)]
    async with aiohttp.ClientSession() as http:
        apis = {name: Api(http, brokers[0].url, token) for name, token in team.tokens.items()}
        state = Env(team, brokers[0], apis, [])
        try:
            yield state
        finally:
            await state.broker.stop()


async def _online(holder: PresenceHolder) -> bool:
    return holder.state == "online"


async def test_the_holder_shows_the_agent_connected_while_it_runs(env: Env) -> None:
    holder = env.holder()
    assert holder.state == "connecting"
    await holder.start()
    await eventually(lambda: _online(holder), what="holder online")

    async def connected(count: int) -> bool:
        return bool((await roster_of(env.apis["alice"]))[AGENT]["connected"] == count)

    await eventually(lambda: connected(1), what="ivy connected once")
    await holder.close()
    state: str = holder.state
    assert state == "offline"
    await eventually(lambda: connected(0), what="ivy disconnected")


async def test_the_holder_passes_on_only_messages_for_the_agent_from_others(env: Env) -> None:
    holder = env.holder()
    await holder.start()
    await eventually(lambda: _online(holder), what="holder online")
    alice, ivy = env.apis["alice"], env.apis[AGENT]

    await ivy.call("POST", "/push", {"body": "my own broadcast"})
    await ivy.call("POST", "/push", {"to": "alice", "body": "my own dm"})  # echoed to the sender's sockets
    await alice.call("POST", "/push", {"to": "dan", "body": "a dm between others"})
    await alice.call("POST", "/push", {"to": AGENT, "body": "for ivy", "data": {"k": 1}})
    await alice.call("POST", "/push", {"body": "for everyone"})

    async def two() -> bool:
        return len(env.received) >= 2

    await eventually(two, what="two messages")
    # The broker delivers in order on one socket, so nothing filtered can still be on its way after these two.
    assert [(m["from"], m["to"], m["body"]) for m in env.received] == [
        ("alice", AGENT, "for ivy"),
        ("alice", None, "for everyone"),
    ]
    assert env.received[0]["data"] == {"k": 1}
    await holder.close()


async def test_the_holder_reconnects_when_the_broker_comes_back_on_the_same_port(env: Env) -> None:
    holder = env.holder(backoff=Backoff(initial=0.05, maximum=0.5))
    await holder.start()
    await eventually(lambda: _online(holder), what="holder online")
    port = port_of(env.broker)

    await env.broker.stop()

    async def not_online() -> bool:
        return holder.state != "online"

    await eventually(not_online, what="holder notices the broker is gone")

    env.retarget(await run_broker(env.team, port))
    await eventually(lambda: _online(holder), what="holder back online")

    async def connected() -> bool:
        return bool((await roster_of(env.apis["alice"]))[AGENT]["connected"] == 1)

    await eventually(connected, what="ivy connected to the new broker")
    await env.apis["alice"].call("POST", "/push", {"to": AGENT, "body": "welcome back"})

    async def got_it() -> bool:
        return any(m["body"] == "welcome back" for m in env.received)

    await eventually(got_it, what="message after the reconnect")
    await holder.close()


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets_after_a_healthy_connection() -> None:
    lows = Backoff(initial=0.5, maximum=30.0, healthy_after=60.0, rand=lambda: 0.0)
    highs = Backoff(initial=0.5, maximum=30.0, healthy_after=60.0, rand=lambda: 1.0)
    low = [lows.next_delay() for _ in range(9)]
    high = [highs.next_delay() for _ in range(9)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert low == [h / 2 for h in high]  # jitter: anywhere between half and all of the base delay
    # A connection that failed quickly keeps the delay growing; one that stayed up a minute starts it over.
    assert highs.next_delay(connected_for=5.0) == 30.0
    assert highs.next_delay(connected_for=60.0) == 0.5
    assert highs.next_delay() == 1.0


async def _busy(api: Api) -> bool:
    return bool((await roster_of(api))[AGENT]["busy"])


async def test_busy_is_reported_while_calls_are_in_flight(env: Env) -> None:
    reporter = BusyReporter(env.broker.url, env.team.tokens[AGENT])
    alice = env.apis["alice"]
    assert not await _busy(alice)

    reporter.set_inflight(1)
    reporter.set_inflight(2)
    await eventually(lambda: _busy(alice), what="busy")
    reporter.set_inflight(1)
    assert await _busy(alice)

    async def idle() -> bool:
        return not await _busy(alice)

    reporter.set_inflight(0)
    await eventually(idle, what="not busy")
    await reporter.close()


async def test_busy_is_refreshed_before_the_broker_forgets_it(tmp_path: Path) -> None:
    team = write_team(tmp_path)
    broker = await run_broker(team, busy_ttl=0.5)
    try:
        async with aiohttp.ClientSession() as http:
            alice = Api(http, broker.url, team.tokens["alice"])
            reporter = BusyReporter(broker.url, team.tokens[AGENT], refresh_interval=0.1)
            reporter.set_inflight(1)
            await eventually(lambda: _busy(alice), what="busy")
            # Watch for four times the broker's TTL: without refreshes busy would lapse within it.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                assert await _busy(alice), "busy lapsed: the reporter did not refresh it"
                await asyncio.sleep(0.05)

            async def idle() -> bool:
                return not await _busy(alice)

            reporter.set_inflight(0)
            await eventually(idle, what="not busy")
            await reporter.close()
    finally:
        await broker.stop()


async def test_close_reports_not_busy(env: Env) -> None:
    reporter = BusyReporter(env.broker.url, env.team.tokens[AGENT])
    alice = env.apis["alice"]
    reporter.set_inflight(3)
    await eventually(lambda: _busy(alice), what="busy")
    await reporter.close()
    assert not await _busy(alice)
    reporter.set_inflight(1)  # after close: ignored, never raises
    await asyncio.sleep(0.2)
    assert not await _busy(alice)


async def test_set_inflight_never_blocks_even_when_the_broker_is_down(tmp_path: Path) -> None:
    reporter = BusyReporter("http://127.0.0.1:9", "ac7_" + "x" * 43)
    for n in (1, 0, 1, 0):
        reporter.set_inflight(n)  # returns at once; the failures are only logged
    await reporter.close()
