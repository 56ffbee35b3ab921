"""Web Push subscriptions: one row per browser endpoint, owned by the slot that registered it last."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .tx import write_transaction
from .worker import DbWorker

MAX_ERROR_CHARS = 300

_COLUMNS = "id, slot, endpoint, p256dh, auth, created_at, last_success_at, last_error, failures"


@dataclass(frozen=True, slots=True)
class PushSubscription:
    id: str
    slot: str
    endpoint: str
    p256dh: str  # base64url of the browser's uncompressed P-256 public key
    auth: str  # base64url of the 16-byte auth secret
    created_at: int  # when this browser last (re)subscribed, epoch ms
    last_success_at: int | None
    last_error: str | None
    failures: int  # consecutive failed sends since the last success


def _row(row: tuple[Any, ...]) -> PushSubscription:
    return PushSubscription(*row)


class PushSubscriptionStore:
    """Subscriptions in the main database. All methods run on the main database's worker thread."""

    def __init__(self, worker: DbWorker, clock: Clock) -> None:
        self._worker = worker
        self._clock = clock

    async def upsert(self, slot: str, endpoint: str, p256dh: str, auth: str, *, max_per_slot: int) -> PushSubscription:
        """Register `endpoint` for `slot` (the caller validated every field).

        The endpoint is unique: the same browser subscribing again refreshes its keys, clears its error state and
        keeps its id; an endpoint registered by another slot moves to `slot` under a fresh id (so the previous
        owner's id no longer names it). A slot keeps at most `max_per_slot` subscriptions: the ones it
        (re)subscribed longest ago make room.
        """
        if max_per_slot < 1:
            raise ValueError("max_per_slot must be at least 1")
        return await self._worker.run(self._upsert, slot, endpoint, p256dh, auth, max_per_slot)

    def _upsert(
        self, conn: sqlite3.Connection, slot: str, endpoint: str, p256dh: str, auth: str, max_per_slot: int
    ) -> PushSubscription:
        now = self._clock()
        with write_transaction(conn):
            found = conn.execute("SELECT id, slot FROM push_subscriptions WHERE endpoint = ?", (endpoint,)).fetchone()
            id_ = found[0] if found is not None and found[1] == slot else str(uuid.uuid4())
            if found is not None:
                conn.execute("DELETE FROM push_subscriptions WHERE endpoint = ?", (endpoint,))
            # Oldest first; the row being written is not among them any more, so it can never evict itself.
            others = conn.execute(
                "SELECT id FROM push_subscriptions WHERE slot = ? ORDER BY created_at, id", (slot,)
            ).fetchall()
            for (old_id,) in others[: max(0, len(others) - max_per_slot + 1)]:
                conn.execute("DELETE FROM push_subscriptions WHERE id = ?", (old_id,))
            conn.execute(
                f"INSERT INTO push_subscriptions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 0)",  # noqa: S608
                (id_, slot, endpoint, p256dh, auth, now),
            )
        return PushSubscription(id_, slot, endpoint, p256dh, auth, now, None, None, 0)

    async def get(self, id_: str) -> PushSubscription | None:
        return await self._worker.run(_get, id_)

    async def list_for_slot(self, slot: str) -> list[PushSubscription]:
        return await self._worker.run(_list_for_slots, (slot,))

    async def list_for_slots(self, slots: Collection[str]) -> list[PushSubscription]:
        """Every subscription of any of `slots`, grouped by slot, oldest first within a slot."""
        if not slots:
            return []
        return await self._worker.run(_list_for_slots, tuple(dict.fromkeys(slots)))

    async def delete_for_owner(self, id_: str, slot: str) -> bool:
        """Delete subscription `id_` if `slot` owns it; False when it does not exist or belongs to someone else."""
        return (
            await self._worker.run(_exec, "DELETE FROM push_subscriptions WHERE id = ? AND slot = ?", (id_, slot)) > 0
        )

    async def delete_by_endpoint(self, endpoint: str) -> bool:
        return await self._worker.run(_exec, "DELETE FROM push_subscriptions WHERE endpoint = ?", (endpoint,)) > 0

    async def delete_for_slot(self, slot: str) -> int:
        """Forget every browser of `slot` (for a removed slot, or one whose credentials were replaced)."""
        return await self._worker.run(_exec, "DELETE FROM push_subscriptions WHERE slot = ?", (slot,))

    async def record_success(self, endpoint: str) -> None:
        await self._worker.run(
            _exec,
            "UPDATE push_subscriptions SET last_success_at = ?, last_error = NULL, failures = 0 WHERE endpoint = ?",
            (self._clock(), endpoint),
        )

    async def record_failure(self, endpoint: str, error: str) -> None:
        await self._worker.run(
            _exec,
            "UPDATE push_subscriptions SET last_error = ?, failures = failures + 1 WHERE endpoint = ?",
            (error[:MAX_ERROR_CHARS], endpoint),
        )

    async def count(self) -> int:
        return await self._worker.run(_count)


def _get(conn: sqlite3.Connection, id_: str) -> PushSubscription | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM push_subscriptions WHERE id = ?", (id_,)).fetchone()  # noqa: S608
    return None if row is None else _row(row)


def _list_for_slots(conn: sqlite3.Connection, slots: tuple[str, ...]) -> list[PushSubscription]:
    marks = ",".join("?" * len(slots))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM push_subscriptions WHERE slot IN ({marks}) ORDER BY slot, created_at, id",  # noqa: S608
        slots,
    ).fetchall()
    return [_row(r) for r in rows]


def _exec(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM push_subscriptions").fetchone()[0])
