"""The real `ac7 mcp-bridge` process, driven over stdio by the MCP client library, against a real runner link,
presence holder and broker; plus a fake runner for what the real one never does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import mcp_types as types
import pytest
from bridge_helpers import (
    AGENT,
    BRIDGE_ARGV,
    Api,
    BridgeProcess,
    FakeRunner,
    bridge_process,
    clean_env,
    eventually,
    history_of,
    message,
    private_dir,
    run_broker,
    write_team,
)

from ac7_cli.runner.bridge_link import RunnerLink
from ac7_cli.runner.presence import PresenceHolder

KEY = "K" * 43
TOOLS = {"roster", "send", "broadcast", "recent"}


@dataclass
class Env:
    apis: dict[str, Api]
    link: RunnerLink
    bridge_env: dict[str, str]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """Broker + runner link + presence holder, as `ac7 claude-code` sets them up for agent ivy."""
    team = write_team(tmp_path)
    broker = await run_broker(team)
    try:
        async with aiohttp.ClientSession() as http:
            apis = {name: Api(http, broker.url, token) for name, token in team.tokens.items()}
            with private_dir() as sdir:
                link = RunnerLink(sdir, KEY, AGENT, apis[AGENT].call)
                path = await link.start()
                holder = PresenceHolder(broker.url, team.tokens[AGENT], AGENT, on_message=link.publish)
                await holder.start()

                async def online() -> bool:
                    return holder.state == "online"

                await eventually(online, what="presence online")
                bridge_env = {**clean_env(), "AC7_RUNNER_SOCKET": str(path), "AC7_RUNNER_KEY": KEY}
                try:
                    yield Env(apis, link, bridge_env)
                finally:
                    await holder.close()
                    await link.close()
    finally:
        await broker.stop()


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def _call(bridge: BridgeProcess, tool: str, args: dict[str, Any] | None = None) -> types.CallToolResult:
    return await asyncio.wait_for(bridge.session.call_tool(tool, args or {}), 60)


async def test_initialize_advertises_the_channel_and_the_tools_have_schemas(env: Env) -> None:
    async with bridge_process(env.bridge_env) as bridge:
        assert bridge.init.server_info.name == "ac7"
        assert bridge.init.capabilities.experimental is not None
        assert "claude/channel" in bridge.init.capabilities.experimental
        assert bridge.init.capabilities.tools is not None

        listed = await bridge.session.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema["additionalProperties"] is False

        send = tools["send"].input_schema
        assert send["required"] == ["to", "body"]
        assert set(send["properties"]) == {"to", "body", "title", "level"}
        assert send["properties"]["level"]["enum"] == ["debug", "info", "notice", "warning", "error", "critical"]
        assert tools["broadcast"].input_schema["required"] == ["body"]
        assert tools["roster"].input_schema["properties"] == {}
        limit = tools["recent"].input_schema["properties"]["limit"]
        assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 100)
        assert "required" not in tools["recent"].input_schema
        # The descriptions come from the runner's hello: they name the team and the teammates.
        assert "team acme" in (tools["send"].description or "")
        assert "alice (lead, director)" in (tools["send"].description or "")
        assert "You are ivy" in (tools["roster"].description or "")


async def test_claude_codes_discover_probe_is_refused_so_it_falls_back_to_the_handshake(env: Env) -> None:
    """Claude Code probes `server/discover` first and only registers channels on a handshake-era connection."""
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE_ARGV,
        env=env.bridge_env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def rpc(frame: dict[str, Any]) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(frame).encode() + b"\n")
        await proc.stdin.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        return reply

    try:
        probe = await rpc(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "server/discover",
                "params": {
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": "2.1.328"},
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                },
            }
        )
        assert probe["error"]["code"] == -32601, probe
        init = await rpc(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"roots": {"listChanged": True}},
                    "clientInfo": {"name": "claude-code", "version": "2.1.328"},
                },
            }
        )
        assert init["result"]["protocolVersion"] == "2025-11-25", init
        assert init["result"]["capabilities"]["experimental"] == {"claude/channel": {}}
        assert init["result"]["serverInfo"]["name"] == "ac7"
    finally:
        proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def test_the_tools_act_on_the_broker_as_the_agent(env: Env) -> None:
    alice, dan = env.apis["alice"], env.apis["dan"]
    async with bridge_process(env.bridge_env) as bridge:
        sent = await _call(bridge, "send", {"to": "alice", "body": "review please", "title": "PR 7"})
        assert not sent.is_error, _text(sent)
        assert _text(sent).startswith("sent to alice (message ")
        inbox = await history_of(alice, **{"with": AGENT})
        assert [(m["from"], m["to"], m["title"], m["body"]) for m in inbox] == [
            ("ivy", "alice", "PR 7", "review please")
        ]

        cast = await _call(bridge, "broadcast", {"body": "deploy at noon", "level": "warning"})
        assert not cast.is_error, _text(cast)
        seen_by_dan = await history_of(dan)
        assert [(m["from"], m["to"], m["body"], m["level"]) for m in seen_by_dan] == [
            ("ivy", None, "deploy at noon", "warning")
        ]

        roster = await _call(bridge, "roster")
        assert not roster.is_error, _text(roster)
        lines = _text(roster).splitlines()
        assert "- ivy (you): engineer, individual-contributor; online" in lines
        assert any(line.startswith("- alice: lead, director; offline (last seen 20") for line in lines), lines

        await alice.call("POST", "/push", {"to": AGENT, "body": "looks good"})
        recent = await _call(bridge, "recent", {"with": "alice", "limit": 5})
        assert not recent.is_error, _text(recent)
        text = _text(recent)
        assert text.startswith("2 message(s), oldest first:")
        assert text.index("ivy → alice [PR 7]: review please") < text.index("alice → ivy: looks good")
        assert "deploy at noon" not in text  # a broadcast, filtered out by `with`

        unknown = await _call(bridge, "send", {"to": "nobody", "body": "hi"})
        assert unknown.is_error
        assert "no slot named 'nobody'" in _text(unknown)


async def test_a_dm_to_the_agent_becomes_a_channel_notification(env: Env) -> None:
    async with bridge_process(env.bridge_env) as bridge:
        await bridge.session.list_tools()
        pushed = await env.apis["alice"].call(
            "POST", "/push", {"to": AGENT, "title": "Heads up", "body": "the API changed", "level": "warning"}
        )
        note = await bridge.next_note()
        sent = pushed["message"]
        assert note.content == "Heads up\n\nthe API changed"
        assert note.meta == {
            "source": "ac7",
            "from": "alice",
            "to": "ivy",
            "level": "warning",
            "thread": "dm",
            "messageId": sent["id"],
            "ts": str(sent["ts"]),
        }

        pushed = await env.apis["dan"].call("POST", "/push", {"body": "lunch?"})
        note = await bridge.next_note()
        assert note.content == "lunch?"
        assert note.meta == {
            "source": "ac7",
            "from": "dan",
            "level": "info",
            "thread": "broadcast",
            "messageId": pushed["message"]["id"],
            "ts": str(pushed["message"]["ts"]),
        }


async def test_message_data_cannot_spoof_the_metadata(env: Env) -> None:
    async with bridge_process(env.bridge_env) as bridge:
        await bridge.session.list_tools()
        spoof = {"from": "mallory", "source": "x", "messageId": "fake", "to": "everyone", "thread": "x", "ts": "0"}
        pushed = await env.apis["alice"].call("POST", "/push", {"to": AGENT, "body": "hello", "data": spoof})
        note = await bridge.next_note()
        assert note.meta == {
            "source": "ac7",
            "from": "alice",
            "to": "ivy",
            "level": "info",
            "thread": "dm",
            "messageId": pushed["message"]["id"],
            "ts": str(pushed["message"]["ts"]),
        }
        assert note.content == "hello"
        assert all(isinstance(value, str) for value in note.meta.values())  # Claude Code drops non-strings


async def test_the_agents_own_messages_produce_no_notification(env: Env) -> None:
    async with bridge_process(env.bridge_env) as bridge:
        assert not (await _call(bridge, "broadcast", {"body": "my own news"})).is_error
        assert not (await _call(bridge, "send", {"to": "alice", "body": "my own dm"})).is_error
        await env.apis["alice"].call("POST", "/push", {"to": AGENT, "body": "sentinel"})
        note = await bridge.next_note()
        assert note.content == "sentinel"  # the broker delivers in order: nothing else came before it
        assert bridge.notes.empty()


async def test_the_bridge_itself_drops_own_and_foreign_messages(tmp_path: Path) -> None:
    """Even if a runner pushed them, the agent's own messages and DMs between others never reach the model."""
    with private_dir() as sdir:
        runner = FakeRunner(sdir / "bridge.sock", KEY)
        await runner.start()
        try:
            env = {**clean_env(), "AC7_RUNNER_SOCKET": str(runner.path), "AC7_RUNNER_KEY": KEY}
            async with bridge_process(env) as bridge:
                await bridge.session.list_tools()
                await asyncio.wait_for(runner.connected.wait(), 60)
                await runner.push(message("ivy", None, "own broadcast"))
                await runner.push(message("ivy", "alice", "own dm"))
                await runner.push(message("alice", "dan", "between others"))
                await runner.push(message("alice", "ivy", "sentinel", data={"from": "x"}))
                note = await bridge.next_note()
                assert note.content == "sentinel"
                assert note.meta is not None and note.meta["from"] == "alice"
                assert bridge.notes.empty()
        finally:
            await runner.stop()


async def test_the_bridge_reconnects_when_the_runner_socket_drops(tmp_path: Path) -> None:
    with private_dir() as sdir:
        runner = FakeRunner(sdir / "bridge.sock", KEY)
        await runner.start()
        try:
            env = {**clean_env(), "AC7_RUNNER_SOCKET": str(runner.path), "AC7_RUNNER_KEY": KEY}
            async with bridge_process(env) as bridge:
                await bridge.session.list_tools()
                await asyncio.wait_for(runner.connected.wait(), 60)
                runner.drop_all()
                await asyncio.wait_for(runner.connected.wait(), 60)
                assert runner.hellos == 2
                await runner.push(message("alice", "ivy", "after the reconnect"))
                assert (await bridge.next_note()).content == "after the reconnect"
                assert not (await _call(bridge, "roster")).is_error
        finally:
            await runner.stop()


async def test_without_the_runner_environment_the_bridge_starts_and_explains(tmp_path: Path) -> None:
    async with bridge_process(clean_env()) as bridge:
        assert "claude/channel" in (bridge.init.capabilities.experimental or {})
        assert {tool.name for tool in (await bridge.session.list_tools()).tools} == TOOLS
        result = await _call(bridge, "roster")
        assert result.is_error
        assert "`ac7 mcp-bridge` only works when started by `ac7 claude-code`" in _text(result)
        assert "AC7_RUNNER_SOCKET" in _text(result)


async def test_a_refused_key_makes_the_tools_explain(env: Env) -> None:
    async with bridge_process({**env.bridge_env, "AC7_RUNNER_KEY": "not-the-key"}) as bridge:
        result = await _call(bridge, "send", {"to": "alice", "body": "hi"})
        assert result.is_error
        assert "the ac7 runner refused this bridge (AC7_RUNNER_KEY does not match)" in _text(result)
        assert "`ac7 claude-code`" in _text(result)
    assert await history_of(env.apis["alice"]) == []


async def test_when_the_runner_closes_the_tools_say_so(env: Env) -> None:
    async with bridge_process(env.bridge_env) as bridge:
        assert not (await _call(bridge, "roster")).is_error
        await env.link.close()

        async def explained() -> str | None:
            result = await _call(bridge, "roster")
            return _text(result) if result.is_error and "shut down" in _text(result) else None

        assert "the ac7 runner has shut down" in await eventually(explained, what="shutdown explained")
