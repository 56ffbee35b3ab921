"""Sessions: hashed at rest, sliding expiry, deletion."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ac7_broker.store import Store

pytestmark = pytest.mark.asyncio

T0 = 1_700_000_000_000
TTL = 7 * 24 * 3600 * 1000


class FixedClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path, clock=FixedClock(T0))
    yield s
    await s.close()


def _db_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("ac7.db*")))


async def test_raw_session_id_is_never_stored(tmp_path: Path) -> None:
    s = await Store.open(tmp_path, clock=FixedClock(T0))
    raws = [(await s.sessions.create("alice", TTL, "Mozilla/5.0"))[0] for _ in range(20)]
    hashes = [hashlib.sha256(raw.encode()).hexdigest().encode() for raw in raws]
    # While open (rows still in the WAL) and after close (checkpointed into the main file).
    for moment in ("open", "closed"):
        if moment == "closed":
            await s.close()
        blob = _db_bytes(tmp_path)
        for raw, digest in zip(raws, hashes, strict=True):
            assert raw.encode() not in blob, moment
            assert digest in blob, moment  # the scan does see what is stored


async def test_create_and_touch(store: Store) -> None:
    raw, expires_at = await store.sessions.create("alice", TTL, "ua")
    assert expires_at == T0 + TTL
    assert len(raw) >= 43
    assert await store.sessions.touch(raw, T0 + 1000, TTL) == ("alice", T0 + 1000 + TTL)
    assert await store.sessions.touch("not-a-session", T0, TTL) is None
    assert await store.sessions.touch("", T0, TTL) is None
    other, _ = await store.sessions.create("alice", TTL, None)
    assert other != raw


async def test_expiry_slides_on_touch(store: Store) -> None:
    raw, expires_at = await store.sessions.create("alice", 100, None)
    assert expires_at == T0 + 100
    assert await store.sessions.touch(raw, T0 + 60, 100) == ("alice", T0 + 160)
    # Past the original expiry but within the slid one.
    assert await store.sessions.touch(raw, T0 + 150, 100) == ("alice", T0 + 250)
    assert await store.sessions.touch(raw, T0 + 249, 100) == ("alice", T0 + 349)


async def test_expired_sessions_read_as_missing(store: Store) -> None:
    raw, expires_at = await store.sessions.create("alice", 100, None)
    assert await store.sessions.touch(raw, expires_at, 100) is None
    assert await store.sessions.touch(raw, expires_at + 1, 100) is None
    raw2, expires2 = await store.sessions.create("bob", 100, None)
    assert await store.sessions.touch(raw2, expires2 + 5000, 100) is None
    assert await store.sessions.touch(raw2, expires2 - 1, 100) == ("bob", expires2 - 1 + 100)


async def test_delete_and_delete_for_slot(store: Store) -> None:
    a1, _ = await store.sessions.create("alice", TTL, None)
    a2, _ = await store.sessions.create("alice", TTL, None)
    b1, _ = await store.sessions.create("bob", TTL, None)
    assert await store.sessions.delete(a1) is True
    assert await store.sessions.delete(a1) is False
    assert await store.sessions.touch(a1, T0, TTL) is None
    assert await store.sessions.touch(a2, T0, TTL) is not None
    assert await store.sessions.delete_for_slot("alice") == 1
    assert await store.sessions.touch(a2, T0, TTL) is None
    assert await store.sessions.touch(b1, T0, TTL) == ("bob", T0 + TTL)


async def test_purge_expired(store: Store) -> None:
    short, _ = await store.sessions.create("alice", 10, None)
    long_, _ = await store.sessions.create("alice", 1000, None)
    assert await store.sessions.purge_expired(T0 + 10) == 1
    assert await store.sessions.purge_expired(T0 + 10) == 0
    assert await store.sessions.touch(long_, T0 + 20, 1000) is not None
    assert await store.sessions.touch(short, T0 + 5, 1000) is None


async def test_create_validates(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.sessions.create("", TTL, None)
    with pytest.raises(ValueError):
        await store.sessions.create("alice", 0, None)
