"""Versioned, idempotent schema for the two database files."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .tx import write_transaction

# A migration is the list of statements that takes the schema from version N-1 to N; the list index is N-1.
# Never edit a shipped migration: append a new one. Statements use IF NOT EXISTS so a half-remembered state
# (e.g. a file restored from a copy) converges instead of failing.
Migration = Sequence[str]

MAIN_MIGRATIONS: Sequence[Migration] = (
    (
        """CREATE TABLE IF NOT EXISTS messages (
            id        TEXT PRIMARY KEY,
            ts        INTEGER NOT NULL,
            sender    TEXT NOT NULL,
            recipient TEXT NULL,
            title     TEXT NULL,
            body      TEXT NOT NULL,
            level     TEXT NOT NULL,
            data      TEXT NOT NULL
        )""",
        # Broadcasts (recipient IS NULL) and DMs received (recipient = ?) are both equality prefixes on this one
        # index, so each is a single range scan already ordered by (ts, id).
        "CREATE INDEX IF NOT EXISTS messages_recipient_ts ON messages (recipient, ts, id)",
        # DMs sent. Partial, so a sender who mostly broadcasts does not make the scan wade through broadcasts;
        # the trailing recipient lets SQLite confirm the partial-index condition without a table lookup.
        "CREATE INDEX IF NOT EXISTS messages_dm_sender_ts"
        " ON messages (sender, ts, id, recipient) WHERE recipient IS NOT NULL",
        # One direction of a DM thread.
        "CREATE INDEX IF NOT EXISTS messages_dm_pair_ts"
        " ON messages (sender, recipient, ts, id) WHERE recipient IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS sessions (
            id_hash    TEXT PRIMARY KEY,
            slot       TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            last_seen  INTEGER NOT NULL,
            user_agent TEXT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS sessions_slot ON sessions (slot)",
        "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at)",
        """CREATE TABLE IF NOT EXISTS totp_state (
            slot      TEXT PRIMARY KEY,
            last_step INTEGER NOT NULL
        )""",
    ),
    (
        # Web Push: one row per browser endpoint (unique), owned by the slot that registered it last.
        """CREATE TABLE IF NOT EXISTS push_subscriptions (
            id              TEXT PRIMARY KEY,
            slot            TEXT NOT NULL,
            endpoint        TEXT NOT NULL UNIQUE,
            p256dh          TEXT NOT NULL,
            auth            TEXT NOT NULL,
            created_at      INTEGER NOT NULL,
            last_success_at INTEGER NULL,
            last_error      TEXT NULL,
            failures        INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS push_subscriptions_slot ON push_subscriptions (slot, created_at, id)",
    ),
)

ACTIVITY_MIGRATIONS: Sequence[Migration] = (
    (
        """CREATE TABLE IF NOT EXISTS activity (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            agent      TEXT NOT NULL,
            kind       TEXT NOT NULL,
            ts         INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            event      TEXT NOT NULL
        )""",
        # ts rides along at the end of both listing indexes so from/to filters are decided from the index alone,
        # without a table lookup per skipped row.
        "CREATE INDEX IF NOT EXISTS activity_agent_id ON activity (agent, id, ts)",
        "CREATE INDEX IF NOT EXISTS activity_agent_kind_id ON activity (agent, kind, id, ts)",
        # prune() deletes by event time in small chunks; without this each chunk would rescan the table.
        "CREATE INDEX IF NOT EXISTS activity_ts ON activity (ts)",
    ),
    (
        # Idempotency keys of recent uploads: a retried batch whose first answer was lost is stored once.
        """CREATE TABLE IF NOT EXISTS upload_keys (
            agent      TEXT NOT NULL,
            key        TEXT NOT NULL,
            digest     BLOB NOT NULL,
            accepted   INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (agent, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS upload_keys_created_at ON upload_keys (created_at)",
    ),
)


class SchemaTooNewError(RuntimeError):
    """The file was written by a newer ac7 whose schema this version does not understand."""


def _user_version(conn: sqlite3.Connection) -> int:
    value = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(value)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Bring the file to ``len(migrations)``; returns the version it ends at."""
    target = len(migrations)
    if _user_version(conn) == target:
        return target
    with write_transaction(conn):
        # Re-read under the write lock: another process may have migrated while we waited for it.
        current = _user_version(conn)
        if current > target:
            raise SchemaTooNewError(f"database schema v{current} is newer than this ac7 understands (v{target})")
        for migration in migrations[current:]:
            for statement in migration:
                conn.execute(statement)
        # PRAGMA takes no bound parameters; target is an int we computed.
        conn.execute(f"PRAGMA user_version = {target:d}")
    return target
