"""Browser sessions, stored only as a hash of the cookie value."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3

from .clock import Clock
from .worker import DbWorker


def session_id_hash(raw_id: str) -> str:
    # The raw id is 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force, and a leaked
    # database row cannot be replayed as a cookie.
    return hashlib.sha256(raw_id.encode("utf-8")).hexdigest()


class SessionStore:
    """Sessions in the main database. Expired rows read as missing; ``purge_expired`` removes them."""

    def __init__(self, worker: DbWorker, clock: Clock) -> None:
        self._worker = worker
        self._clock = clock

    async def create(self, slot: str, ttl_ms: int, user_agent: str | None) -> tuple[str, int]:
        """A new session for ``slot``; returns ``(raw_id, expires_at)``. The raw id is never stored."""
        if not isinstance(slot, str) or not slot:
            raise ValueError("slot must be a non-empty string")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise ValueError("ttl_ms must be a positive integer")
        raw_id = secrets.token_urlsafe(32)
        expires_at = await self._worker.run(self._create, session_id_hash(raw_id), slot, ttl_ms, user_agent)
        return raw_id, expires_at

    def _create(self, conn: sqlite3.Connection, id_hash: str, slot: str, ttl_ms: int, ua: str | None) -> int:
        now = self._clock()
        expires_at = now + ttl_ms
        conn.execute(
            "INSERT INTO sessions (id_hash, slot, created_at, expires_at, last_seen, user_agent)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (id_hash, slot, now, expires_at, now, ua),
        )
        return expires_at

    async def touch(self, raw_id: str, now: int, ttl_ms: int) -> tuple[str, int] | None:
        """Look a session up and slide its expiry to ``now + ttl_ms``.

        Returns ``(slot, expires_at)``, or None if it does not exist or had expired by ``now``.
        """
        if not isinstance(raw_id, str) or not raw_id:
            return None
        return await self._worker.run(_touch, session_id_hash(raw_id), now, ttl_ms)

    async def delete(self, raw_id: str) -> bool:
        """Delete one session (logout); True if it existed."""
        if not isinstance(raw_id, str) or not raw_id:
            return False
        return await self._worker.run(_delete, session_id_hash(raw_id)) > 0

    async def delete_for_slot(self, slot: str) -> int:
        """Delete every session of ``slot`` (e.g. on slot removal or TOTP re-enrolment)."""
        return await self._worker.run(_delete_for_slot, slot)

    async def purge_expired(self, now: int) -> int:
        return await self._worker.run(_purge_expired, now)


def _touch(conn: sqlite3.Connection, id_hash: str, now: int, ttl_ms: int) -> tuple[str, int] | None:
    # One statement, so the expiry check and the slide cannot interleave with a concurrent delete or purge.
    row = conn.execute(
        "UPDATE sessions SET expires_at = ?, last_seen = ? WHERE id_hash = ? AND expires_at > ?"
        " RETURNING slot, expires_at",
        (now + ttl_ms, now, id_hash, now),
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), int(row[1])


def _delete(conn: sqlite3.Connection, id_hash: str) -> int:
    return conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)).rowcount


def _delete_for_slot(conn: sqlite3.Connection, slot: str) -> int:
    return conn.execute("DELETE FROM sessions WHERE slot = ?", (slot,)).rowcount


def _purge_expired(conn: sqlite3.Connection, now: int) -> int:
    return conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,)).rowcount
