"""Fixtures for the CLI tests; the helpers themselves live in cli_helpers (a uniquely named module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import Team, add_slot, clean_env, setup_team


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment for `ac7` (no AC7_* variables, HOME = tmp_path)."""
    return clean_env(tmp_path)


@pytest.fixture
def team(tmp_path: Path) -> Team:
    """A team made by `ac7 setup` in tmp_path: director alice (role lead)."""
    return setup_team(tmp_path)


@pytest.fixture
def big_team(team: Team) -> Team:
    """`team` plus bob (engineer), carol (engineer, manager) and hana (human-only lead)."""
    add_slot(team, "bob", "--role", "engineer", "--role-description", "Writes and tests code")
    add_slot(team, "carol", "--role", "engineer", "--authority", "manager")
    add_slot(team, "hana", "--role", "lead", "--human")
    return team
