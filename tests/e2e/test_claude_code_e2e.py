"""`ac7 claude-code` with the real Claude Code CLI, against the fake Anthropic API and a real broker, offline.

The fake model first calls the ac7 `broadcast` MCP tool, then answers. So one run exercises the whole product:
briefing, trace host (real TLS both sides), SSE relay and reassembly, redaction, upload, the MCP bridge over the
runner's Unix socket, and teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from broker_harness import Running
from fake_anthropic import MODEL, FakeAnthropic, serve_fake_anthropic
from tls_fixtures import UpstreamPKI

pytestmark = pytest.mark.slow

AC7 = str(Path(sys.executable).parent / "ac7")
# Format-valid but fake: the test proves this string never reaches the broker's store.
API_KEY = "sk-ant-api03-" + "Zx9" * 31 + "AA"
ORIGINAL_MCP = b'{\n    "mcpServers": {"other": {"command": "true", "args": []}},\n    "x-note": "keep me"\n}\n'


async def _activity(http: aiohttp.ClientSession, running: Running, agent: str) -> list[dict[str, Any]]:
    async with http.get(f"{running.url}/agents/{agent}/activity", headers=running.auth("alice")) as r:
        assert r.status == 200
        return list((await r.json())["activity"])


async def _eventually(check: Any, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_claude_code_runs_traced_and_talks_to_the_team(
    tmp_path: Path, broker: Running, http: aiohttp.ClientSession, claude_binary: Path
) -> None:
    pki = UpstreamPKI.create(tmp_path / "pki")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".mcp.json").write_bytes(ORIGINAL_MCP)
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    fake = FakeAnthropic(tool_call=("mcp__ac7__broadcast", {"body": "build is green (from the e2e agent)"}))

    async with serve_fake_anthropic(fake, pki.server_context()):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path / "home"),
            "TMPDIR": str(tmp_root),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "TERM": "dumb",
            "AC7_URL": broker.url,
            "AC7_TOKEN": broker.team.tokens["ivy"],
            "CLAUDE_PATH": str(claude_binary),
            "ANTHROPIC_BASE_URL": fake.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "ENABLE_TOOL_SEARCH": "false",  # MCP tools in `tools`, so the fake model can call one directly
            "IS_SANDBOX": "1",  # CI runs as root; Claude Code allows skip-permissions as root only in a sandbox
        }
        (tmp_path / "home").mkdir()
        proc = await asyncio.create_subprocess_exec(
            AC7,
            "claude-code",
            "--upstream-ca",
            str(pki.ca_pem_path),
            "--",
            "-p",
            "Tell the team the build is green, then say hi.",
            cwd=project,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    stdout, stderr = out.decode(), err.decode()

    assert proc.returncode == 0, stderr
    assert fake.answer in stdout, (stdout, stderr)

    # The agent spoke to the team through the MCP bridge: its broadcast is in the broker, from ivy.
    async with http.get(f"{broker.url}/history", headers=broker.auth("alice")) as r:
        messages = (await r.json())["messages"]
    assert any(m["from"] == "ivy" and m["to"] is None and "build is green" in m["body"] for m in messages), messages
    assert fake.tool_results() and not any(b.get("is_error") for b in fake.tool_results())

    # Every /v1/messages call is an llm_exchange with the model, the conversation and the usage.
    async def exchanges() -> list[dict[str, Any]]:
        rows = await _activity(http, broker, "ivy")
        return [r["event"] for r in rows if r["event"]["kind"] == "llm_exchange"]

    events = await _eventually(exchanges)
    assert len(events) == len(fake.requests) == 2, (len(events), len(fake.requests))
    for event in events:
        entry = event["entry"]
        assert entry["request"]["model"] == fake.requests[0]["model"]
        assert entry["request"]["messages"], entry["request"]
        assert entry["response"]["model"] == MODEL
        assert entry["response"]["usage"]["inputTokens"] == 1234
        assert entry["response"]["usage"]["cacheReadInputTokens"] == 200
        assert entry["response"]["usage"]["outputTokens"] == 42
        assert entry["truncated"] is False
        assert entry["host"] == "localhost"
    first, second = sorted(events, key=lambda e: e["entry"]["startedAt"])
    assert first["entry"]["response"]["stopReason"] == "tool_use"
    assert first["entry"]["response"]["content"][0]["name"] == "mcp__ac7__broadcast"
    assert second["entry"]["response"]["content"] == [{"type": "text", "text": fake.answer}]
    # The team briefing was appended to Claude Code's system prompt.
    assert "Ship the billing service" in json.dumps(first["entry"]["request"]["system"])

    # The API key went upstream (the fake saw it) but is nowhere in what the broker stored.
    assert fake.headers[0].get("X-Api-Key") == API_KEY or fake.headers[0].get("x-api-key") == API_KEY
    stored = json.dumps(await _activity(http, broker, "ivy"))
    assert API_KEY not in stored
    db_bytes = b"".join(p.read_bytes() for p in broker.team.config_path.parent.glob("ac7-activity.db*") if p.is_file())
    assert API_KEY.encode() not in db_bytes
    with sqlite3.connect(broker.team.config_path.parent / "ac7-activity.db") as db:
        assert db.execute("SELECT count(*) FROM activity WHERE event LIKE ?", (f"%{API_KEY}%",)).fetchone()[0] == 0

    # Teardown: .mcp.json byte-identical, no CA file or session dir left behind.
    assert (project / ".mcp.json").read_bytes() == ORIGINAL_MCP
    assert not list(tmp_root.glob("ac7-ca-*")), list(tmp_root.iterdir())
    assert not list(tmp_root.glob("ac7-runner-*")), list(tmp_root.iterdir())
