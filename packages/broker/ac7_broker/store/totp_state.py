"""Per-slot TOTP replay guard: the last accepted time step."""

from __future__ import annotations

import sqlite3

from .worker import DbWorker

# A single statement is atomic across threads and processes alike: the compare and the write happen under
# SQLite's write lock, so two logins presenting the same code cannot both see the old step.
_ACCEPT_SQL = (
    "INSERT INTO totp_state (slot, last_step) VALUES (?, ?)"
    " ON CONFLICT (slot) DO UPDATE SET last_step = excluded.last_step"
    " WHERE totp_state.last_step < excluded.last_step"
)


class TotpState:
    def __init__(self, worker: DbWorker) -> None:
        self._worker = worker

    async def accept_step(self, slot: str, step: int) -> bool:
        """Record ``step`` iff it is greater than the slot's last accepted step. False means replay."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError("step must be a non-negative integer")
        return await self._worker.run(_accept_step, slot, step)

    async def last_step(self, slot: str) -> int | None:
        return await self._worker.run(_last_step, slot)

    async def reset(self, slot: str) -> None:
        """Forget the slot's last step, for a fresh enrolment whose codes have never been used."""
        await self._worker.run(_reset, slot)


def _accept_step(conn: sqlite3.Connection, slot: str, step: int) -> bool:
    # rowcount is sqlite3_changes(): 1 for the insert or the guarded update, 0 when the WHERE refused it.
    return conn.execute(_ACCEPT_SQL, (slot, step)).rowcount == 1


def _last_step(conn: sqlite3.Connection, slot: str) -> int | None:
    row = conn.execute("SELECT last_step FROM totp_state WHERE slot = ?", (slot,)).fetchone()
    return None if row is None else int(row[0])


def _reset(conn: sqlite3.Connection, slot: str) -> None:
    conn.execute("DELETE FROM totp_state WHERE slot = ?", (slot,))
