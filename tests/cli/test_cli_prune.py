"""`ac7 prune-traces --older-than AGE`: old activity goes, recent activity stays, while the broker runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    BrokerProcess,
    Team,
    add_slot,
    assert_error,
    clean_env,
    http,
    opaque_event,
    run_ac7,
    setup_team,
)

DAY_MS = 86_400_000


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Team, BrokerProcess]]:
    team = setup_team(tmp_path)
    add_slot(team, "bob", "--role", "engineer", "--role-description", "Writes code")
    broker = BrokerProcess(team.config, team.dir, team.env).start()
    try:
        yield team, broker
    finally:
        broker.stop()


def upload(team: Team, broker: BrokerProcess, *timestamps: int) -> None:
    status, body = http(
        "POST",
        f"{broker.url}/agents/bob/activity",
        token=team.tokens["bob"],
        body={"events": [opaque_event(ts) for ts in timestamps]},
    )
    assert status == 201, body
    assert body == {"accepted": len(timestamps)}


def stored_ts(team: Team, broker: BrokerProcess) -> list[int]:
    status, body = http("GET", f"{broker.url}/agents/bob/activity?limit=1000", token=team.tokens["alice"])
    assert status == 200, body
    return sorted(row["event"]["ts"] for row in body["activity"])


def test_prune_removes_old_activity_and_keeps_recent(live: tuple[Team, BrokerProcess]) -> None:
    team, broker = live
    now = int(time.time() * 1000)
    old = [now - 30 * DAY_MS, now - 8 * DAY_MS]
    recent = [now - 6 * DAY_MS, now - 3_600_000]
    upload(team, broker, *old, *recent)
    assert stored_ts(team, broker) == sorted(old + recent)

    result = team.run("prune-traces", "--older-than", "7d")
    assert result.code == 0, str(result)
    assert result.out == "removed 2 event(s) older than 7d\n"
    assert stored_ts(team, broker) == sorted(recent)
    assert broker.proc is not None
    assert broker.proc.poll() is None  # safe while the broker runs

    again = team.run("prune-traces", "--older-than", "7d")
    assert again.code == 0, str(again)
    assert again.out.startswith("removed 0 ")
    assert stored_ts(team, broker) == sorted(recent)


def test_every_unit_is_understood(live: tuple[Team, BrokerProcess]) -> None:
    team, broker = live
    now = int(time.time() * 1000)
    ages_ms = [30 * DAY_MS, 10 * DAY_MS, 3 * DAY_MS, 2 * 3_600_000, 0]
    upload(team, broker, *(now - a for a in ages_ms))
    for age, removed in [("2w", 1), ("7d", 1), ("48h", 1), ("90m", 1), ("3600s", 0)]:
        result = team.run("prune-traces", "--older-than", age)
        assert result.code == 0, str(result)
        assert result.out.startswith(f"removed {removed} event(s)"), (age, result.out)
    assert stored_ts(team, broker) == [now]


def test_ac7_config_locates_the_store(live: tuple[Team, BrokerProcess], tmp_path: Path) -> None:
    team, broker = live
    now = int(time.time() * 1000)
    upload(team, broker, now - 20 * DAY_MS, now)
    work = tmp_path / "work"
    work.mkdir()
    result = run_ac7(
        "prune-traces", "--older-than", "1w", cwd=work, env=clean_env(work, {"AC7_CONFIG": str(team.config)})
    )
    assert result.code == 0, str(result)
    assert result.out.startswith("removed 1 ")
    assert stored_ts(team, broker) == [now]


@pytest.mark.parametrize("value", ["7x", "seven days", "-1d", "", "7", "d", "1.5d"])
def test_a_bad_age_is_one_line_and_removes_nothing(live: tuple[Team, BrokerProcess], value: str) -> None:
    team, broker = live
    now = int(time.time() * 1000)
    upload(team, broker, now - 30 * DAY_MS)
    result = team.run("prune-traces", "--older-than", value)
    assert_error(result, "--older-than")
    assert result.out == ""
    assert stored_ts(team, broker) == [now - 30 * DAY_MS]


def test_without_a_store_it_says_so(team: Team) -> None:
    assert_error(team.run("prune-traces", "--older-than", "7d"), "no activity store")
