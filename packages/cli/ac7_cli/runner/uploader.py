"""The activity uploader: trace events → `POST /agents/{name}/activity`, batched, ordered, retried, spooled to disk.

Contract (DESIGN §6 "Uploader"):

- **Batching.** A batch closes at `max_batch_events` (50) events, or when the next event would push its serialized
  size past `max_batch_bytes` (64 KiB), or `max_delay` (500 ms) after its oldest event was submitted, whichever comes
  first. An event larger than `max_batch_bytes` goes alone. One POST is in flight at a time, so the broker stores
  events in submit order.
- **`submit()`** runs on the proxy's hot path (on the event loop thread; it is not thread-safe). It serialises the
  event once, to compact UTF-8 JSON, and never raises: an event that cannot be serialised (a lone surrogate, NaN, a
  non-JSON type) or that could never fit in one request (16 MiB) is dropped alone, counted and logged, so it cannot
  poison the batch around it. Events are not validated against the schema here; the broker does that.
- **Retries.** Connection errors, timeouts, 408, 429, 5xx (and any other non-2xx that is not a 4xx) retry the same
  batch with exponential backoff and jitter, `backoff_initial` (200 ms) doubling to `backoff_max` (30 s), reset by a
  success. The `Retry-After` of a 429 or 503 (seconds or an HTTP date) is honoured, capped at `backoff_max`. One
  WARNING when a failure streak starts, one INFO when it ends; never one line per attempt.
- **401** (token rejected): the batch is *kept* and retried with the same backoff (so it settles at one attempt per
  `backoff_max`, no spinning), and everything spools as usual. A rejected token is almost always a rotated one, which
  the user fixes by restarting the runner with the new token — and the spool is keyed by broker URL + agent, not by
  token, so the next run sends what this one kept. One clear WARNING per streak says so.
- **Other 4xx** (400 schema, 403, 404, 413…): the batch is dropped, with one WARNING giving the status, the broker's
  error sentence (truncated, one line) and the event count — never event contents, which may hold prompts.
- **Memory is bounded** by `max_memory_events` / `max_memory_bytes` (the batch in flight included). Beyond that,
  events are appended to the spool file, and while the spool holds unsent events every new event goes behind them
  there, so order is kept across spill and unspill. The sender reads the spool back one batch at a time.
- **Spool files** live in `spool_dir` (made 0700), named by a hash of broker URL + agent so two runners for different
  agents or brokers never mix: `<key>.jsonl` holds one compact JSON event per line (0600, append-only while running,
  fsync'd at close); `<key>.state` (0600) holds the byte offset up to which the spool has been delivered and carries
  an exclusive `flock` for the uploader's lifetime. If the runner crashes, what was in memory is lost (it never
  reached the disk) but the spool survives, and the next run re-sends at most the one batch that was in flight from
  it. A second uploader for the same key cannot take the lock and runs memory-only (it drops events beyond its
  memory bound, with a WARNING). On open, a torn last line (a crash mid-write) is cut off, and lines written by an
  earlier run are checked to be JSON objects as they are read back; bad ones are dropped and counted.
- **`close(timeout)`** flushes memory and spool until the deadline (a backoff sleep is cut short once so a last
  attempt is made; a `Retry-After` is still honoured), then writes whatever is left — the batch in flight, memory and
  the unsent spool — to the spool file in order (rewritten via a 0600 temp file, fsync, rename) and logs a WARNING
  with the count. The next `start()` for the same broker URL + agent sends it before anything new. Events submitted
  after `close()` are appended to the spool file directly.
- **Exactly once**: each batch carries an `Idempotency-Key` that its retries reuse, so when the answer to a POST is
  lost after the broker stored the batch (a connection cut, a timeout), the retry is recognised and stored nothing.
  One case remains: a batch still in flight when `close()` gives up goes back to the spool without its key, and the
  next run sends it under a new one, so it can be stored twice. Nothing is lost other than by a 4xx, a crash of the
  runner itself, a full disk or a busy spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp

log = logging.getLogger("ac7.runner.uploader")

MIB = 1024 * 1024
MAX_REQUEST_BYTES = 16 * MIB  # the broker's activity body limit (DESIGN §4)
_PREFIX = b'{"events":['
_SUFFIX = b"]}"
_ENVELOPE = len(_PREFIX) + len(_SUFFIX)
_READ_CHUNK = 64 * 1024
_STATE_FORMAT = b"%020d\n"
_MAX_SENTENCE = 200
_MAX_ERROR_BODY = 64 * 1024


class _Entry(NamedTuple):
    data: bytes  # one event, compact UTF-8 JSON
    at: float  # monotonic submit time (0.0 for events read back from the spool: they are overdue)
    end: int  # byte offset just past its line in the spool file, or -1 when it never went there


@dataclass(frozen=True)
class UploaderStats:
    """Counters since construction; `pending` = not yet delivered (memory + in flight + spool)."""

    submitted: int
    sent: int
    dropped: int
    retried: int
    requests: int
    spooled: int
    pending: int
    in_memory: int
    in_spool: int


class _Outcome(Enum):
    SENT = "sent"
    DROP = "drop"
    RETRY = "retry"


class SpoolBusyError(OSError):
    """Another uploader (another process) holds the spool for this broker URL + agent."""


class _Spool:
    """The spool file of one broker URL + agent, and its state file (delivered offset + lock)."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.path = directory / f"{key}.jsonl"
        self.state_path = directory / f"{key}.state"
        self.fd = -1
        self.state_fd = -1
        self.read_off = 0  # start of the first line not yet read back
        self.write_off = 0  # end of the last complete line
        self.unread = 0  # lines in [read_off, write_off)
        self.trusted_from = 0  # lines starting before this offset were written by an earlier run: check them
        self.corrupt = 0

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def open(self) -> tuple[int, bool]:
        """Open, lock and recover the spool; returns (events left by an earlier run, whether a torn line was cut)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.directory.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            self.directory.chmod(0o700)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        state_fd = os.open(self.state_path, flags, 0o600)
        try:
            try:
                fcntl.flock(state_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpoolBusyError(errno.EWOULDBLOCK, "spool in use by another ac7 runner", str(self.path)) from None
            os.fchmod(state_fd, 0o600)
            fd = os.open(self.path, flags | os.O_APPEND, 0o600)
        except BaseException:
            os.close(state_fd)
            raise
        try:
            os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            end = _end_of_last_line(fd, size)
            if end < size:
                os.ftruncate(fd, end)
            start = _read_state(state_fd)
            if not 0 <= start <= end or (start > 0 and os.pread(fd, 1, start - 1) != b"\n"):
                start = 0
        except BaseException:
            os.close(fd)
            os.close(state_fd)
            raise
        self.fd, self.state_fd = fd, state_fd
        self.read_off, self.write_off, self.trusted_from = start, end, end
        self.unread = _count_lines(fd, start, end)
        return self.unread, end < size

    def append(self, data: bytes) -> None:
        """Append one line; on failure the file is cut back to its last complete line and OSError propagates."""
        try:
            _write_all(self.fd, (data, b"\n"))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.write_off)
            raise
        self.write_off += len(data) + 1
        self.unread += 1

    def read(self, max_events: int, max_bytes: int) -> list[_Entry]:
        """Read back up to `max_events` lines (and about `max_bytes`; always at least one valid line if any)."""
        entries: list[_Entry] = []
        total = 0
        buf = bytearray()
        base = self.read_off  # file offset of buf[0]
        i = 0
        while self.unread and len(entries) < max_events and total < max_bytes:
            nl = buf.find(b"\n", i)
            if nl < 0:
                del buf[:i]
                base += i
                i = 0
                at = base + len(buf)
                want = min(max(_READ_CHUNK, len(buf)), self.write_off - at)
                chunk = os.pread(self.fd, want, at) if want > 0 else b""
                if not chunk:  # cannot happen unless someone else cut the file: forget what is gone
                    self.unread = 0
                    self.read_off = self.write_off = at
                    break
                buf += chunk
                continue
            line_start = base + i
            line = bytes(buf[i:nl])
            i = nl + 1
            self.read_off = base + i
            self.unread -= 1
            if line_start < self.trusted_from and not _is_json_object(line):
                self.corrupt += 1
                continue
            entries.append(_Entry(line, 0.0, self.read_off))
            total += len(line)
        return entries

    def ack(self, offset: int) -> None:
        """Record that every line before `offset` was delivered (or dropped by the broker)."""
        os.pwrite(self.state_fd, _STATE_FORMAT % offset, 0)

    def reset(self) -> None:
        """Everything in the file is delivered: empty it (state first, so a crash in between only re-sends)."""
        os.pwrite(self.state_fd, _STATE_FORMAT % 0, 0)
        os.ftruncate(self.fd, 0)
        self.read_off = self.write_off = self.trusted_from = self.unread = 0

    def persist(self, head: list[bytes]) -> int:
        """Leave `head` + the unread lines as the whole spool, durably; returns how many events it holds."""
        count = len(head) + self.unread
        if count == 0:
            for path in (self.path, self.state_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return 0
        if not head:  # nothing new to put in front: just record where the unread part starts
            os.fsync(self.fd)
            self.ack(self.read_off)
            os.fsync(self.state_fd)
            return count
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            for data in head:
                _write_all(out, (data, b"\n"))
            at = self.read_off
            while at < self.write_off:
                chunk = os.pread(self.fd, min(MIB, self.write_off - at), at)
                if not chunk:
                    break
                _write_all(out, (chunk,))
                at += len(chunk)
            os.fsync(out)
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(out)
        self.ack(0)  # before the rename: a crash in between re-sends rather than skips
        tmp.replace(self.path)
        _fsync_dir(self.directory)
        return count

    def close(self) -> None:
        for fd in (self.fd, self.state_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)  # also releases the lock
        self.fd = self.state_fd = -1

    def append_late(self, data: bytes) -> None:
        """After close: append one event for the next run (taking the lock briefly)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_fd = os.open(self.state_path, flags, 0o600)
        try:
            try:
                fcntl.flock(state_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpoolBusyError(errno.EWOULDBLOCK, "spool in use by another ac7 runner", str(self.path)) from None
            fd = os.open(self.path, flags | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                end = _end_of_last_line(fd, size)
                if end < size:
                    os.ftruncate(fd, end)
                _write_all(fd, (data, b"\n"))
            finally:
                os.close(fd)
        finally:
            os.close(state_fd)


def _write_all(fd: int, parts: tuple[bytes, ...]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just past the file's last newline (0 if none): what follows it is a torn line."""
    at = size
    while at > 0:
        start = max(0, at - _READ_CHUNK)
        chunk = os.pread(fd, at - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        at = start
    return 0


def _count_lines(fd: int, start: int, end: int) -> int:
    count = 0
    at = start
    while at < end:
        chunk = os.pread(fd, min(MIB, end - at), at)
        if not chunk:
            break
        count += chunk.count(b"\n")
        at += len(chunk)
    return count


def _read_state(fd: int) -> int:
    raw = os.pread(fd, 64, 0)
    try:
        return int(raw.split(b"\n", 1)[0])
    except ValueError:
        return 0


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_key(url: str, agent: str) -> str:
    """The spool file stem for a broker URL + agent (so runners for different agents/brokers never share one)."""
    return hashlib.sha256(f"{url.rstrip('/')}\n{agent}".encode()).hexdigest()[:32]


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SENTENCE else text[: _MAX_SENTENCE - 3] + "..."


class ActivityUploader:
    """Uploads one agent's activity events to the broker; see the module docstring for the contract."""

    def __init__(
        self,
        url: str,
        token: str,
        agent: str,
        *,
        spool_dir: Path,
        max_batch_events: int = 50,
        max_batch_bytes: int = 64 * 1024,
        max_delay: float = 0.5,
        max_memory_events: int = 1000,
        max_memory_bytes: int = 8 * MIB,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        request_timeout: float = 60.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not 1 <= max_batch_events <= 500:
            raise ValueError("max_batch_events must be in 1..500 (the broker takes at most 500 per request)")
        if max_batch_bytes < 1 or max_memory_events < 1 or max_memory_bytes < 1:
            raise ValueError("batch and memory bounds must be positive")
        if max_delay < 0 or backoff_initial <= 0 or backoff_max < backoff_initial or request_timeout <= 0:
            raise ValueError("delays must be positive and backoff_max >= backoff_initial")
        base = url.rstrip("/")
        self.url = base
        self.agent = agent
        self._endpoint = f"{base}/agents/{quote(agent, safe='')}/activity"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._max_batch_events = max_batch_events
        self._max_batch_bytes = max_batch_bytes
        self._max_delay = max_delay
        self._max_memory_events = max_memory_events
        self._max_memory_bytes = max_memory_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session = session
        self._own_session = session is None

        self._spool = _Spool(Path(spool_dir), spool_key(base, agent))
        self._spool_usable: bool | None = None  # None: not opened yet
        self._mem: deque[_Entry] = deque()
        self._mem_bytes = 0
        self._inflight: list[_Entry] = []
        self._inflight_bytes = 0
        self._inflight_key = ""  # the in-flight batch's Idempotency-Key, the same for each of its retries
        self._from_spool = 0  # entries in memory/in flight that were read back from the spool file

        self._wake = asyncio.Event()  # something to send (or closing)
        self._kick = asyncio.Event()  # close(): cut the current backoff sleep short, once
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._failing: str | None = None  # the kind of the current failure streak, for one log line per streak
        self._drop_streak = False

        self._submitted = 0
        self._sent = 0
        self._dropped = 0
        self._retried = 0
        self._requests = 0
        self._spooled = 0

    # --- public API ---------------------------------------------------------------------------------------------

    @property
    def spool_path(self) -> Path:
        return self._spool.path

    def stats(self) -> UploaderStats:
        in_memory = len(self._mem) + len(self._inflight)
        in_spool = self._spool.unread
        return UploaderStats(
            submitted=self._submitted,
            sent=self._sent,
            dropped=self._dropped + self._spool.corrupt,
            retried=self._retried,
            requests=self._requests,
            spooled=self._spooled,
            pending=in_memory + in_spool,
            in_memory=in_memory,
            in_spool=in_spool,
        )

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event. Never raises and never blocks on the network (it may append a line to the spool)."""
        try:
            self._submitted += 1
            try:
                data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
                self._drop_one(f"it is not serialisable as JSON ({type(exc).__name__})")
                return
            if len(data) + _ENVELOPE > MAX_REQUEST_BYTES:
                self._drop_one(f"it is {len(data)} bytes, over the broker's {MAX_REQUEST_BYTES}-byte request limit")
                return
            self._enqueue(data)
        except Exception:  # a bug here must never reach the proxy
            self._dropped += 1
            log.exception("activity uploader: dropped an event after an unexpected error")

    async def start(self) -> None:
        """Open the spool (picking up what an earlier run left) and start sending."""
        if self._started or self._closed:
            return
        self._started = True
        self._ensure_spool()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="ac7-activity-uploader")

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline for flushing, by contract
        """Deliver what can be delivered within `timeout` seconds, spool the rest for the next run, stop."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._kick.set()
        task = self._task
        try:
            if task is not None:
                await asyncio.wait({task}, timeout=max(0.0, timeout))
        finally:  # also when close() itself is cancelled: nothing in memory may be left behind
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._closed = True
            try:
                self._persist()
            finally:
                self._spool.close()
                if self._own_session and self._session is not None:
                    await self._session.close()

    # --- queueing -----------------------------------------------------------------------------------------------

    def _drop_one(self, why: str) -> None:
        self._dropped += 1
        log.warning("activity uploader: dropped one event: %s", why)

    def _memory_full(self, size: int) -> bool:
        held = len(self._mem) + len(self._inflight)
        if held >= self._max_memory_events:
            return True
        return held > 0 and self._mem_bytes + self._inflight_bytes + size > self._max_memory_bytes

    def _enqueue(self, data: bytes) -> None:
        if self._closed:
            self._append_late(data)
            return
        if self._spool.unread or self._memory_full(len(data)):
            if self._spill(data):
                self._wake.set()
                return
            # No usable spool: memory is full (or the spool holds older events this one must not overtake).
            self._dropped += 1
            if not self._drop_streak:
                self._drop_streak = True
                log.warning("activity uploader: memory queue full and no usable spool file: dropping new events")
            return
        self._drop_streak = False
        self._mem.append(_Entry(data, time.monotonic(), -1))
        self._mem_bytes += len(data)
        if len(self._mem) == 1 or len(self._mem) >= self._max_batch_events or self._mem_bytes >= self._max_batch_bytes:
            self._wake.set()

    def _spill(self, data: bytes) -> bool:
        if not self._ensure_spool():
            return False
        try:
            self._spool.append(data)
        except OSError as exc:
            if not self._drop_streak:
                reason = exc.strerror or exc
                log.warning("activity uploader: cannot append to the spool %s (%s)", self._spool.path, reason)
            return False
        self._drop_streak = False
        self._spooled += 1
        return True

    def _ensure_spool(self) -> bool:
        if self._spool_usable is not None:
            return self._spool_usable
        try:
            earlier, torn = self._spool.open()
        except SpoolBusyError:
            log.warning(
                "activity uploader: another ac7 runner holds the spool %s; this one keeps at most %d events in memory",
                self._spool.path,
                self._max_memory_events,
            )
            self._spool_usable = False
            return False
        except OSError as exc:
            log.warning("activity uploader: cannot open the spool %s (%s)", self._spool.path, exc.strerror or exc)
            self._spool_usable = False
            return False
        self._spool_usable = True
        if torn:
            log.warning(
                "activity uploader: cut a torn last line off the spool %s (a crash mid-write)", self._spool.path
            )
        if earlier:
            log.info("activity uploader: %d events left by an earlier run are sent first", earlier)
            if self._mem and not self._inflight:  # submitted before start(): they are newer, so they go behind
                moved = list(self._mem)
                self._mem.clear()
                self._mem_bytes = 0
                for entry in moved:
                    if not self._spill(entry.data):
                        self._dropped += 1
        return True

    def _append_late(self, data: bytes) -> None:
        try:
            self._spool.append_late(data)
        except OSError as exc:
            self._drop_one(f"submitted after close and the spool is unusable ({exc.strerror or exc})")
            return
        self._spooled += 1

    # --- sending ------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        errors = 0
        while True:
            try:
                batch = await self._next_batch()
                if batch is None:
                    return
                await self._deliver(batch)
                errors = 0
            except Exception:  # a bug: keep going (the batch stays in flight), but neither spin nor flood the log
                if errors == 0:
                    log.exception("activity uploader: unexpected error; retrying")
                await asyncio.sleep(min(self._backoff_max, self._backoff_initial * 2 ** min(errors, 32)))
                errors += 1

    def _unspill(self) -> bool:
        """Read spooled events back into memory, up to one batch's worth; False when there is nothing to do."""
        if not self._spool_usable or not self._spool.unread:
            return False
        if len(self._mem) >= self._max_batch_events or self._mem_bytes >= self._max_batch_bytes:
            return False
        room = self._max_memory_events - len(self._mem) - len(self._inflight)
        room_bytes = self._max_memory_bytes - self._mem_bytes - self._inflight_bytes
        if room <= 0:
            return False
        try:
            entries = self._spool.read(
                min(room, self._max_batch_events), max(1, min(room_bytes, self._max_batch_bytes))
            )
        except OSError as exc:
            lost = self._spool.unread
            log.error("activity uploader: cannot read the spool %s (%s): %d events lost", self._spool.path, exc, lost)
            self._dropped += lost
            self._spool.unread = 0
            self._spool_usable = False
            return False
        for entry in entries:
            self._mem.append(entry)
            self._mem_bytes += len(entry.data)
        self._from_spool += len(entries)
        return True

    async def _next_batch(self) -> list[_Entry] | None:
        while True:
            if self._inflight:
                return self._inflight
            while self._unspill():
                pass
            if self._mem:
                now = time.monotonic()
                if (
                    self._closing
                    or self._spool.unread
                    or len(self._mem) >= self._max_batch_events
                    or self._mem_bytes >= self._max_batch_bytes
                    or now - self._mem[0].at >= self._max_delay
                ):
                    return self._take_batch()
                timeout: float | None = self._mem[0].at + self._max_delay - now
            elif self._closing:
                return None
            else:
                timeout = None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        size = 0
        while self._mem and len(batch) < self._max_batch_events:
            entry = self._mem[0]
            if batch and size + len(entry.data) > self._max_batch_bytes:
                break
            self._mem.popleft()
            batch.append(entry)
            size += len(entry.data)
        self._mem_bytes -= size
        self._inflight = batch
        self._inflight_bytes = size
        self._inflight_key = secrets.token_urlsafe(16)
        return batch

    async def _deliver(self, batch: list[_Entry]) -> None:
        attempt = 0
        while True:
            outcome, retry_after = await self._post(batch)
            if outcome is not _Outcome.RETRY:
                if outcome is _Outcome.SENT:
                    self._sent += len(batch)
                else:
                    self._dropped += len(batch)
                self._finish(batch)
                return
            self._retried += 1
            base = min(self._backoff_max, self._backoff_initial * 2 ** min(attempt, 32))
            attempt += 1
            delay = base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography
            if retry_after is not None:
                await asyncio.sleep(max(delay, min(retry_after, self._backoff_max)))
            elif await self._backoff(delay):
                attempt = 0

    async def _backoff(self, delay: float) -> bool:
        """Sleep `delay` seconds unless close() kicks; True when kicked (then retry at once)."""
        if self._kick.is_set():
            self._kick.clear()
            return True
        try:
            async with asyncio.timeout(delay):
                await self._kick.wait()
        except TimeoutError:
            return False
        self._kick.clear()
        return True

    def _finish(self, batch: list[_Entry]) -> None:
        self._inflight = []
        self._inflight_bytes = 0
        spooled = [e.end for e in batch if e.end >= 0]
        if not spooled or not self._spool.is_open:
            return
        self._from_spool -= len(spooled)
        try:
            if self._spool.unread == 0 and self._from_spool == 0:
                self._spool.reset()
            else:
                self._spool.ack(spooled[-1])
        except OSError as exc:
            log.warning("activity uploader: cannot update the spool state %s (%s)", self._spool.state_path, exc)

    async def _post(self, batch: list[_Entry]) -> tuple[_Outcome, float | None]:
        assert self._session is not None
        body = b"".join((_PREFIX, b",".join(e.data for e in batch), _SUFFIX))
        self._requests += 1
        try:
            async with self._session.post(
                self._endpoint,
                data=body,
                headers={**self._headers, "Idempotency-Key": self._inflight_key},
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    await response.read()
                    self._recovered()
                    return _Outcome.SENT, None
                sentence = await _error_sentence(response)
                retry_after = _retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._streak(
                "unreachable", "cannot reach the broker at %s (%s); events are kept and retried", self.url, exc
            )
            return _Outcome.RETRY, None
        except Exception as exc:  # e.g. a session closed under us: retried like an outage, never a crash
            self._streak("error", "cannot upload to %s (%r); events are kept and retried", self.url, exc)
            return _Outcome.RETRY, None
        if status == 401:
            self._streak(
                "401",
                "token rejected by the broker (401: %s): activity is kept (spooled to %s) and retried with backoff; "
                "restart the runner with the slot's current token (`ac7 rotate` prints a new one)",
                sentence,
                self._spool.path,
            )
            return _Outcome.RETRY, None
        if 400 <= status < 500 and status not in (408, 429):
            log.warning(
                "activity uploader: the broker rejected a batch of %d events (HTTP %d: %s); dropped it",
                len(batch),
                status,
                sentence,
            )
            return _Outcome.DROP, None
        self._streak(
            f"http-{status}", "the broker answered HTTP %d (%s); events are kept and retried", status, sentence
        )
        return _Outcome.RETRY, retry_after

    def _streak(self, kind: str, message: str, *args: object) -> None:
        if self._failing != kind:
            self._failing = kind
            log.warning("activity uploader: " + message, *args)
        else:
            log.debug("activity uploader: " + message, *args)

    def _recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            log.info("activity uploader: the broker accepts uploads again (%d events pending)", self.stats().pending)

    # --- close --------------------------------------------------------------------------------------------------

    def _persist(self) -> None:
        head = [e.data for e in self._inflight] + [e.data for e in self._mem]
        fresh = sum(1 for e in self._inflight if e.end < 0) + sum(1 for e in self._mem if e.end < 0)
        if not head and not self._spool.unread and not self._spool.is_open and not self._spool.path.exists():
            return
        if not self._ensure_spool() or not self._spool.is_open:
            if head:
                self._dropped += len(head)
                log.warning("activity uploader: %d undelivered events lost (no usable spool file)", len(head))
            return
        try:
            count = self._spool.persist(head)
        except OSError as exc:
            self._dropped += fresh
            log.error("activity uploader: cannot write the spool %s (%s)", self._spool.path, exc)
            return
        if count:
            self._spooled += fresh
            log.warning(
                "activity uploader: %d events not delivered by the deadline are kept in %s for the next run",
                count,
                self._spool.path,
            )
        self._inflight = []
        self._inflight_bytes = 0
        self._mem.clear()
        self._mem_bytes = 0
        self._from_spool = 0
        self._spool.unread = count


async def _error_sentence(response: aiohttp.ClientResponse) -> str:
    """The broker's `error` sentence, one line, truncated; the reason phrase when the body is not ours."""
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
        body = json.loads(raw)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return _one_line(body["error"])
    except (ValueError, aiohttp.ClientError, TimeoutError, OSError):
        pass
    return _one_line(response.reason or "no reason given")
