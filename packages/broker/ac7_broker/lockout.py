"""Failure counters for TOTP login: fixed windows anchored at the first failure, in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    started: float
    failures: int


class FailureCounter:
    """Counts failures per key; a key with `limit` failures inside `window` seconds is locked until it ends.

    At most `max_keys` unprotected keys are tracked; the least recently touched is forgotten first, so spraying
    names or addresses costs bounded memory. Keys for which `protected(key)` is true (the team's real slot
    names, a set the team bounds) are never evicted, so spraying cannot reset a real slot's lockout.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
        protected: Callable[[str], bool] = lambda _key: False,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._protected = protected
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _live(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is not None and self._clock() - bucket.started >= self.window:
            del self._buckets[key]
            return None
        return bucket

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None if it is not locked."""
        bucket = self._live(key)
        if bucket is None or bucket.failures < self.limit:
            return None
        return bucket.started + self.window - self._clock()

    def fail(self, key: str) -> None:
        bucket = self._live(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._clock(), 0)
        bucket.failures += 1
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            # Protected keys are few (one per slot), so finding the oldest unprotected key stays cheap.
            oldest = next((k for k in self._buckets if not self._protected(k)), None)
            if oldest is not None:
                del self._buckets[oldest]

    def clear(self, key: str) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
