"""Keyset cursor for message history."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .ids import is_uuid

MAX_TS = (1 << 63) - 1
# ASCII digits only: int() alone would also accept "+5", " 5", "1_0" and non-ASCII digits.
_TS_RE = re.compile(r"[0-9]{1,19}")


def _parse_ts(text: str) -> int:
    if _TS_RE.fullmatch(text) is None:
        raise ValueError("malformed cursor")
    value = int(text)
    if value > MAX_TS:
        raise ValueError("malformed cursor")
    return value


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position in a newest-first listing: the page holds rows strictly before ``(ts, id)``.

    ``id is None`` is the coarse form taken from a bare epoch-ms ``before`` and means "ts < before".
    ``encode()`` always round-trips through ``parse()``, and through ``decode()`` when ``id`` is set.
    """

    ts: int
    id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ts, bool) or not isinstance(self.ts, int) or not 0 <= self.ts <= MAX_TS:
            raise ValueError("malformed cursor")
        if self.id is not None and not (isinstance(self.id, str) and is_uuid(self.id)):
            raise ValueError("malformed cursor")

    def encode(self) -> str:
        return str(self.ts) if self.id is None else f"{self.ts}:{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Strictly ``"<ts>:<id>"``; ValueError on anything else."""
        ts_text, sep, id_text = text.partition(":")
        if not sep:
            raise ValueError("malformed cursor")
        return cls(_parse_ts(ts_text), id_text)

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A ``decode()`` cursor or a bare non-negative epoch-ms integer; ValueError otherwise."""
        if ":" in text:
            return cls.decode(text)
        return cls(_parse_ts(text))

    def bound(self) -> tuple[int, str]:
        """The ``(ts, id)`` pair every listed row must sort strictly below.

        The empty string sorts before every id, so an id-less cursor excludes its whole millisecond.
        """
        return (self.ts, "" if self.id is None else self.id)
