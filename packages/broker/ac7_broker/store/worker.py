"""One thread per database file, owning that file's only connection in this process."""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from .schema import Migration, migrate

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# RETURNING (3.35) and UPSERT ... WHERE (3.24) are used by the stores.
_MIN_SQLITE = (3, 35, 0)


class StoreClosedError(RuntimeError):
    """Raised when work is submitted to a database that is closing or closed."""


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite opens it.

    SQLite gives the -wal and -shm files it creates the main file's mode, so getting the main file right covers
    all three. Files left over from an earlier run with looser modes are tightened rather than trusted.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            if side.stat().st_mode & 0o077:
                side.chmod(0o600)
        except FileNotFoundError:
            pass


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit=True: no implicit BEGINs from the sqlite3 module, so every multi-statement write says exactly
    # where its transaction starts (BEGIN IMMEDIATE) and ends, and single statements commit on their own.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, autocommit=True)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not enable WAL on {path.name} (got {mode!r})")
        # In WAL mode NORMAL only fsyncs at checkpoints: a committed transaction survives the process crashing or
        # being killed (-9), which is what we need. The trade-off: on power loss or an OS crash the last few
        # transactions before the most recent checkpoint can be lost (the file itself stays consistent).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")
        # Without a limit the -wal file stays at its high-water mark (say, after a 16 MiB upload) forever.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT:d}")
    except BaseException:
        conn.close()
        raise
    return conn


class DbWorker:
    """Runs callables against one SQLite connection on one dedicated thread.

    Jobs run strictly in submission order (single-thread executor), so a caller that awaited an append is
    guaranteed that any later read sees it. Cancelling an awaiting task does not stop a job that already started:
    it runs to completion and its result is dropped.
    """

    def __init__(self, path: Path, *, name: str, migrations: Sequence[Migration]) -> None:
        self.path = path
        self._name = name
        self._migrations = migrations
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self._closed = asyncio.Event()

    async def start(self) -> None:
        """Open (creating if needed) the file and bring its schema up to date, on the worker thread."""
        if self._closing:
            raise StoreClosedError(f"{self._name} is closed")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; ac7 needs 3.35 or newer")
        _create_private(self.path)
        conn = _connect(self.path)
        try:
            migrate(conn, self._migrations)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` on the worker thread and return its result."""
        if self._closing:
            raise StoreClosedError(f"{self._name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._call, fn, *args, **kwargs))

    def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        conn = self._conn
        if conn is None:
            raise StoreClosedError(f"{self._name} is not open")
        try:
            result = fn(conn, *args, **kwargs)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if conn.in_transaction:
            # A transaction left open would hold locks and pin the WAL until the next job happened to commit it,
            # so treat it as the bug it is rather than let its writes ride along with someone else's commit.
            conn.execute("ROLLBACK")
            raise RuntimeError(f"{getattr(fn, '__name__', fn)!r} left a transaction open; its writes were discarded")
        return result

    def _shutdown_connection(self) -> None:
        conn, self._conn = self._conn, None
        # No "PRAGMA optimize" here: statistics gathered on a still-small table would mislead the planner later.
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Let queued jobs finish, then close the connection and stop the thread. Safe to call repeatedly."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            loop = asyncio.get_running_loop()
            # FIFO executor: this runs after every job submitted before close().
            await loop.run_in_executor(self._executor, self._shutdown_connection)
        finally:
            # No join: the close job has run (or, if this await was cancelled, is queued and will still run), and
            # blocking the event loop on the thread would gain nothing.
            self._executor.shutdown(wait=False)
            self._closed.set()
