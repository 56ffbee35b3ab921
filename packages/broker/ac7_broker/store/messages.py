"""The message log: append, and viewer-scoped newest-first history."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .cursor import MAX_TS, Cursor
from .ids import new_message_id
from .tx import write_transaction
from .worker import DbWorker

MAX_PAGE = 1000
# Appends that arrive while a write is in flight share the next transaction, up to this many. A bigger batch
# would save little (a row costs ~34 µs at 100 per transaction, ~50 µs at 10) and delay its first caller longer.
MAX_BATCH = 128

# History runs in two steps. Step 1 (below) finds the page's rowids from the indexes alone: each class of message
# a viewer may see has its own index range already ordered by (ts, id), so every branch is a range scan that
# stops after :limit entries, and at most 3 * limit (rowid, ts, id) triples are merged. Step 2 reads just those
# rows by rowid. Nothing scans or sorts the table.
# The plan is pinned (INDEXED BY, and rowid point reads instead of a join) because it must not depend on
# statistics: sqlite_stat1 gathered while a table was tiny (say, on a fresh install) would otherwise steer SQLite
# into full scans and keep it there as the table grows.
# UNION (not UNION ALL) in the feed: a DM to oneself is both "received" and "sent", and must appear once.
_FEED_PAGE_SQL = """
SELECT rid FROM (
    SELECT * FROM (
        SELECT rowid AS rid, ts, id FROM messages INDEXED BY messages_recipient_ts
        WHERE recipient IS NULL AND (ts, id) < (:ts, :id)
        ORDER BY ts DESC, id DESC LIMIT :limit)
    UNION
    SELECT * FROM (
        SELECT rowid AS rid, ts, id FROM messages INDEXED BY messages_recipient_ts
        WHERE recipient = :viewer AND (ts, id) < (:ts, :id)
        ORDER BY ts DESC, id DESC LIMIT :limit)
    UNION
    SELECT * FROM (
        SELECT rowid AS rid, ts, id FROM messages INDEXED BY messages_dm_sender_ts
        WHERE recipient IS NOT NULL AND sender = :viewer AND (ts, id) < (:ts, :id)
        ORDER BY ts DESC, id DESC LIMIT :limit)
    ORDER BY ts DESC, id DESC LIMIT :limit)
"""

_THREAD_PAGE_SQL = """
SELECT rid FROM (
    SELECT * FROM (
        SELECT rowid AS rid, ts, id FROM messages INDEXED BY messages_dm_pair_ts
        WHERE sender = :viewer AND recipient = :other AND (ts, id) < (:ts, :id)
        ORDER BY ts DESC, id DESC LIMIT :limit)
    UNION ALL
    SELECT * FROM (
        SELECT rowid AS rid, ts, id FROM messages INDEXED BY messages_dm_pair_ts
        WHERE sender = :other AND recipient = :viewer AND (ts, id) < (:ts, :id)
        ORDER BY ts DESC, id DESC LIMIT :limit)
    ORDER BY ts DESC, id DESC LIMIT :limit)
"""

_SELF_THREAD_PAGE_SQL = """
SELECT rowid FROM messages INDEXED BY messages_dm_pair_ts
WHERE sender = :viewer AND recipient = :viewer AND (ts, id) < (:ts, :id)
ORDER BY ts DESC, id DESC LIMIT :limit
"""

_ROW_SQL = "SELECT id, ts, sender, recipient, title, body, level, data FROM messages WHERE rowid = ?"

_INSERT_SQL = (
    "INSERT INTO messages (id, ts, sender, recipient, title, body, level, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    ts: int
    sender: str
    recipient: str | None
    title: str | None
    body: str
    level: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The wire ``Message``; ``to`` is null for a broadcast."""
        return {
            "id": self.id,
            "ts": self.ts,
            "from": self.sender,
            "to": self.recipient,
            "title": self.title,
            "body": self.body,
            "level": self.level,
            "data": self.data,
        }

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.ts, self.id)


def _row_to_message(row: tuple[Any, ...]) -> Message:
    id_, ts, sender, recipient, title, body, level, data = row
    return Message(id_, ts, sender, recipient, title, body, level, json.loads(data))


def _require_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def history_query(viewer: str, with_slot: str | None, limit: int, before: Cursor | None) -> tuple[str, dict[str, Any]]:
    """The page-finding SQL and parameters ``history`` runs; public so tests can EXPLAIN it."""
    _require_name(viewer, "viewer")
    if with_slot is not None:
        _require_name(with_slot, "with_slot")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}")
    ts, id_ = before.bound() if before is not None else (MAX_TS, "")
    params: dict[str, Any] = {"viewer": viewer, "limit": limit, "ts": ts, "id": id_}
    if with_slot is None:
        return _FEED_PAGE_SQL, params
    if with_slot == viewer:
        return _SELF_THREAD_PAGE_SQL, params
    params["other"] = with_slot
    return _THREAD_PAGE_SQL, params


_Row = tuple[str, str | None, str | None, str, str, dict[str, Any]]


@dataclass(slots=True)
class _PendingAppend:
    row: _Row
    done: asyncio.Future[Message]


class MessageStore:
    """Messages in the main database. All methods run on the main database's worker thread.

    Appends use group commit: a caller's row is queued, and one worker job writes everything queued so far in
    a single transaction, then answers each caller. Under load this turns one transaction and one thread round
    trip per message into one per batch; an idle broker still writes a lone message at once. Every caller is
    answered only after the transaction holding its row committed, so "stored before acknowledged" holds.
    """

    def __init__(self, worker: DbWorker, clock: Clock) -> None:
        self._worker = worker
        self._clock = clock
        self._queue: list[_PendingAppend] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(
        self,
        sender: str,
        recipient: str | None,
        title: str | None,
        body: str,
        level: str,
        data: dict[str, Any],
    ) -> Message:
        """Store a message stamped with a fresh id and the current time.

        The id and ts are assigned on the worker thread, in queue order, so store order, id order and (clock
        permitting) ts order agree.
        """
        _require_name(sender, "sender")
        if recipient is not None:
            _require_name(recipient, "recipient")
        if title is not None and not isinstance(title, str):
            raise TypeError("title must be a string or None")
        if not isinstance(body, str) or not isinstance(level, str):
            raise TypeError("body and level must be strings")
        if not isinstance(data, dict):
            raise TypeError("data must be a JSON object (dict)")
        done: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._queue.append(_PendingAppend((sender, recipient, title, body, level, data), done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name="ac7-message-writer")
        # A caller that gives up (its client went away) cancels only its own future, never the shared batch: its
        # row may still be written, as it could be before batching once the job had started.
        return await done

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    outcomes = await self._worker.run(self._append_batch, [p.row for p in batch])
                except BaseException as exc:
                    for p in batch:
                        _settle(p.done, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for p, outcome in zip(batch, outcomes, strict=True):
                    _settle(p.done, outcome)
        finally:
            self._writer = None
            # Cancelled (the loop is shutting down) with rows still queued: their callers must not wait forever.
            for p in self._queue:
                _settle(p.done, asyncio.CancelledError())
            self._queue = []

    def _append_batch(self, conn: sqlite3.Connection, rows: list[_Row]) -> list[Message | Exception]:
        outcomes: list[Message | Exception] = []
        with write_transaction(conn):
            for sender, recipient, title, body, level, data in rows:
                try:
                    # ASCII-escaped so a lone surrogate (from a JSON \udXXX escape) stays storable.
                    data_text = json.dumps(data, allow_nan=False, separators=(",", ":"))
                except (TypeError, ValueError, RecursionError) as exc:
                    # One caller's unencodable data fails that caller only, not the rows sharing its batch.
                    outcomes.append(exc)
                    continue
                ts = self._clock()
                id_ = new_message_id(ts)
                conn.execute(_INSERT_SQL, (id_, ts, sender, recipient, title, body, level, data_text))
                # Hand back what history will return (e.g. tuples become lists), not the caller's mutable dict.
                outcomes.append(Message(id_, ts, sender, recipient, title, body, level, json.loads(data_text)))
        return outcomes

    async def history(
        self,
        viewer: str,
        *,
        with_slot: str | None = None,
        limit: int = 100,
        before: Cursor | None = None,
    ) -> tuple[list[Message], Cursor | None]:
        """Newest-first page of what ``viewer`` may see: broadcasts plus DMs it sent or received.

        With ``with_slot`` only the DM thread between the two (both directions; with itself: DMs to self).
        The returned cursor continues after the last row, and is None once a short page shows the end.
        """
        sql, params = history_query(viewer, with_slot, limit, before)
        messages = await self._worker.run(_fetch_messages, sql, params)
        next_cursor = messages[-1].cursor if len(messages) == limit else None
        return messages, next_cursor

    async def count(self) -> int:
        return await self._worker.run(_count)


def _settle(done: asyncio.Future[Message], outcome: Message | BaseException) -> None:
    if done.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        done.cancel()
    elif isinstance(outcome, Message):
        done.set_result(outcome)
    else:
        done.set_exception(outcome)


def _fetch_messages(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[Message]:
    # One read transaction so both steps see the same snapshot. Decoding here keeps JSON parsing off the loop.
    conn.execute("BEGIN")
    try:
        rowids = conn.execute(sql, params).fetchall()
        rows = [conn.execute(_ROW_SQL, rowid).fetchone() for rowid in rowids]
    finally:
        conn.execute("COMMIT")
    return [_row_to_message(row) for row in rows if row is not None]


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
