"""Activity rows: all-or-nothing batches, listing filters and paging, pruning."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ac7_broker.store import ActivityRow, Store
from ac7_broker.store import activity as activity_module

pytestmark = pytest.mark.asyncio

CREATED = 1_700_000_000_000


def ev(kind: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": ts, "duration": 5, "entry": {"kind": "opaque_http", **extra}}


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path, clock=lambda: CREATED)
    yield s
    await s.close()


async def test_insert_batch_returns_rows_in_order(store: Store) -> None:
    events = [ev("llm_exchange", 10, text='héllo \u2028 "q"'), ev("opaque_http", 11)]
    rows = await store.activity.insert_batch("builder", events)
    assert [r.kind for r in rows] == ["llm_exchange", "opaque_http"]
    assert rows[0].id < rows[1].id
    assert rows[0].to_json() == {"id": rows[0].id, "agent": "builder", "event": events[0], "createdAt": CREATED}
    listed, _ = await store.activity.list("builder")
    assert listed == rows[::-1]


async def test_to_json_text_splices_the_stored_event(store: Store) -> None:
    (row,) = await store.activity.insert_batch('we"ird\\agent', [ev("llm_exchange", 1, s="\ud800 lone surrogate")])
    assert json.loads(row.to_json_text()) == row.to_json()
    assert row.event_json in row.to_json_text()  # spliced, not re-encoded
    assert list(json.loads(row.to_json_text())) == ["id", "agent", "event", "createdAt"]


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "opaque_http", "ts": 3, "entry": {"not_json": {1, 2}}},  # fails to encode
        {"kind": "opaque_http", "ts": 3, "x": float("inf")},  # not valid JSON
        {"kind": "opaque_http", "ts": 1 << 64},  # encodes, then fails to bind mid-transaction
        {"ts": 3},  # no kind
        {"kind": "opaque_http", "ts": "3"},  # ts not an integer
        ["not", "an", "object"],
    ],
    ids=["unserialisable", "nan", "ts-overflow", "no-kind", "string-ts", "not-object"],
)
async def test_a_bad_event_stores_nothing_from_its_batch(store: Store, bad: Any) -> None:
    await store.activity.insert_batch("builder", [ev("opaque_http", 1)])
    batch = [ev("llm_exchange", 2), ev("opaque_http", 2), bad, ev("opaque_http", 4)]
    with pytest.raises((TypeError, ValueError, OverflowError)):
        await store.activity.insert_batch("builder", batch)
    assert await store.activity.count() == 1
    # The connection is usable again afterwards (no transaction left open).
    await store.activity.insert_batch("builder", [ev("opaque_http", 5)])
    assert await store.activity.count() == 2


async def test_list_filters(store: Store) -> None:
    await store.activity.insert_batch("builder", [ev("llm_exchange", ts) for ts in (100, 200, 300)])
    await store.activity.insert_batch("builder", [ev("opaque_http", ts) for ts in (150, 250)])
    await store.activity.insert_batch("other", [ev("llm_exchange", 200)])

    async def ts_of(**kw: Any) -> list[int]:
        rows, _ = await store.activity.list("builder", **kw)
        assert all(r.agent == "builder" for r in rows)
        return [r.ts for r in rows]

    assert await ts_of() == [250, 150, 300, 200, 100]  # newest first by id
    assert await ts_of(kind="llm_exchange") == [300, 200, 100]
    assert await ts_of(kind=["opaque_http"]) == [250, 150]
    assert await ts_of(kind=["opaque_http", "llm_exchange"]) == [250, 150, 300, 200, 100]
    assert await ts_of(kind=[]) == []
    assert await ts_of(kind="objective_open") == []
    assert await ts_of(from_ts=200) == [250, 300, 200]  # inclusive
    assert await ts_of(to_ts=200) == [150, 200, 100]  # inclusive
    assert await ts_of(from_ts=150, to_ts=250, kind="llm_exchange") == [200]
    assert await ts_of(from_ts=150, to_ts=250, kind=["llm_exchange", "opaque_http"]) == [250, 150, 200]
    assert (await store.activity.list("nobody"))[0] == []


async def test_list_pages_by_id(store: Store) -> None:
    rows: list[ActivityRow] = []
    for batch in range(7):
        batch_kind = "llm_exchange" if batch % 2 else "opaque_http"
        rows += await store.activity.insert_batch("builder", [ev(batch_kind, batch * 10 + i) for i in range(9)])
    kinds: list[str | list[str] | None] = [None, "llm_exchange", ["llm_exchange", "opaque_http"]]
    for kind in kinds:
        wanted = None if kind is None else {kind} if isinstance(kind, str) else set(kind)
        expected = [r.id for r in reversed(rows) if wanted is None or r.kind in wanted]
        got: list[int] = []
        before: int | None = None
        while True:
            page, before = await store.activity.list("builder", kind=kind, limit=4, before_id=before)
            assert len(page) <= 4
            got += [r.id for r in page]
            if before is None:
                break
            assert before == page[-1].id
        assert got == expected, kind


async def test_list_validates_limit(store: Store) -> None:
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError):
            await store.activity.list("builder", limit=limit)


async def test_prune_deletes_only_older_events_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_module, "PRUNE_CHUNK", 3)
    chunks: list[int] = []
    real_chunk = activity_module._prune_chunk

    def counting_chunk(conn: sqlite3.Connection, cutoff: int, chunk: int) -> int:
        deleted = real_chunk(conn, cutoff, chunk)
        chunks.append(deleted)
        return deleted

    monkeypatch.setattr(activity_module, "_prune_chunk", counting_chunk)
    await store.activity.insert_batch("builder", [ev("llm_exchange", ts) for ts in range(0, 200, 10)])
    await store.activity.insert_batch("other", [ev("opaque_http", ts) for ts in (5, 95, 105)])
    assert await store.activity.prune(100) == 10 + 2
    assert max(chunks) == 3 and len(chunks) >= 4  # never more than a chunk per transaction
    remaining, _ = await store.activity.list("builder")
    assert sorted(r.ts for r in remaining) == list(range(100, 200, 10))
    assert [r.ts for r in (await store.activity.list("other"))[0]] == [105]
    assert await store.activity.prune(100) == 0


@pytest.mark.parametrize("analyze", [False, True], ids=["no-stats", "stale-tiny-stats"])
async def test_activity_queries_use_their_indexes(tmp_path: Path, analyze: bool) -> None:
    s = await Store.open(tmp_path)
    await s.activity.insert_batch("builder", [ev("llm_exchange", 1), ev("opaque_http", 2)])
    await s.close()
    conn = sqlite3.connect(tmp_path / "ac7-activity.db")
    try:
        if analyze:
            conn.execute("ANALYZE")
        params = {"agent": "a", "kind": "k", "before": 9, "from_ts": 1, "to_ts": 5, "limit": 10}
        for sql in (activity_module._LIST_SQL, activity_module._LIST_KIND_SQL, activity_module._LIST_KIND_IDS_SQL):
            plan = [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert len(plan) == 1 and plan[0].startswith("SEARCH activity USING"), plan
            assert "id<?" in plan[0], plan
    finally:
        conn.close()


# --- idempotency keys -----------------------------------------------------------------------------------------------


def _key(key: str = "k" * 22, body: bytes = b"batch-1") -> activity_module.UploadKey:
    return activity_module.UploadKey(key, hashlib.sha256(body).digest())


async def test_a_replayed_upload_key_stores_nothing_and_reports_the_first_count(store: Store) -> None:
    first = await store.activity.insert_upload("builder", [ev("opaque_http", 1), ev("opaque_http", 2)], _key())
    assert (len(first.rows), first.accepted, first.replayed) == (2, 2, False)
    again = await store.activity.insert_upload("builder", [ev("opaque_http", 1), ev("opaque_http", 2)], _key())
    assert (again.rows, again.accepted, again.replayed) == ([], 2, True)
    assert await store.activity.count("builder") == 2
    # Another key, or no key at all, is another upload.
    assert not (await store.activity.insert_upload("builder", [ev("opaque_http", 3)], _key("x" * 22))).replayed
    await store.activity.insert_batch("builder", [ev("opaque_http", 4)])
    assert await store.activity.count("builder") == 4


async def test_a_key_is_per_agent(store: Store) -> None:
    await store.activity.insert_upload("builder", [ev("opaque_http", 1)], _key())
    other = await store.activity.insert_upload("reviewer", [ev("opaque_http", 1)], _key())
    assert not other.replayed and len(other.rows) == 1


async def test_a_key_reused_for_another_batch_is_a_conflict_and_stores_nothing(store: Store) -> None:
    await store.activity.insert_upload("builder", [ev("opaque_http", 1)], _key(body=b"batch-1"))
    with pytest.raises(activity_module.IdempotencyConflictError):
        await store.activity.insert_upload("builder", [ev("opaque_http", 9)], _key(body=b"batch-2"))
    assert [r.ts for r in (await store.activity.list("builder"))[0]] == [1]


async def test_keys_are_forgotten_after_a_day(tmp_path: Path) -> None:
    now = [CREATED]
    s = await Store.open(tmp_path, clock=lambda: now[0])
    try:
        await s.activity.insert_upload("builder", [ev("opaque_http", 1)], _key())
        now[0] += activity_module.UPLOAD_KEY_TTL_MS - 1
        assert (await s.activity.insert_upload("builder", [ev("opaque_http", 1)], _key())).replayed
        now[0] += 2
        assert not (await s.activity.insert_upload("builder", [ev("opaque_http", 1)], _key())).replayed
        assert await s.activity.count("builder") == 2
    finally:
        await s.close()
