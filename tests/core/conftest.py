"""Shared fixtures for the ac7_core tests: a clean environment and small config builders."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ac7_core import tokens

KEK_VARS = ("AC7_KEK", "AC7_KEK_PASSPHRASE", "AC7_CONFIG")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let the developer's AC7_* variables leak into a test."""
    for name in KEK_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the rest of the test; the original is restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(original)


def random_kek() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@pytest.fixture
def kek_env() -> dict[str, str]:
    """An environment mapping holding a fresh AC7_KEK (standard base64 of 32 random bytes)."""
    return {"AC7_KEK": random_kek()}


@pytest.fixture
def kek_key(kek_env: dict[str, str]) -> bytes:
    """The raw key behind `kek_env`."""
    return base64.b64decode(kek_env["AC7_KEK"])


@pytest.fixture
def other_kek_env() -> dict[str, str]:
    return {"AC7_KEK": random_kek()}


@pytest.fixture
def base_doc() -> dict[str, Any]:
    """A fresh, small, valid config document with hashed tokens only (no KEK-dependent secrets)."""
    return {
        "team": {"name": "acme"},
        "roles": {"lead": {"description": "Plans"}, "engineer": {"description": "Builds"}},
        "slots": [
            {"name": "alice", "role": "lead", "authority": "director", "tokenHash": tokens.hash_token("ac7_alice" * 3)},
            {"name": "bob", "role": "engineer", "tokenHash": tokens.hash_token("ac7_bob" * 4)},
        ],
    }


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[..., Path]:
    """Write a document (or raw text/bytes) to `tmp_path/ac7.json` and return the path."""

    def write(content: Any, name: str = "ac7.json") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    return write
