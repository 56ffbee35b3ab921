"""A real broker on loopback over a real config and SQLite files, for every broker test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ac7_broker.server import RunningBroker, start_broker
from ac7_broker.settings import Settings
from ac7_core.config_file import create_config
from ac7_core.tokens import mint_token
from ac7_core.totp import new_secret

# Timings shrunk so tests run fast; everything else is the shipped default.
TEST_SETTINGS = Settings(config_poll_interval=0.05, history_rate=1000.0, history_burst=1000.0)

# name, role, authority, has bearer token, has TOTP
TEAM = [
    ("alice", "lead", "director", True, True),
    ("mike", "lead", "manager", True, True),
    ("ivy", "engineer", "individual-contributor", True, True),
    ("dan", "engineer", "individual-contributor", True, False),
    ("hana", "lead", "individual-contributor", False, True),  # a human-only slot
]


@dataclass
class Team:
    config_path: Path
    tokens: dict[str, str]
    totp: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@dataclass
class Running:
    team: Team
    broker: RunningBroker

    @property
    def url(self) -> str:
        return self.broker.url

    def auth(self, name: str) -> dict[str, str]:
        return self.team.auth(name)


def write_team(directory: Path) -> Team:
    tokens: dict[str, str] = {}
    secrets: dict[str, str] = {}
    slots: list[dict[str, Any]] = []
    for name, role, authority, bearer, totp in TEAM:
        entry: dict[str, Any] = {"name": name, "role": role, "authority": authority}
        if bearer:
            entry["token"] = tokens[name] = mint_token()
        if totp:
            entry["totpSecret"] = secrets[name] = new_secret()
        slots.append(entry)
    doc = {
        "team": {"name": "acme", "directive": "Ship the billing service", "brief": "Context."},
        "roles": {
            "lead": {"description": "Plans and reviews", "instructions": "Review every change."},
            "engineer": {"description": "Writes and tests code", "instructions": ""},
        },
        "slots": slots,
    }
    path = directory / "ac7.json"
    create_config(path, doc, env={})
    return Team(path, tokens, secrets)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AC7_KEK", "AC7_KEK_PASSPHRASE", "AC7_CONFIG", "AC7_URL", "AC7_TOKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def team(tmp_path: Path) -> Team:
    return write_team(tmp_path)


StartBroker = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(team: Team) -> AsyncIterator[StartBroker]:
    """Start (and at teardown stop) brokers on the team config; keyword args override TEST_SETTINGS."""
    running: list[RunningBroker] = []

    async def _start(**overrides: Any) -> Running:
        settings = dataclasses.replace(TEST_SETTINGS, **overrides)
        broker = await start_broker(team.config_path, "127.0.0.1", 0, settings)
        running.append(broker)
        return Running(team, broker)

    yield _start
    for broker in running:
        await broker.stop()


@pytest.fixture
async def broker(start: StartBroker) -> Running:
    return await start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies for 127.0.0.1 (an IP host), as a browser would for its own origin.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
