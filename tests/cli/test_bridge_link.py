"""The runner's bridge socket (`RunnerLink`) against a real broker, spoken to by hand over a real Unix socket."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridge_helpers import AGENT, Api, LinkClient, history_of, message, private_dir, run_broker, write_team

from ac7_cli.runner.bridge_link import MAX_FRAME, BrokerCallError, RunnerLink

KEY = "k" * 43


@dataclass
class Env:
    link: RunnerLink
    path: Path
    apis: dict[str, Api]

    async def client(self) -> LinkClient:
        client = await LinkClient.connect(self.path)
        hello = await client.hello(KEY)
        assert hello is not None and hello["event"] == "hello", hello
        return client


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    team = write_team(tmp_path)
    broker = await run_broker(team)
    try:
        async with aiohttp.ClientSession() as http:
            apis = {name: Api(http, broker.url, token) for name, token in team.tokens.items()}
            with private_dir() as sdir:
                link = RunnerLink(sdir, KEY, AGENT, apis[AGENT].call)
                path = await link.start()
                try:
                    yield Env(link, path, apis)
                finally:
                    await link.close()
    finally:
        await broker.stop()


async def test_hello_with_the_right_key_names_the_agent_team_and_teammates(env: Env) -> None:
    client = await LinkClient.connect(env.path)
    hello = await client.hello(KEY)
    assert hello == {
        "event": "hello",
        "agent": "ivy",
        "team": "acme",
        "teammates": [
            {"name": "alice", "role": "lead", "authority": "director"},
            {"name": "dan", "role": "engineer", "authority": "individual-contributor"},
        ],
    }
    client.close()


@pytest.mark.parametrize(
    "first",
    [
        {"op": "hello", "key": "wrong"},
        {"op": "hello", "key": KEY[:-1]},
        {"op": "hello"},
        {"op": "roster", "id": 1, "key": KEY},  # anything before a hello is refused, even with the key
    ],
)
async def test_a_bad_hello_is_closed_without_an_answer(env: Env, first: dict[str, Any]) -> None:
    client = await LinkClient.connect(env.path)
    await client.send(first)
    assert await client.recv() is None
    assert env.link.connected == 0


async def test_roster(env: Env) -> None:
    client = await env.client()
    answer = await client.request("roster")
    assert answer["ok"] is True, answer
    names = [m["name"] for m in answer["result"]["teammates"]]
    assert names == ["alice", "ivy", "dan"]


async def test_send_posts_a_dm_as_the_agent(env: Env) -> None:
    client = await env.client()
    answer = await client.request(
        "send", {"to": "alice", "body": "the build is green", "title": "CI", "level": "notice"}
    )
    assert answer["ok"] is True, answer
    sent = answer["result"]["message"]
    assert (sent["from"], sent["to"], sent["body"], sent["title"], sent["level"]) == (
        "ivy",
        "alice",
        "the build is green",
        "CI",
        "notice",
    )
    inbox = await history_of(env.apis["alice"], **{"with": "ivy"})
    assert [(m["from"], m["to"], m["body"]) for m in inbox] == [("ivy", "alice", "the build is green")]
    assert await history_of(env.apis["dan"]) == []  # a DM, not a broadcast


async def test_broadcast_posts_to_everyone(env: Env) -> None:
    client = await env.client()
    answer = await client.request("broadcast", {"body": "deploying now"})
    assert answer["ok"] is True, answer
    seen_by_dan = await history_of(env.apis["dan"])
    assert [(m["from"], m["to"], m["body"], m["level"]) for m in seen_by_dan] == [
        ("ivy", None, "deploying now", "info")
    ]


async def test_recent_reads_history_with_a_limit_and_a_peer(env: Env) -> None:
    for i in range(3):
        await env.apis["alice"].call("POST", "/push", {"to": "ivy", "body": f"dm {i}"})
    await env.apis["dan"].call("POST", "/push", {"to": "ivy", "body": "from dan"})
    await env.apis["dan"].call("POST", "/push", {"to": "alice", "body": "not for ivy"})
    client = await env.client()

    everything = await client.request("recent")
    assert [m["body"] for m in everything["result"]["messages"]] == ["from dan", "dm 2", "dm 1", "dm 0"]

    limited = await client.request("recent", {"with": "alice", "limit": 2})
    assert [m["body"] for m in limited["result"]["messages"]] == ["dm 2", "dm 1"]
    assert limited["result"]["nextBefore"] is not None


@pytest.mark.parametrize(
    ("op", "args", "fragment"),
    [
        ("send", {"to": "nobody", "body": "hi"}, "no slot named 'nobody'"),  # the broker's own 404 sentence
        ("send", {"to": "alice"}, "send needs `body`"),
        ("send", {"body": "hi"}, "send needs `to`"),
        ("send", {"to": "alice", "body": "hi", "level": "loud"}, "`level` must be one of debug, info"),
        ("send", {"to": "alice", "body": "hi", "cc": "dan"}, "send does not take 'cc'"),
        ("broadcast", {"body": "   "}, "broadcast needs `body`"),
        ("broadcast", {"body": "x" * 70_000}, "the broker rejected the request: body must be 1..65536"),
        ("recent", {"limit": 0}, "`limit` must be a whole number from 1 to 100"),
        ("recent", {"limit": 101}, "`limit` must be a whole number from 1 to 100"),
        ("recent", {"limit": True}, "`limit` must be a whole number"),
        ("recent", {"with": "not a name!"}, "the broker rejected the request: with must be a slot name"),
        ("fly", {}, "unknown operation 'fly'"),
    ],
)
async def test_errors_come_back_as_sentences(env: Env, op: str, args: dict[str, Any], fragment: str) -> None:
    client = await env.client()
    answer = await client.request(op, args)
    assert answer["ok"] is False, answer
    assert fragment in answer["error"], answer["error"]
    assert "Traceback" not in answer["error"]
    # The connection stays usable after a failed operation.
    assert (await client.request("roster"))["ok"] is True


async def test_an_unreachable_broker_is_a_sentence_too(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, "http://127.0.0.1:9", "ac7_" + "x" * 43)  # nothing listens on the discard port
        with private_dir() as sdir:
            link = RunnerLink(sdir, KEY, AGENT, api.call, briefing={"team": {"name": "acme"}, "teammates": []})
            path = await link.start()
            try:
                client = await LinkClient.connect(path)
                assert await client.hello(KEY) == {"event": "hello", "agent": "ivy", "team": "acme", "teammates": []}
                answer = await client.request("roster")
                assert answer["ok"] is False
                assert answer["error"].startswith("cannot reach the ac7 broker right now")
            finally:
                await link.close()


async def test_broker_call_errors_keep_the_status_and_sentence() -> None:
    exc = BrokerCallError(404, "no slot named 'x'")
    assert (exc.status, exc.message) == (404, "no slot named 'x'")
    assert "404" in str(exc)


async def test_a_frame_over_the_limit_closes_the_connection(env: Env) -> None:
    client = await env.client()
    # Just under the limit is fine (an unknown argument, answered with a sentence)...
    padding = "p" * (MAX_FRAME - 200)
    answer = await client.request("roster", {"pad": padding})
    assert answer["ok"] is False and "does not take 'pad'" in answer["error"]
    # ...one byte too many is not, newline or not.
    await client.send_raw(b'{"id":9,"op":"roster","args":{"pad":"' + b"p" * MAX_FRAME + b'"}}\n')
    assert await client.closed()
    assert env.link.connected == 0


async def test_invalid_json_closes_the_connection(env: Env) -> None:
    client = await env.client()
    await client.send_raw(b"this is not json\n")
    assert await client.closed()


async def test_the_socket_is_private_and_removed_at_close(tmp_path: Path) -> None:
    async def never_called(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("no broker call expected")

    with private_dir() as sdir:
        link = RunnerLink(sdir, KEY, AGENT, never_called, briefing={"team": {"name": "acme"}, "teammates": []})
        path = await link.start()
        assert path == sdir / "bridge.sock"
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        client = await LinkClient.connect(path)
        assert await client.hello(KEY) is not None
        await link.close()
        assert await client.next_event() == {"event": "shutdown"}
        assert await client.recv() is None
        assert not path.exists()
        with pytest.raises(OSError):
            await LinkClient.connect(path)


async def test_a_session_dir_others_can_enter_is_refused(tmp_path: Path) -> None:
    async def never_called(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("no broker call expected")

    with private_dir() as sdir:
        sdir.chmod(0o755)
        link = RunnerLink(sdir, KEY, AGENT, never_called)
        with pytest.raises(Exception, match="must be private"):
            await link.start()
        assert not (sdir / "bridge.sock").exists()


async def test_every_bridge_gets_every_message_for_the_agent_and_nothing_else(env: Env) -> None:
    first, second = await env.client(), await env.client()
    assert env.link.connected == 2

    env.link.publish(message("ivy", None, "my own broadcast"))  # never echoed back to the agent
    env.link.publish(message("ivy", "alice", "my own dm"))
    env.link.publish(message("alice", "dan", "a dm between others"))
    env.link.publish(message("alice", "ivy", "for ivy"))
    env.link.publish(message("dan", None, "for everyone"))

    for client in (first, second):
        got = [await client.next_event(), await client.next_event()]
        assert [e["message"]["body"] for e in got if e] == ["for ivy", "for everyone"]
        assert all(e and e["event"] == "message" for e in got)

    # A bridge that goes away stops counting; the other keeps receiving.
    first.close()
    await asyncio.wait_for(_until(lambda: env.link.connected == 1), 20)
    env.link.publish(message("alice", "ivy", "after one left"))
    event = await second.next_event()
    assert event is not None and event["message"]["body"] == "after one left"


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.02)
