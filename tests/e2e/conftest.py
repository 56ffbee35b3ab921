"""End-to-end fixtures: a real broker, the fake Anthropic API over TLS, and the real Claude Code binary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
# Shared helpers live beside the suites that grew them (the test tree has no packages).
for sub in ("broker", "cli"):
    if str(_TESTS / sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / sub))

from broker_harness import _clean_env, broker, http, start, team  # noqa: E402

__all__ = ["_clean_env", "broker", "claude_binary", "http", "start", "team"]

_REPO = _TESTS.parent


@pytest.fixture(scope="session")
def claude_binary() -> Path:
    """The real Claude Code CLI, installed by `make tools` from tools/package-lock.json."""
    path = Path(os.environ.get("AC7_TEST_CLAUDE") or _REPO / "tools" / "node_modules" / ".bin" / "claude")
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make test does it) to install the pinned Claude Code CLI")
    return path
