"""Who is around: live connection counts (from the message fanout), last seen, and self-reported busy."""

from __future__ import annotations

import time
from collections.abc import Callable

from ac7_broker.fanout import Fanout


class Presence:
    def __init__(
        self,
        fanout: Fanout,
        busy_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._fanout = fanout
        self._busy_ttl = busy_ttl
        self._clock = clock
        self._wall_ms = wall_ms
        self._busy_until: dict[str, float] = {}
        self._last_seen: dict[str, int] = {}

    def seen(self, slot: str) -> None:
        self._last_seen[slot] = self._wall_ms()

    def set_busy(self, slot: str, busy: bool) -> None:
        if busy:
            self._busy_until[slot] = self._clock() + self._busy_ttl
        else:
            self._busy_until.pop(slot, None)

    def is_busy(self, slot: str) -> bool:
        until = self._busy_until.get(slot)
        return until is not None and until > self._clock()

    def connected(self, slot: str) -> int:
        return self._fanout.count(slot)

    def last_seen(self, slot: str) -> int | None:
        return self._last_seen.get(slot)

    def forget(self, keep: set[str]) -> None:
        """Drop state of slots no longer in the team."""
        for table in (self._busy_until, self._last_seen):
            for slot in [s for s in table if s not in keep]:
                del table[slot]
