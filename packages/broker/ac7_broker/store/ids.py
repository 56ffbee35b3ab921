"""Message ids: UUIDv7 (RFC 9562) strings that sort in creation order."""

from __future__ import annotations

import re
import secrets
import threading

_MAX_MS = (1 << 48) - 1
_MAX_COUNTER = 0xFFF
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UuidV7Generator:
    """UUIDv7 source that is strictly monotonic for the lifetime of the instance.

    Uses RFC 9562 §6.2 method 1: the 12-bit ``rand_a`` field is a counter, so ids minted in the same millisecond
    still sort in minting order. The counter is seeded with 11 random bits (top bit clear) each new millisecond,
    which keeps ids unguessable while leaving at least 2048 increments before a rollover. On rollover, and when the
    wall clock steps backwards, the generator keeps using (and if needed advances) its own last timestamp: ids may
    run a few milliseconds ahead of the clock under extreme load but never go backwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def new(self, now_ms: int) -> str:
        if not 0 <= now_ms <= _MAX_MS:
            raise ValueError("timestamp out of UUIDv7 range")
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = secrets.randbits(11)
            else:
                self._counter += 1
                if self._counter > _MAX_COUNTER:
                    if self._last_ms >= _MAX_MS:
                        raise OverflowError("UUIDv7 timestamp exhausted")
                    self._last_ms += 1
                    self._counter = secrets.randbits(11)
            ms, counter = self._last_ms, self._counter
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | secrets.randbits(62)
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_default = UuidV7Generator()


def new_message_id(now_ms: int) -> str:
    """A new UUIDv7 string; monotonic across every caller in this process."""
    return _default.new(now_ms)


def is_uuid(value: str) -> bool:
    """True for a canonical (lower-case, hyphenated) UUID string of any version."""
    return _UUID_RE.fullmatch(value) is not None


def uuid7_timestamp_ms(value: str) -> int:
    """The Unix-epoch millisecond embedded in a UUIDv7 string."""
    if not is_uuid(value) or value[14] != "7":
        raise ValueError("not a canonical UUIDv7")
    return int(value[:8] + value[9:13], 16)
