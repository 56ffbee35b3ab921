"""Message log: append, viewer-scoped history, keyset paging, query plans."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ac7_broker.store import Cursor, Message, Store
from ac7_broker.store.messages import _ROW_SQL, history_query
from ac7_broker.store.worker import StoreClosedError

pytestmark = pytest.mark.asyncio


class FixedClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest_asyncio.fixture
async def clock() -> FixedClock:
    return FixedClock(1_700_000_000_000)


@pytest_asyncio.fixture
async def store(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path, clock=clock)
    yield s
    await s.close()


async def _all_pages(store: Store, viewer: str, limit: int, with_slot: str | None = None) -> list[Message]:
    out: list[Message] = []
    before: Cursor | None = None
    while True:
        page, before = await store.messages.history(viewer, with_slot=with_slot, limit=limit, before=before)
        out.extend(page)
        if before is None:
            return out


async def test_append_returns_the_wire_message(store: Store, clock: FixedClock) -> None:
    msg = await store.messages.append("alice", "bob", "Hi", "hello", "info", {"k": [1, 2], "n": None})
    assert msg.ts == clock.now
    assert msg.to_json() == {
        "id": msg.id,
        "ts": clock.now,
        "from": "alice",
        "to": "bob",
        "title": "Hi",
        "body": "hello",
        "level": "info",
        "data": {"k": [1, 2], "n": None},
    }
    broadcast = await store.messages.append("alice", None, None, "all", "warning", {})
    assert broadcast.to_json()["to"] is None
    assert broadcast.to_json()["title"] is None
    assert broadcast.id > msg.id
    page, _ = await store.messages.history("bob")
    assert [m.to_json() for m in page] == [broadcast.to_json(), msg.to_json()]


async def test_append_snapshots_data(store: Store) -> None:
    data: dict[str, object] = {"tags": ("a", "b")}
    msg = await store.messages.append("alice", None, None, "x", "info", data)
    data["tags"] = "mutated"
    assert msg.data == {"tags": ["a", "b"]}
    page, _ = await store.messages.history("alice")
    assert page[0].data == {"tags": ["a", "b"]}


async def test_append_rejects_bad_input_and_stores_nothing(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.messages.append("alice", None, None, "x", "info", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.messages.append("alice", None, None, "x", "info", {"s": {1, 2}})
    with pytest.raises(ValueError):
        await store.messages.append("alice", None, None, "x", "info", {"f": float("nan")})
    with pytest.raises(ValueError):
        await store.messages.append("", None, None, "x", "info", {})
    assert await store.messages.count() == 0


class _CountingRun:
    """Wraps a DbWorker's ``run`` to count the jobs the message store submits."""

    def __init__(self, run: Any) -> None:
        self.jobs = 0
        self._run = run

    async def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return await self._run(fn, *args, **kwargs)


async def test_concurrent_appends_share_transactions_in_order(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = store.messages._worker
    counting = _CountingRun(worker.run)
    monkeypatch.setattr(worker, "run", counting)
    sent = await asyncio.gather(
        *(store.messages.append(f"s{i % 7}", None, None, f"m{i}", "info", {"i": i}) for i in range(300))
    )
    # Each caller gets its own row back, in the order the calls were made, with ids in that order too.
    assert [m.body for m in sent] == [f"m{i}" for i in range(300)]
    assert [m.data for m in sent] == [{"i": i} for i in range(300)]
    assert [m.id for m in sent] == sorted(m.id for m in sent)
    assert len({m.id for m in sent}) == 300
    # 300 rows in at most 128 per transaction: 3 jobs (a first lone row may go ahead of the rest: 4).
    assert counting.jobs <= 4, counting.jobs
    assert await store.messages.count() == 300
    page = await _all_pages(store, "s0", 100)
    assert [m.id for m in page] == sorted((m.id for m in sent), reverse=True)


async def test_a_bad_row_fails_only_its_own_caller(store: Store) -> None:
    results = await asyncio.gather(
        store.messages.append("alice", None, None, "first", "info", {}),
        store.messages.append("alice", None, None, "bad", "info", {"f": float("inf")}),
        store.messages.append("alice", None, None, "third", "info", {}),
        return_exceptions=True,
    )
    assert isinstance(results[0], Message) and isinstance(results[2], Message)
    assert isinstance(results[1], ValueError)
    page, _ = await store.messages.history("alice")
    assert [m.body for m in page] == ["third", "first"]


async def test_a_caller_that_gives_up_does_not_cancel_the_batch(store: Store) -> None:
    tasks = [asyncio.create_task(store.messages.append("alice", None, None, f"m{i}", "info", {})) for i in range(20)]
    await asyncio.sleep(0)  # all twenty are queued
    tasks[5].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    assert all(isinstance(d, Message) for i, d in enumerate(done) if i != 5)
    bodies = {m.body for m in (await store.messages.history("alice", limit=100))[0]}
    assert {f"m{i}" for i in range(20) if i != 5} <= bodies


async def test_appends_after_close_fail_cleanly(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    await s.messages.append("alice", None, None, "kept", "info", {})
    await s.close()
    with pytest.raises(StoreClosedError):
        await s.messages.append("alice", None, None, "late", "info", {})
    reopened = await Store.open(tmp_path)
    try:
        assert [m.body for m in (await reopened.messages.history("alice"))[0]] == ["kept"]
    finally:
        await reopened.close()


async def test_history_is_scoped_to_the_viewer(store: Store) -> None:
    b1 = await store.messages.append("alice", None, None, "team news", "info", {})
    ab = await store.messages.append("alice", "bob", None, "alice->bob", "info", {})
    ba = await store.messages.append("bob", "alice", None, "bob->alice", "info", {})
    ac = await store.messages.append("alice", "carol", None, "alice->carol", "info", {})
    b2 = await store.messages.append("carol", None, None, "carol to all", "info", {})
    aa = await store.messages.append("alice", "alice", None, "note to self", "info", {})

    async def bodies(viewer: str, with_slot: str | None = None) -> list[str]:
        page, nxt = await store.messages.history(viewer, with_slot=with_slot, limit=100)
        assert nxt is None
        return [m.body for m in page]

    # A third slot never sees a DM between two others.
    assert await bodies("carol") == [b2.body, ac.body, b1.body]
    assert await bodies("dave") == [b2.body, b1.body]
    assert await bodies("bob") == [b2.body, ba.body, ab.body, b1.body]
    # A self-DM is both sent and received, yet listed once.
    assert await bodies("alice") == [aa.body, b2.body, ac.body, ba.body, ab.body, b1.body]

    # with=: only the thread, both directions, no broadcasts.
    assert await bodies("alice", "bob") == [ba.body, ab.body]
    assert await bodies("bob", "alice") == [ba.body, ab.body]
    assert await bodies("carol", "bob") == []
    assert await bodies("dave", "alice") == []
    # with=self: DMs to self only.
    assert await bodies("alice", "alice") == [aa.body]
    assert await bodies("bob", "bob") == []


async def test_paging_across_equal_timestamps(store: Store, clock: FixedClock) -> None:
    sent: list[Message] = []
    for i in range(250):  # one millisecond for everything: only the id breaks ties
        sent.append(await store.messages.append("alice", None, None, f"b{i}", "info", {}))
        if i % 3 == 0:
            sent.append(await store.messages.append("alice", "bob", None, f"d{i}", "info", {}))
    clock.now += 1
    for i in range(30):
        sent.append(await store.messages.append("bob", "alice", None, f"r{i}", "info", {}))
    expected = sorted(sent, key=lambda m: (m.ts, m.id), reverse=True)

    for limit in (1, 7, 100, 1000):
        got = await _all_pages(store, "alice", limit)
        assert [m.id for m in got] == [m.id for m in expected], limit

    thread = await _all_pages(store, "bob", 9, with_slot="alice")
    assert [m.id for m in thread] == [m.id for m in expected if m.recipient is not None]


async def test_next_cursor_only_after_a_full_page(store: Store) -> None:
    for i in range(5):
        await store.messages.append("alice", None, None, str(i), "info", {})
    page, nxt = await store.messages.history("alice", limit=5)
    assert nxt == page[-1].cursor
    assert nxt is not None and Cursor.decode(nxt.encode()) == nxt
    page, nxt = await store.messages.history("alice", limit=6)
    assert len(page) == 5 and nxt is None
    page, nxt = await store.messages.history("alice", limit=5, before=page[-1].cursor)
    assert page == [] and nxt is None


async def test_bare_timestamp_before_excludes_that_whole_millisecond(store: Store, clock: FixedClock) -> None:
    old = await store.messages.append("alice", None, None, "old", "info", {})
    clock.now += 10
    await store.messages.append("alice", None, None, "same-ms-1", "info", {})
    await store.messages.append("alice", None, None, "same-ms-2", "info", {})
    page, _ = await store.messages.history("alice", before=Cursor.parse(str(clock.now)))
    assert [m.id for m in page] == [old.id]
    page, _ = await store.messages.history("alice", before=Cursor.parse(str(clock.now + 1)))
    assert [m.body for m in page] == ["same-ms-2", "same-ms-1", "old"]


async def test_history_rejects_bad_limits(store: Store) -> None:
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError):
            await store.messages.history("alice", limit=limit)


def _plan(conn: sqlite3.Connection, sql: str, params: dict[str, object]) -> list[str]:
    return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize("analyze", [False, True], ids=["no-stats", "stale-tiny-stats"])
async def test_history_never_scans_the_table(tmp_path: Path, analyze: bool) -> None:
    s = await Store.open(tmp_path)
    await s.messages.append("alice", None, None, "x", "info", {})
    await s.messages.append("alice", "bob", None, "y", "info", {})
    await s.close()
    conn = sqlite3.connect(tmp_path / "ac7.db")
    try:
        if analyze:
            # Statistics from a two-row table are the worst case: they make full scans look cheap.
            conn.execute("ANALYZE")
        cases = [
            (None, None),
            ("bob", None),
            ("alice", None),
            (None, Cursor(5, "01890a5d-ac96-774b-bcce-b302099a8057")),
            ("bob", Cursor(5)),
        ]
        for with_slot, before in cases:
            sql, params = history_query("alice", with_slot, 100, before)
            plan = _plan(conn, sql, params)
            table_steps = [step for step in plan if " messages" in step]
            assert table_steps, plan
            for step in table_steps:
                # An index range that starts at the cursor: no scan, and no sort of a whole slot's messages.
                assert step.startswith("SEARCH messages USING COVERING INDEX"), plan
                assert "(ts,id)<(?,?)" in step, plan
            assert not any("SCAN messages" in step for step in plan), plan
        row_plan = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + _ROW_SQL, (1,))]
        assert row_plan == ["SEARCH messages USING INTEGER PRIMARY KEY (rowid=?)"]
    finally:
        conn.close()
