"""Agents' captured LLM activity (trace events), in its own database file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .tx import write_transaction
from .worker import DbWorker

MAX_PAGE = 1000
# Rows per prune transaction. Trace events are tens of KB, so this bounds each write-lock hold to a few MB of
# freed pages, and inserts queued on the same worker run between chunks.
PRUNE_CHUNK = 500

_MAX_INT64 = (1 << 63) - 1
# How long an upload's idempotency key is remembered. Uploaders retry within minutes; a day covers a laptop
# that slept with a POST in flight.
UPLOAD_KEY_TTL_MS = 24 * 3600 * 1000


class IdempotencyConflictError(ValueError):
    """An idempotency key came back with a different batch than the one it first stored."""


@dataclass(frozen=True, slots=True)
class UploadKey:
    """The client's idempotency key for one upload, and a digest of the request body it came with."""

    key: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class InsertResult:
    """`rows` just stored, or, for a replayed key, no rows and the count the first upload accepted."""

    rows: list[ActivityRow]
    accepted: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class ActivityRow:
    id: int
    agent: str
    kind: str
    ts: int
    created_at: int
    event_json: str

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.event_json)
        return value

    def to_json(self) -> dict[str, Any]:
        """The wire ``ActivityRow``. Parses the event; prefer ``to_json_text`` on hot paths."""
        return {"id": self.id, "agent": self.agent, "event": self.event, "createdAt": self.created_at}

    def to_json_text(self) -> str:
        """The wire ``ActivityRow`` as JSON text, splicing in the stored event text instead of re-encoding it.

        Safe because ``event_json`` is only ever text this module produced with ``json.dumps``.
        """
        agent = json.dumps(self.agent)
        return f'{{"id":{self.id},"agent":{agent},"event":{self.event_json},"createdAt":{self.created_at}}}'


def _encode_event(event: Mapping[str, Any]) -> tuple[str, int, str]:
    if not isinstance(event, Mapping):
        raise TypeError("each activity event must be a JSON object")
    kind = event.get("kind")
    ts = event.get("ts")
    if not isinstance(kind, str) or not kind:
        raise ValueError("activity event needs a non-empty string 'kind'")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError("activity event needs an integer 'ts'")
    # ensure_ascii (the default) keeps lone surrogates from "\udXXX" escapes storable; allow_nan=False keeps
    # the stored text valid JSON for to_json_text's splice.
    text = json.dumps(event, allow_nan=False, separators=(",", ":"))
    return kind, ts, text


def _int_or_none(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{what} must be an integer")
    return value


class ActivityStore:
    """Activity rows in the activity database. All methods run on that database's worker thread."""

    def __init__(self, worker: DbWorker, clock: Clock) -> None:
        self._worker = worker
        self._clock = clock

    async def insert_batch(self, agent: str, events: Sequence[Mapping[str, Any]]) -> list[ActivityRow]:
        """Store every event or none of them (one transaction); returns the rows in the given order.

        Each event's ``kind`` and ``ts`` are copied into columns; ``createdAt`` is one server time per batch.
        """
        return (await self.insert_upload(agent, events, None)).rows

    async def insert_upload(
        self, agent: str, events: Sequence[Mapping[str, Any]], upload_key: UploadKey | None
    ) -> InsertResult:
        """As `insert_batch`, remembering `upload_key` (for a day) in the same transaction: the same key with the
        same body again stores nothing and reports the first upload's count (`replayed`); with another body it
        raises IdempotencyConflictError."""
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        if not events:
            return InsertResult([], 0, replayed=False)
        return await self._worker.run(self._insert_upload, agent, list(events), upload_key)

    def _insert_upload(
        self, conn: sqlite3.Connection, agent: str, events: list[Mapping[str, Any]], upload_key: UploadKey | None
    ) -> InsertResult:
        # Encoding happens on this worker thread, off the event loop, and before the write lock is taken.
        encoded = [_encode_event(event) for event in events]
        created_at = self._clock()
        rows: list[ActivityRow] = []
        with write_transaction(conn):
            if upload_key is not None:
                conn.execute("DELETE FROM upload_keys WHERE created_at < ?", (created_at - UPLOAD_KEY_TTL_MS,))
                seen = conn.execute(
                    "SELECT digest, accepted FROM upload_keys WHERE agent = ? AND key = ?", (agent, upload_key.key)
                ).fetchone()
                if seen is not None:
                    if bytes(seen[0]) != upload_key.digest:
                        raise IdempotencyConflictError("this Idempotency-Key was already used for a different batch")
                    return InsertResult([], int(seen[1]), replayed=True)
                conn.execute(
                    "INSERT INTO upload_keys (agent, key, digest, accepted, created_at) VALUES (?, ?, ?, ?, ?)",
                    (agent, upload_key.key, upload_key.digest, len(encoded), created_at),
                )
            for kind, ts, text in encoded:
                cur = conn.execute(
                    "INSERT INTO activity (agent, kind, ts, created_at, event) VALUES (?, ?, ?, ?, ?)",
                    (agent, kind, ts, created_at, text),
                )
                row_id = cur.lastrowid
                assert row_id is not None
                rows.append(ActivityRow(row_id, agent, kind, ts, created_at, text))
        return InsertResult(rows, len(rows), replayed=False)

    async def list(
        self,
        agent: str,
        *,
        from_ts: int | None = None,
        to_ts: int | None = None,
        kind: str | Sequence[str] | None = None,
        limit: int = 200,
        before_id: int | None = None,
    ) -> tuple[list[ActivityRow], int | None]:
        """Newest-first (by id) page of ``agent``'s rows; ``from_ts``/``to_ts`` are inclusive bounds on
        the event's ``ts``; ``kind`` is one kind or any of several. Returns ``(rows, next_before_id)``, the
        latter None once a short page shows the end.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}")
        kinds = _kinds(kind)
        if kinds is not None and not kinds:
            return [], None
        before = _int_or_none(before_id, "before_id")
        params: dict[str, Any] = {
            "agent": agent,
            "limit": limit,
            "before": _MAX_INT64 if before is None else before,
            "from_ts": _int_or_none(from_ts, "from_ts"),
            "to_ts": _int_or_none(to_ts, "to_ts"),
        }
        rows = await self._worker.run(_list, params, kinds)
        return rows, rows[-1].id if len(rows) == limit else None

    async def prune(self, older_than_ms: int) -> int:
        """Delete rows whose event ``ts`` is before the cutoff; returns how many.

        Each chunk is its own short transaction and its own worker job, so neither other processes (waiting on
        the write lock) nor this process's own uploads (queued on the worker) wait behind a large prune.
        """
        total = 0
        while True:
            deleted = await self._worker.run(_prune_chunk, older_than_ms, PRUNE_CHUNK)
            total += deleted
            if deleted < PRUNE_CHUNK:
                return total

    async def count(self, agent: str | None = None) -> int:
        return await self._worker.run(_count, agent)


def _kinds(kind: str | Sequence[str] | None) -> list[str] | None:
    if kind is None:
        return None
    if isinstance(kind, str):
        return [kind]
    values = sorted(set(kind))
    if not all(isinstance(k, str) for k in values):
        raise ValueError("kind must be a string or a sequence of strings")
    return values


# Fixed SQL texts: optional filters are NULL-able parameters rather than string-built clauses. The ts tests are
# answered from the index's trailing ts column before any table row is read. INDEXED BY keeps the plan
# independent of statistics (stale sqlite_stat1 from a tiny table would otherwise pick a full scan).
_LIST_SQL = """
SELECT id, agent, kind, ts, created_at, event FROM activity INDEXED BY activity_agent_id
WHERE agent = :agent AND id < :before
  AND (:from_ts IS NULL OR ts >= :from_ts) AND (:to_ts IS NULL OR ts <= :to_ts)
ORDER BY id DESC LIMIT :limit
"""
_LIST_KIND_SQL = """
SELECT id, agent, kind, ts, created_at, event FROM activity INDEXED BY activity_agent_kind_id
WHERE agent = :agent AND kind = :kind AND id < :before
  AND (:from_ts IS NULL OR ts >= :from_ts) AND (:to_ts IS NULL OR ts <= :to_ts)
ORDER BY id DESC LIMIT :limit
"""
_LIST_KIND_IDS_SQL = """
SELECT id FROM activity INDEXED BY activity_agent_kind_id
WHERE agent = :agent AND kind = :kind AND id < :before
  AND (:from_ts IS NULL OR ts >= :from_ts) AND (:to_ts IS NULL OR ts <= :to_ts)
ORDER BY id DESC LIMIT :limit
"""
_ROW_BY_ID_SQL = "SELECT id, agent, kind, ts, created_at, event FROM activity WHERE id = ?"


def _list(conn: sqlite3.Connection, params: dict[str, Any], kinds: list[str] | None) -> list[ActivityRow]:
    if kinds is None:
        return [ActivityRow(*row) for row in conn.execute(_LIST_SQL, params)]
    if len(kinds) == 1:
        return [ActivityRow(*row) for row in conn.execute(_LIST_KIND_SQL, {**params, "kind": kinds[0]})]
    # Several kinds: walk each kind's (agent, kind, id) range newest-first from the index alone, keep the newest
    # :limit ids overall, then read just those rows. "kind IN (...)" would instead have SQLite gather and sort
    # every matching row of the agent, each carrying a large event, before applying the limit.
    ids: list[int] = []
    for value in kinds:
        ids.extend(row[0] for row in conn.execute(_LIST_KIND_IDS_SQL, {**params, "kind": value}))
    ids = sorted(ids, reverse=True)[: params["limit"]]
    rows = []
    for row_id in ids:
        row = conn.execute(_ROW_BY_ID_SQL, (row_id,)).fetchone()
        if row is not None:
            rows.append(ActivityRow(*row))
    return rows


def _prune_chunk(conn: sqlite3.Connection, cutoff: int, chunk: int) -> int:
    # Two steps rather than "DELETE ... WHERE id IN (subquery)", whose outer loop SQLite may plan as a scan.
    with write_transaction(conn):
        ids = conn.execute(
            "SELECT id FROM activity INDEXED BY activity_ts WHERE ts < ? ORDER BY ts LIMIT ?", (cutoff, chunk)
        ).fetchall()
        conn.executemany("DELETE FROM activity WHERE id = ?", ids)
    return len(ids)


def _count(conn: sqlite3.Connection, agent: str | None) -> int:
    if agent is None:
        row = conn.execute("SELECT count(*) FROM activity").fetchone()
    else:
        row = conn.execute("SELECT count(*) FROM activity WHERE agent = ?", (agent,)).fetchone()
    return int(row[0])
