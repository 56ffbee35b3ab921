"""Opening, closing, file modes, schema versioning and durability of the two database files."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ac7_broker
from ac7_broker.store import ACTIVITY_DB_NAME, MAIN_DB_NAME, SchemaTooNewError, Store, StoreClosedError
from ac7_broker.store.schema import ACTIVITY_MIGRATIONS, MAIN_MIGRATIONS

pytestmark = pytest.mark.asyncio


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_files_are_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        s = await Store.open(tmp_path / "state")
        await s.messages.append("alice", None, None, "x", "info", {})
        await s.activity.insert_batch("alice", [{"kind": "opaque_http", "ts": 1}])
        files = sorted((tmp_path / "state").iterdir())
        names = {p.name for p in files}
        for db in (MAIN_DB_NAME, ACTIVITY_DB_NAME):
            assert {db, db + "-wal", db + "-shm"} <= names
        for p in files:
            assert _mode(p) == 0o600, p.name
        await s.close()
        assert _mode(tmp_path / "state") == 0o700
    finally:
        os.umask(old)


async def test_loose_modes_on_existing_files_are_tightened(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    await s.close()
    (tmp_path / MAIN_DB_NAME).chmod(0o644)
    (tmp_path / ACTIVITY_DB_NAME).chmod(0o666)
    s = await Store.open(tmp_path)
    try:
        assert _mode(tmp_path / MAIN_DB_NAME) == 0o600
        assert _mode(tmp_path / ACTIVITY_DB_NAME) == 0o600
    finally:
        await s.close()


async def test_pragmas(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:

        def read(conn: sqlite3.Connection) -> tuple[object, ...]:
            return tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version")
            )

        # synchronous NORMAL is 1.
        assert await s._main.run(read) == ("wal", 1, 1, 5000, len(MAIN_MIGRATIONS))
        assert await s._activity.run(read) == ("wal", 1, 1, 5000, len(ACTIVITY_MIGRATIONS))


async def test_reopen_sees_prior_data(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    msg = await s.messages.append("alice", "bob", "t", "persisted", "info", {"a": 1})
    raw, _ = await s.sessions.create("alice", 10_000_000_000, "ua")
    await s.totp.accept_step("alice", 42)
    (row,) = await s.activity.insert_batch("alice", [{"kind": "llm_exchange", "ts": 7}])
    await s.close()

    s = await Store.open(tmp_path)
    try:
        page, _ = await s.messages.history("bob")
        assert page == [msg]
        assert await s.sessions.touch(raw, 1, 1000) == ("alice", 1001)
        assert await s.totp.last_step("alice") == 42
        assert await s.totp.accept_step("alice", 42) is False
        assert (await s.activity.list("alice"))[0] == [row]
        # Reopening migrates nothing and creates nothing twice.
        assert await s.messages.count() == 1
    finally:
        await s.close()


_CRASH_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from ac7_broker.store import Store

    async def main(directory):
        store = await Store.open(directory)
        for i in range(200):
            await store.messages.append("alice", None, None, "m%d" % i, "info", {})
        await store.activity.insert_batch("alice", [{"kind": "opaque_http", "ts": i} for i in range(50)])
        await store.totp.accept_step("alice", 9)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_committed_writes_survive_kill_9(tmp_path: Path) -> None:
    package_root = str(Path(ac7_broker.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _CRASH_CHILD, str(tmp_path)], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    s = await Store.open(tmp_path)
    try:
        assert await s.messages.count() == 200
        assert await s.activity.count("alice") == 50
        assert await s.totp.last_step("alice") == 9
    finally:
        await s.close()


async def test_close_is_idempotent_and_finishes_pending_work(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    pending = [asyncio.ensure_future(s.messages.append("a", None, None, str(i), "info", {})) for i in range(50)]
    await asyncio.sleep(0)  # let the appends reach the worker queue before close is requested
    await asyncio.gather(s.close(), s.close())
    assert all(not t.exception() for t in pending)
    await s.close()
    with pytest.raises(StoreClosedError):
        await s.messages.count()
    with pytest.raises(StoreClosedError):
        await s.activity.count()
    s = await Store.open(tmp_path)
    try:
        assert await s.messages.count() == 50
    finally:
        await s.close()


async def test_activity_work_never_blocks_messaging(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:
        release = threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            release.wait(10)

        stuck = asyncio.ensure_future(s._activity.run(hold))
        try:
            # The activity worker is busy; messages, sessions and TOTP run on the main worker regardless.
            await asyncio.wait_for(s.messages.append("a", None, None, "x", "info", {}), 5)
            await asyncio.wait_for(s.totp.accept_step("a", 1), 5)
            assert not stuck.done()
        finally:
            release.set()
            await stuck


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    await s.close()
    conn = sqlite3.connect(tmp_path / MAIN_DB_NAME)
    conn.execute(f"PRAGMA user_version = {len(MAIN_MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError):
        await Store.open(tmp_path)


async def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    await s.messages.append("a", None, None, "x", "info", {})
    await s.close()
    # A file whose version stamp was lost converges instead of failing on existing tables.
    conn = sqlite3.connect(tmp_path / MAIN_DB_NAME)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    s = await Store.open(tmp_path)
    try:
        assert await s.messages.count() == 1
    finally:
        await s.close()
    conn = sqlite3.connect(tmp_path / MAIN_DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MAIN_MIGRATIONS)
    conn.close()


async def test_a_job_cannot_leave_a_transaction_open(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:

        def sloppy(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO totp_state (slot, last_step) VALUES ('ghost', 1)")

        def failing(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO totp_state (slot, last_step) VALUES ('ghost', 2)")
            raise KeyError("boom")

        with pytest.raises(RuntimeError, match="transaction open"):
            await s._main.run(sloppy)
        with pytest.raises(KeyError):
            await s._main.run(failing)
        # Neither write rode along with the next commit, and the connection is usable.
        assert await s.totp.accept_step("alice", 1) is True
        assert await s.totp.last_step("ghost") is None
