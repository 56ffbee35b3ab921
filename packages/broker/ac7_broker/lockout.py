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

    At most `max_keys` keys are tracked; the least recently touched is forgotten first, so an attacker spraying
    names or addresses costs bounded memory (and can only ever reset the counters of keys it does not target).
    """

    def __init__(self, limit: int, window: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
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
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def clear(self, key: str) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
