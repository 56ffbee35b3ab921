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

_COLUMNS = "id, agent, kind, ts, created_at, event"
_MAX_INT64 = (1 << 63) - 1


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
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        if not events:
            return []
        return await self._worker.run(self._insert_batch, agent, list(events))

    def _insert_batch(
        self, conn: sqlite3.Connection, agent: str, events: list[Mapping[str, Any]]
    ) -> list[ActivityRow]:
        # Encoding happens on this worker thread, off the event loop, and before the write lock is taken.
        encoded = [_encode_event(event) for event in events]
        created_at = self._clock()
        rows: list[ActivityRow] = []
        with write_transaction(conn):
            for kind, ts, text in encoded:
                cur = conn.execute(
                    "INSERT INTO activity (agent, kind, ts, created_at, event) VALUES (?, ?, ?, ?, ?)",
                    (agent, kind, ts, created_at, text),
                )
                row_id = cur.lastrowid
                assert row_id is not None
                rows.append(ActivityRow(row_id, agent, kind, ts, created_at, text))
        return rows

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
        sql, params = _list_query(
            agent,
            _int_or_none(from_ts, "from_ts"),
            _int_or_none(to_ts, "to_ts"),
            kinds,
            limit,
            _int_or_none(before_id, "before_id"),
        )
        rows = await self._worker.run(_fetch_rows, sql, params)
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


def _list_query(
    agent: str,
    from_ts: int | None,
    to_ts: int | None,
    kinds: list[str] | None,
    limit: int,
    before_id: int | None,
) -> tuple[str, dict[str, Any]]:
    """SQL text assembled only from fixed fragments; every value is a bound parameter."""
    params: dict[str, Any] = {
        "agent": agent,
        "limit": limit,
        "before": _MAX_INT64 if before_id is None else before_id,
        "from_ts": from_ts,
        "to_ts": to_ts,
    }
    where = "agent = :agent AND id < :before"
    if from_ts is not None:
        where += " AND ts >= :from_ts"
    if to_ts is not None:
        where += " AND ts <= :to_ts"
    if kinds is None or len(kinds) == 1:
        if kinds is not None:
            params["kind0"] = kinds[0]
            where += " AND kind = :kind0"
        sql = "SELECT " + _COLUMNS + " FROM activity WHERE " + where + " ORDER BY id DESC LIMIT :limit"
        return sql, params
    # Several kinds: one (agent, kind, id) range per kind, each already newest-first and cut at :limit, merged.
    # A plain "kind IN (...)" would make SQLite collect and sort every matching row of the agent first.
    branches = []
    for i, value in enumerate(kinds):
        params[f"kind{i}"] = value
        branches.append(
            "SELECT * FROM (SELECT id FROM activity WHERE "
            + where
            + f" AND kind = :kind{i} ORDER BY id DESC LIMIT :limit)"
        )
    sql = (
        "SELECT "
        + _COLUMNS
        + " FROM activity WHERE id IN (SELECT id FROM ("
        + " UNION ALL ".join(branches)
        + " ORDER BY id DESC LIMIT :limit)) ORDER BY id DESC"
    )
    return sql, params


def _fetch_rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[ActivityRow]:
    return [ActivityRow(*row) for row in conn.execute(sql, params)]


def _prune_chunk(conn: sqlite3.Connection, cutoff: int, chunk: int) -> int:
    return conn.execute(
        "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE ts < ? ORDER BY ts LIMIT ?)",
        (cutoff, chunk),
    ).rowcount


def _count(conn: sqlite3.Connection, agent: str | None) -> int:
    if agent is None:
        row = conn.execute("SELECT count(*) FROM activity").fetchone()
    else:
        row = conn.execute("SELECT count(*) FROM activity WHERE agent = ?", (agent,)).fetchone()
    return int(row[0])
