"""Opens both database files of a broker and wires the stores to their workers."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from .activity import ActivityStore
from .clock import Clock, wall_clock_ms
from .messages import MessageStore
from .push_subscriptions import PushSubscriptionStore
from .schema import ACTIVITY_MIGRATIONS, MAIN_MIGRATIONS
from .sessions import SessionStore
from .totp_state import TotpState
from .worker import DbWorker

MAIN_DB_NAME = "ac7.db"
# Separate file and separate worker: a burst of multi-megabyte trace uploads queues behind its own write lock
# and thread, never behind (or in front of) message appends and logins.
ACTIVITY_DB_NAME = "ac7-activity.db"


class Store:
    """The broker's persistent state: ``messages``, ``sessions``, ``totp`` and ``push`` (Web Push subscriptions) in
    ``ac7.db``, ``activity`` in ``ac7-activity.db``.

    Create with ``await Store.open(directory)``; finish with ``await store.close()`` (or ``async with``).
    """

    def __init__(self, main: DbWorker, activity: DbWorker, clock: Clock) -> None:
        self._main = main
        self._activity = activity
        self.messages = MessageStore(main, clock)
        self.sessions = SessionStore(main, clock)
        self.totp = TotpState(main)
        self.push = PushSubscriptionStore(main, clock)
        self.activity = ActivityStore(activity, clock)

    @classmethod
    async def open(cls, directory: str | Path, *, clock: Clock = wall_clock_ms) -> Store:
        """Open (creating if needed, 0600) both files in ``directory`` and bring their schemas up to date."""
        directory = Path(directory)
        # Only a directory we create gets 0700; an existing one (the config dir) keeps the owner's choice.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        main = DbWorker(directory / MAIN_DB_NAME, name="ac7-db-main", migrations=MAIN_MIGRATIONS)
        activity = DbWorker(directory / ACTIVITY_DB_NAME, name="ac7-db-activity", migrations=ACTIVITY_MIGRATIONS)
        try:
            await main.start()
            await activity.start()
        except BaseException:
            await main.close()
            await activity.close()
            raise
        return cls(main, activity, clock)

    @property
    def main_path(self) -> Path:
        return self._main.path

    @property
    def activity_path(self) -> Path:
        return self._activity.path

    async def close(self) -> None:
        """Finish work already submitted, then close both files. Idempotent; later calls raise StoreClosedError."""
        try:
            await self._main.close()
        finally:
            await self._activity.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
