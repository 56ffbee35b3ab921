"""The activity uploader against a real broker on loopback (and a scripted fake for failure modes), on real files.

Request counts come from the uploader's own counters; what arrived, and in which order, from the broker's stored rows
(or the fake's record). No assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
import math
import stat
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from uploader_helpers import (
    FakeBroker,
    LiveBroker,
    Reply,
    eventually,
    llm_exchange,
    opaque_http,
    serialized_size,
    spool_lines,
    tag_of,
    tags,
    write_team,
)

from ac7_cli.runner.uploader import ActivityUploader, spool_key
from ac7_core.tokens import mint_token

LOGGER = "ac7.runner.uploader"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveBroker]:
    broker = write_team(tmp_path / "team")
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBroker]:
    server = FakeBroker()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool"


class Uploaders:
    """Makes uploaders and closes whatever a test left open, so a failing test does not leak tasks."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.made: list[ActivityUploader] = []

    async def make(self, url: str, token: str, agent: str = "alice", **kwargs: Any) -> ActivityUploader:
        uploader = ActivityUploader(url, token, agent, spool_dir=self.spool_dir, **kwargs)
        self.made.append(uploader)
        await uploader.start()
        return uploader

    async def close_all(self) -> None:
        for uploader in self.made:
            await uploader.close(timeout=0.0)


@pytest.fixture
async def uploaders(spool_dir: Path) -> AsyncIterator[Uploaders]:
    made = Uploaders(spool_dir)
    yield made
    await made.close_all()


def submit_all(uploader: ActivityUploader, names: list[str]) -> None:
    for name in names:
        uploader.submit(opaque_http(name))


async def wait_idle(uploader: ActivityUploader) -> None:
    async def probe() -> bool:
        return uploader.stats().pending == 0

    await eventually(probe, what="uploader idle")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- batching -----------------------------------------------------------------------------------------------------


async def test_a_batch_closes_at_the_event_count(live: LiveBroker, uploaders: Uploaders) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"])
    expected = tags("count", 120)
    submit_all(uploader, expected)  # all in one loop tick: only the count can split them

    assert await live.wait_for_count("alice", 120) == expected
    await wait_idle(uploader)
    stats = uploader.stats()
    assert stats.requests == 3  # 50 + 50 + 20
    assert stats.sent == 120
    assert stats.retried == 0


async def test_a_batch_closes_at_the_byte_size_and_a_big_event_goes_alone(
    live: LiveBroker, uploaders: Uploaders
) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"])
    events = [llm_exchange(f"size-{i}", "x" * 19_000) for i in range(10)]
    size = serialized_size(events[0])
    assert 3 * size <= 64 * 1024 < 4 * size  # three fit in a batch, four do not
    for event in events:
        uploader.submit(event)

    assert await live.wait_for_count("alice", 10) == [f"size-{i}" for i in range(10)]
    await wait_idle(uploader)
    assert uploader.stats().requests == 4  # 3 + 3 + 3 + 1

    # An event over 64 KiB is sent on its own, between the small ones around it.
    big = llm_exchange("big", "y" * 100_000)
    assert serialized_size(big) > 64 * 1024
    uploader.submit(opaque_http("/before"))
    uploader.submit(big)
    uploader.submit(opaque_http("/after"))
    stored = await live.wait_for_count("alice", 13)
    assert stored[10:] == ["/before", "big", "/after"]
    await wait_idle(uploader)
    assert uploader.stats().requests == 4 + 3


async def test_a_batch_closes_max_delay_after_its_first_event(live: LiveBroker, uploaders: Uploaders) -> None:
    # A lone event is sent without anything else happening: the age trigger fires.
    prompt = await uploaders.make(live.url, live.tokens["alice"], max_delay=0.05)
    prompt.submit(opaque_http("/alone"))
    assert await live.wait_for_count("alice", 1) == ["/alone"]
    assert prompt.stats().requests == 1

    # Events trickling in within the window share one request rather than going one by one.
    patient = await uploaders.make(live.url, live.tokens["dan"], agent="dan", max_delay=2.0)
    expected = tags("trickle", 5)
    for name in expected:
        patient.submit(opaque_http(name))
        await asyncio.sleep(0.01)
    assert await live.wait_for_count("dan", 5) == expected
    await wait_idle(patient)
    assert patient.stats().requests == 1


async def test_order_is_kept_across_1000_events(live: LiveBroker, uploaders: Uploaders) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"], max_memory_events=200)
    expected = tags("order", 1000)
    for i, name in enumerate(expected):
        uploader.submit(opaque_http(name))
        if i % 37 == 0:
            await asyncio.sleep(0.002 * (i % 3))
    assert await live.wait_for_count("alice", 1000) == expected
    await wait_idle(uploader)
    stats = uploader.stats()
    assert stats.sent == 1000
    assert stats.requests >= 20


# --- broker outages -----------------------------------------------------------------------------------------------


async def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(live: LiveBroker, uploaders: Uploaders) -> None:
    uploader = await uploaders.make(
        live.url, live.tokens["alice"], max_memory_events=100, backoff_initial=0.02, backoff_max=0.2
    )
    expected = tags("restart", 300)
    submit_all(uploader, expected[:100])
    await live.wait_for_count("alice", 100)

    stop = asyncio.create_task(live.stop())
    for i, name in enumerate(expected[100:200]):  # some while the broker shuts down, the rest while it is down
        uploader.submit(opaque_http(name))
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    await stop
    submit_all(uploader, expected[200:250])

    async def retried() -> bool:
        return uploader.stats().retried > 0

    await eventually(retried, what="a failed attempt while the broker is down")
    assert uploader.stats().in_memory <= 100
    assert uploader.stats().in_spool > 0

    await live.start()  # same port, same config and store
    for name in expected[250:]:  # while the spool drains: memory frees up, yet new events must queue behind it
        uploader.submit(opaque_http(name))
        await asyncio.sleep(0.002)
    assert await live.wait_for_count("alice", 300) == expected
    await wait_idle(uploader)
    assert uploader.stats().sent == 300
    assert await live.tags("alice") == expected  # nothing arrived twice, even late


class AnswerCutter:
    """A TCP relay to the broker that, for the first `cuts` requests, lets the request through and then drops the
    connection as the answer comes back: the broker has stored the batch, the uploader never hears so."""

    def __init__(self, target_port: int, cuts: int) -> None:
        self.target_port = target_port
        self.cuts = cuts
        self.cut = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self._writers:  # keep-alive connections: wait_closed() would wait for them
                writer.transport.abort()
            await self.server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((client_w, up_w))

        async def upstream() -> None:
            while data := await client_r.read(65536):
                up_w.write(data)
                await up_w.drain()

        forward = asyncio.create_task(upstream())
        try:
            while data := await up_r.read(65536):
                if self.cut < self.cuts:  # the broker answered, so the batch is stored; the client never knows
                    self.cut += 1
                    break
                client_w.write(data)
                await client_w.drain()
        except ConnectionError:
            pass
        finally:
            forward.cancel()
            client_w.transport.abort()
            up_w.transport.abort()


async def test_a_lost_answer_is_retried_under_the_same_key_and_stored_once(
    live: LiveBroker, uploaders: Uploaders
) -> None:
    cutter = AnswerCutter(live.port, cuts=2)
    await cutter.start()
    try:
        uploader = await uploaders.make(
            cutter.url, live.tokens["alice"], max_batch_events=10, backoff_initial=0.01, backoff_max=0.05
        )
        expected = tags("cut", 10)
        submit_all(uploader, expected)
        await wait_idle(uploader)
        stats = uploader.stats()
        assert cutter.cut == 2 and stats.retried == 2 and stats.sent == 10, stats
        assert await live.tags("alice") == expected  # stored by the first attempt, and only once
    finally:
        await cutter.stop()


async def test_memory_stays_bounded_while_the_broker_is_down(
    live: LiveBroker, uploaders: Uploaders, spool_dir: Path
) -> None:
    await live.stop()
    uploader = await uploaders.make(
        live.url, live.tokens["alice"], max_memory_events=10, backoff_initial=0.02, backoff_max=0.2
    )
    expected = tags("bounded", 1000)
    submit_all(uploader, expected)

    stats = uploader.stats()
    assert stats.in_memory <= 10
    assert stats.in_spool >= 990
    assert stats.pending == 1000
    spooled = [tag_of(event) for event in spool_lines(uploader.spool_path)]
    assert len(spooled) == stats.in_spool
    assert spooled == expected[1000 - len(spooled) :]  # the newest ones, in order
    assert mode(uploader.spool_path) == 0o600
    assert mode(spool_dir) == 0o700

    await live.start()
    assert await live.wait_for_count("alice", 1000) == expected
    await wait_idle(uploader)
    assert uploader.spool_path.stat().st_size == 0  # drained and emptied, not left to grow


async def test_close_with_the_broker_down_leaves_a_private_spool_the_next_run_sends(
    live: LiveBroker, uploaders: Uploaders, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await live.stop()
    first = await uploaders.make(live.url, live.tokens["alice"], backoff_initial=0.02, backoff_max=0.1)
    expected = tags("spool", 30)
    submit_all(first, expected)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await first.close(timeout=0.5)

    path = first.spool_path
    assert path.parent == spool_dir
    assert path.name.startswith(spool_key(live.url, "alice"))
    assert mode(path) == 0o600
    assert mode(spool_dir) == 0o700
    assert [tag_of(event) for event in spool_lines(path)] == expected
    assert any("30 events" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert first.stats().sent == 0

    await live.start()
    # Another agent's runner with the same spool directory does not pick alice's spool up.
    other = await uploaders.make(live.url, live.tokens["dan"], agent="dan")
    other.submit(opaque_http("/dan/0"))
    await other.close(timeout=10)
    assert await live.tags("dan") == ["/dan/0"]
    assert path.exists()

    second = await uploaders.make(live.url, live.tokens["alice"])
    later = tags("later", 5)
    submit_all(second, later)
    await second.close(timeout=10)
    assert await live.tags("alice") == expected + later  # the earlier run's events first
    assert not path.exists()


async def test_a_torn_last_line_and_a_corrupt_line_in_the_spool_are_tolerated(
    live: LiveBroker, uploaders: Uploaders
) -> None:
    await live.stop()
    first = await uploaders.make(live.url, live.tokens["alice"], backoff_initial=0.02, backoff_max=0.1)
    expected = tags("torn", 10)
    submit_all(first, expected)
    await first.close(timeout=0.2)
    path = first.spool_path
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 10
    # A crash left garbage in the middle (a disk block lost) and half a line at the end (a write cut short).
    path.write_bytes(b"".join(lines[:5]) + b"\x00\x00\x00garbage\n" + b"".join(lines[5:]) + b'{"kind":"opaque_ht')

    await live.start()
    second = await uploaders.make(live.url, live.tokens["alice"], max_delay=0.01)
    assert second.stats().in_spool == 11  # the earlier run's lines, before they are read back
    more = tags("after-crash", 5)
    submit_all(second, more)  # behind the earlier run's events, in the same file: not glued to the torn line
    assert await live.wait_for_count("alice", 15) == expected + more
    await wait_idle(second)
    assert second.stats().dropped == 1  # the garbage line
    assert await live.tags("alice") == expected + more


async def test_events_submitted_after_close_are_kept_for_the_next_run(live: LiveBroker, uploaders: Uploaders) -> None:
    first = await uploaders.make(live.url, live.tokens["alice"])
    submit_all(first, ["/early"])
    await first.close(timeout=10)
    assert not first.spool_path.exists()
    first.submit(opaque_http("/late"))  # e.g. an exchange that finished while the proxy was stopping
    assert [tag_of(event) for event in spool_lines(first.spool_path)] == ["/late"]

    second = await uploaders.make(live.url, live.tokens["alice"])
    await second.close(timeout=10)
    assert await live.tags("alice") == ["/early", "/late"]


async def test_a_second_runner_for_the_same_agent_does_not_share_the_spool(
    live: LiveBroker, uploaders: Uploaders, caplog: pytest.LogCaptureFixture
) -> None:
    await live.stop()
    first = await uploaders.make(live.url, live.tokens["alice"], max_memory_events=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        second = await uploaders.make(live.url, live.tokens["alice"], max_memory_events=2)
    assert any("holds the spool" in r.getMessage() for r in caplog.records)
    submit_all(first, tags("first", 5))
    submit_all(second, tags("second", 5))
    assert first.stats().in_spool == 3
    assert second.stats().in_spool == 0
    assert second.stats().dropped == 3  # beyond its memory bound, with nowhere to spill
    assert [tag_of(e) for e in spool_lines(first.spool_path)] == tags("first", 3, start=2)


# --- broker answers -----------------------------------------------------------------------------------------------


async def test_a_batch_the_broker_rejects_is_dropped_and_logged_and_later_batches_arrive(
    live: LiveBroker, uploaders: Uploaders, caplog: pytest.LogCaptureFixture
) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"], max_batch_events=5)
    events = [opaque_http(f"/bad-batch/{i}") for i in range(20)]
    events[7]["entry"]["method"] = "post"  # still JSON, but the broker's schema wants uppercase
    events[7]["entry"]["requestBodyPreview"] = "SECRET-PROMPT-TEXT"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for event in events:
            uploader.submit(event)
        expected = [tag_of(e) for e in events[:5] + events[10:]]
        assert await live.wait_for_count("alice", 15) == expected
        await wait_idle(uploader)

    stats = uploader.stats()
    assert (stats.sent, stats.dropped, stats.retried) == (15, 5, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    (line,) = warnings
    assert "400" in line
    assert "5 events" in line
    assert "events[2].entry.method" in line  # the broker's own sentence
    assert "SECRET-PROMPT-TEXT" not in line
    assert "/bad-batch/" not in line


async def test_a_rejected_token_keeps_events_warns_once_and_the_next_run_sends_them(
    live: LiveBroker, uploaders: Uploaders, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        stale = await uploaders.make(live.url, mint_token(), backoff_initial=0.01, backoff_max=0.05)
        expected = tags("token", 10)
        submit_all(stale, expected)

        async def retried() -> bool:
            return stale.stats().retried >= 3

        await eventually(retried, what="several attempts with the rejected token")
        await stale.close(timeout=0.2)
    assert stale.stats().sent == 0
    assert stale.stats().dropped == 0
    rejected = [r.getMessage() for r in caplog.records if "token rejected" in r.getMessage()]
    assert len(rejected) == 1  # one line per streak, not one per attempt
    assert "401" in rejected[0]
    assert [tag_of(event) for event in spool_lines(stale.spool_path)] == expected

    fixed = await uploaders.make(live.url, live.tokens["alice"])
    await fixed.close(timeout=10)
    assert await live.tags("alice") == expected


async def test_5xx_and_429_are_retried_in_order(fake: FakeBroker, uploaders: Uploaders) -> None:
    fake.script = [Reply(503), Reply(500), Reply(429, {"Retry-After": "0"}), Reply(201), Reply(502)]
    uploader = await uploaders.make(fake.url, "ac7_x", max_batch_events=10, backoff_initial=0.01, backoff_max=0.05)
    expected = tags("retry", 30)
    submit_all(uploader, expected)

    async def done() -> bool:
        return len(fake.accepted) >= 30

    await eventually(done, what="all events accepted")
    await wait_idle(uploader)
    assert fake.accepted == expected  # each exactly once, in order
    assert fake.statuses == [503, 500, 429, 201, 502, 201, 201]
    assert fake.requests[:4] == [expected[:10]] * 4  # the same batch until it went through
    stats = uploader.stats()
    assert (stats.sent, stats.dropped, stats.retried, stats.requests) == (30, 0, 4, 7)


async def test_retry_after_is_honoured(fake: FakeBroker, uploaders: Uploaders) -> None:
    # The broker asks for an hour; the uploader's own backoff would retry within milliseconds. The deadline of
    # close() passes before the retry is due, so the batch waits in the spool rather than going out early.
    fake.script = [Reply(429, {"Retry-After": "3600"})]
    uploader = await uploaders.make(fake.url, "ac7_x", backoff_initial=0.001, backoff_max=30.0)
    expected = tags("later", 5)
    submit_all(uploader, expected)

    async def asked() -> bool:
        return len(fake.requests) >= 1

    await eventually(asked, what="the first request")
    await uploader.close(timeout=1.0)
    assert fake.statuses == [429]
    assert fake.accepted == []
    assert [tag_of(event) for event in spool_lines(uploader.spool_path)] == expected

    again = await uploaders.make(fake.url, "ac7_x")
    await again.close(timeout=10)
    assert fake.accepted == expected


async def test_close_flushes_everything(live: LiveBroker, uploaders: Uploaders) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"], max_delay=60.0)
    expected = tags("flush", 30)
    submit_all(uploader, expected)
    assert uploader.stats().requests == 0
    await uploader.close(timeout=10)
    assert await live.tags("alice") == expected
    assert uploader.stats().requests == 1
    assert uploader.stats().pending == 0
    assert not uploader.spool_path.exists()


async def test_close_makes_a_last_attempt_without_waiting_out_the_backoff(
    live: LiveBroker, uploaders: Uploaders
) -> None:
    await live.stop()
    uploader = await uploaders.make(live.url, live.tokens["alice"], backoff_initial=30.0, backoff_max=30.0)
    expected = tags("last-attempt", 5)
    submit_all(uploader, expected)

    async def failed_once() -> bool:
        return uploader.stats().retried >= 1

    await eventually(failed_once, what="a first failed attempt")  # now sleeping 15-30 s before the next
    await live.start()
    await uploader.close(timeout=10)
    assert await live.tags("alice") == expected
    assert uploader.stats().requests == 2
    assert not uploader.spool_path.exists()


async def test_submit_never_raises_and_drops_only_the_bad_event(
    live: LiveBroker, uploaders: Uploaders, caplog: pytest.LogCaptureFixture
) -> None:
    uploader = await uploaders.make(live.url, live.tokens["alice"])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        uploader.submit(opaque_http("/good/0"))
        uploader.submit({"kind": "opaque_http", "x": object()})  # not JSON
        uploader.submit({"kind": "opaque_http", "ts": math.nan})  # NaN is not JSON either
        uploader.submit(opaque_http("/lone-\ud800"))  # a lone surrogate cannot be UTF-8
        uploader.submit(llm_exchange("huge", "z" * (16 * 1024 * 1024)))  # could never fit in one request
        uploader.submit(opaque_http("/good/1"))
        await uploader.close(timeout=10)
    assert await live.tags("alice") == ["/good/0", "/good/1"]
    assert uploader.stats().dropped == 4
    assert uploader.stats().sent == 2
    # Each drop is one plain warning saying why (no traceback, no event contents).
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not serialisable as JSON" in m for m in messages) == 3
    assert sum("request limit" in m for m in messages) == 1
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in caplog.records)
    assert not any("zzzz" in m or "lone-" in m for m in messages)


async def test_events_submitted_before_start_go_behind_an_earlier_runs_spool(
    live: LiveBroker, uploaders: Uploaders, spool_dir: Path
) -> None:
    await live.stop()
    first = await uploaders.make(live.url, live.tokens["alice"])
    submit_all(first, tags("earlier", 5))
    await first.close(timeout=0.2)
    assert first.spool_path.exists()

    await live.start()
    second = ActivityUploader(live.url, live.tokens["alice"], "alice", spool_dir=spool_dir)
    uploaders.made.append(second)
    submit_all(second, tags("before-start", 3))
    await second.start()
    await second.close(timeout=10)
    assert await live.tags("alice") == tags("earlier", 5) + tags("before-start", 3)


# --- crash --------------------------------------------------------------------------------------------------------

_CRASHING_RUNNER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[3])
    from uploader_helpers import opaque_http
    from ac7_cli.runner.uploader import ActivityUploader


    async def main() -> None:
        uploader = ActivityUploader(
            sys.argv[1], "ac7_x", "alice", spool_dir=Path(sys.argv[2]),
            max_memory_events=10, max_batch_events=10, backoff_initial=0.01, backoff_max=0.05,
        )
        await uploader.start()
        for i in range(100):
            uploader.submit(opaque_http(f"/crash/{i}"))
        print("submitted", flush=True)
        await asyncio.sleep(3600)


    asyncio.run(main())
    """
)


async def test_a_crash_resends_only_the_batch_in_flight(fake: FakeBroker, spool_dir: Path, tmp_path: Path) -> None:
    # The runner is killed (SIGKILL) while a request from its spool hangs. What it had in memory is gone — it never
    # reached the disk — but the spool remembers which of its lines were delivered: the next run sends the rest
    # exactly once.
    fake.default = Reply(503)
    script = tmp_path / "crashing_runner.py"
    script.write_text(_CRASHING_RUNNER)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        fake.url,
        str(spool_dir),
        str(Path(__file__).parent),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)) == b"submitted\n"
        assert len(spool_lines(spool_dir / f"{spool_key(fake.url, 'alice')}.jsonl")) == 90  # 10 stay in memory
        fake.script = [Reply(201), Reply(201), Reply(201), Reply(503, hang=True)]
        fake.default = Reply(201)

        async def hung() -> bool:
            return fake.statuses.count(201) >= 3 and len(fake.requests) > len(fake.statuses)

        await eventually(hung, what="three batches accepted and the fourth hanging")
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()

    delivered = list(fake.accepted)
    assert delivered == tags("crash", 30)  # memory's 10, then the spool's first 20
    uploader = ActivityUploader(fake.url, "ac7_x", "alice", spool_dir=spool_dir)
    await uploader.start()
    await uploader.close(timeout=10)
    assert fake.accepted == tags("crash", 100)  # the hung batch again, then the rest: nothing twice
    assert not (spool_dir / f"{spool_key(fake.url, 'alice')}.jsonl").exists()
    assert list(spool_dir.iterdir()) == []
