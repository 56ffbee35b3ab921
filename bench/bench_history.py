"""GET /history latency on a 1 000 000-message store.

Fill: the broker's own migrations create ac7.db (Store.open), then 1 000 000 rows are written straight into its
`messages` table with sqlite3 in large transactions, in (ts, id) order as the broker would have appended them: UUIDv7
ids from the broker's generator, one message every ~3 ms of history, 70 % broadcasts and 30 % DMs among 20 slots,
bodies of 40..600 characters. Then the broker starts (`run_broker` with a high /history rate limit, since 20/s per
slot would otherwise throttle the benchmark) and one viewer issues sequential, warm requests:

- `feed`: the first page of its feed (broadcasts + its DMs), limit 100
- `feed_paging`: follow `nextBefore` 10 pages deep from the top
- `feed_deep`: a page `before` a random point of the whole history (bare epoch-ms cursor)
- `thread` / `thread_paging`: the DM thread `with` one teammate, first page and following `nextBefore`

Baseline, same run: the very same parameter sequence through `Store.messages.history` in this process (the store
call the handler makes, including its worker-thread hop), plus the SQL alone on a plain connection.

Topology: broker subprocess; client in this process. Target: p99 <= 10 ms (all request kinds together).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from _common import MachineMeter, Team, log, make_team, report, run, start_runner, summary_ms, wait_healthy
from ac7_broker.store import Cursor, Store
from ac7_broker.store.ids import UuidV7Generator
from ac7_broker.store.messages import _fetch_messages, history_query

MESSAGES = 1_000_000
SLOTS = 20
VIEWER = "a00"
PEER = "a01"
BROADCAST_SHARE = 0.7
FILL_CHUNK = 50_000
WARMUP_REQUESTS = 200
ROUNDS = 60  # each round: feed, 10 feed pages, 3 deep pages, thread, 5 thread pages = 20 requests
TARGET_P99_MS = 10.0
BUDGET_S = 115.0
LEVELS = ("info",) * 8 + ("notice", "warning")


def _fill(db_path: Path, names: list[str]) -> dict[str, Any]:
    """Append MESSAGES rows in store order; returns facts about what the viewer can see."""
    rng = random.Random(42)
    gen = UuidV7Generator()
    words = ("build", "test", "deploy", "review", "merge", "failed", "passed", "retry", "queue", "socket", "commit")
    bodies = [" ".join(rng.choices(words, k=rng.randint(6, 90)))[: rng.randint(40, 600)] or "ok" for _ in range(2000)]
    conn = sqlite3.connect(db_path, autocommit=True)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while filling
    ts = int(time.time() * 1000) - MESSAGES * 3
    viewer_visible = thread = 0
    t0 = time.monotonic()
    try:
        for start in range(0, MESSAGES, FILL_CHUNK):
            rows = []
            for _ in range(min(FILL_CHUNK, MESSAGES - start)):
                ts += rng.randint(1, 5)
                sender = rng.choice(names)
                recipient = None
                if rng.random() >= BROADCAST_SHARE:
                    recipient = rng.choice(names)
                if recipient is None or VIEWER in (sender, recipient):
                    viewer_visible += 1
                if {sender, recipient} == {VIEWER, PEER}:
                    thread += 1
                title = None if rng.random() < 0.8 else "status"
                data = "{}" if rng.random() < 0.9 else '{"build":4512,"ok":true}'
                rows.append((gen.new(ts), ts, sender, recipient, title, rng.choice(bodies), rng.choice(LEVELS), data))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO messages (id, ts, sender, recipient, title, body, level, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {
        "messages": MESSAGES,
        "visible_to_viewer": viewer_visible,
        "viewer_thread_with_peer": thread,
        "fill_seconds": round(time.monotonic() - t0, 1),
        "db_bytes": db_path.stat().st_size,
    }


def _plan(rng: random.Random, ts_lo: int, ts_hi: int) -> list[tuple[str, dict[str, str]]]:
    """One round of request kinds; paging entries carry no cursor yet (filled from the previous response)."""
    plan: list[tuple[str, dict[str, str]]] = [("feed", {})]
    plan += [("feed_paging", {})] * 10
    plan += [("feed_deep", {"before": str(rng.randint(ts_lo, ts_hi))}) for _ in range(3)]
    plan += [("thread", {"with": PEER})]
    plan += [("thread_paging", {"with": PEER})] * 5
    return plan


Plan = list[tuple[str, dict[str, str]]]


async def _http_run(url: str, team: Team, plans: list[Plan]) -> tuple[dict[str, list[int]], Plan]:
    """Run the plans over HTTP; returns per-kind latencies and the exact parameter sequence used."""
    latencies: dict[str, list[int]] = {}
    sequence: Plan = []
    headers = team.auth(VIEWER)
    async with aiohttp.ClientSession() as http:
        for plan in plans:
            cursor: str | None = None
            for kind, base in plan:
                params = {"limit": "100", **base}
                if kind.endswith("_paging"):
                    if cursor is None:
                        continue
                    params["before"] = cursor
                t0 = time.monotonic_ns()
                async with http.get(f"{url}/history?{urlencode(params)}", headers=headers) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"/history: {resp.status} {body}")
                latencies.setdefault(kind, []).append(time.monotonic_ns() - t0)
                assert len(body["messages"]) == 100, (kind, len(body["messages"]))
                cursor = body["nextBefore"]
                sequence.append((kind, params))
    return latencies, sequence


def _store_args(params: dict[str, str]) -> dict[str, Any]:
    return {
        "with_slot": params.get("with"),
        "limit": int(params["limit"]),
        "before": Cursor.parse(params["before"]) if "before" in params else None,
    }


async def _store_run(directory: Path, sequence: list[tuple[str, dict[str, str]]]) -> dict[str, list[int]]:
    latencies: dict[str, list[int]] = {}
    store = await Store.open(directory)
    try:
        for _, params in sequence[:WARMUP_REQUESTS]:
            await store.messages.history(VIEWER, **_store_args(params))
        for kind, params in sequence:
            args = _store_args(params)
            t0 = time.monotonic_ns()
            await store.messages.history(VIEWER, **args)
            latencies.setdefault(kind, []).append(time.monotonic_ns() - t0)
    finally:
        await store.close()
    return latencies


def _sql_run(db_path: Path, sequence: list[tuple[str, dict[str, str]]]) -> list[int]:
    """The store's two-step SQL and row decoding, on a plain read connection, no thread hop."""
    conn = sqlite3.connect(db_path, autocommit=True)
    out = []
    try:
        for _, params in sequence:
            args = _store_args(params)
            t0 = time.monotonic_ns()
            sql, qp = history_query(VIEWER, args["with_slot"], args["limit"], args["before"])
            _fetch_messages(conn, sql, qp)
            out.append(time.monotonic_ns() - t0)
    finally:
        conn.close()
    return out


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-history-") as tmp:
        root = Path(tmp)
        names = [f"a{i:02d}" for i in range(SLOTS)]
        team = make_team(root, names, directors=[VIEWER])
        store = await Store.open(root)  # the broker's migrations create the schema
        await store.close()
        log(f"history: filling {MESSAGES} messages")
        fill = await asyncio.to_thread(_fill, root / "ac7.db", names)
        log(f"history: filled in {fill['fill_seconds']} s")
        with sqlite3.connect(root / "ac7.db") as db:
            ts_lo, ts_hi = db.execute("SELECT min(ts), max(ts) FROM messages").fetchone()
        rng = random.Random(1)
        broker = start_runner(team, history_rate=1e6, history_burst=1e6)
        try:
            await wait_healthy(broker.url)
            warm = [_plan(rng, ts_lo, ts_hi) for _ in range(WARMUP_REQUESTS // 20)]
            await _http_run(broker.url, team, warm)
            rss_before = broker.status_kb("VmRSS")
            cpu_before = broker.cpu_seconds()
            machine = MachineMeter()
            t0 = time.monotonic()
            http_lat, sequence = await _http_run(broker.url, team, [_plan(rng, ts_lo, ts_hi) for _ in range(ROUNDS)])
            elapsed = time.monotonic() - t0
            busy = machine.busy_cores()
            cpu_after = broker.cpu_seconds()
            rss_after = broker.status_kb("VmRSS")
        finally:
            broker.stop()
        log("history: store baseline")
        store_lat = await _store_run(root, sequence)
        sql_lat = await asyncio.to_thread(_sql_run, root / "ac7.db", sequence)

    http_all = summary_ms(v for vals in http_lat.values() for v in vals)
    store_all = summary_ms(v for vals in store_lat.values() for v in vals)
    return report(
        "history",
        metric="GET /history (limit 100) latency p99, sequential warm requests, 1M-message store",
        value=http_all["p99"],
        unit="ms",
        target=TARGET_P99_MS,
        higher_is_better=False,
        baseline={"description": "Store.messages.history with the same parameters", "p99_ms": store_all["p99"]},
        results={
            "http_ms": http_all,
            "http_ms_by_kind": {k: summary_ms(v) for k, v in http_lat.items()},
            "store_call_ms": store_all,
            "store_call_ms_by_kind": {k: summary_ms(v) for k, v in store_lat.items()},
            "sql_only_ms": summary_ms(sql_lat),
            "http_overhead_p50_ms": round(http_all["p50"] - store_all["p50"], 3),
            "requests_per_s": round(len(sequence) / elapsed, 1),
            "broker_cpu_ms_per_request": {
                k: round((cpu_after[k] - cpu_before[k]) * 1000 / len(sequence), 3) for k in cpu_after
            },
            "machine_busy_cores_during_http": busy,
            "broker_rss_kb": {"before": rss_before, "after": rss_after},
            "fill": fill,
        },
        params={
            "messages": MESSAGES,
            "slots": SLOTS,
            "broadcast_share": BROADCAST_SHARE,
            "page_limit": 100,
            "requests": len(sequence),
            "warmup_requests": WARMUP_REQUESTS,
            "request_mix_per_round": "1 feed, 10 feed_paging, 3 feed_deep, 1 thread, 5 thread_paging",
            "broker": "run_broker via bench/_broker_runner.py, Settings(history_rate=1e6, history_burst=1e6)",
            "clients": "one sequential client in the benchmark process",
        },
    )


if __name__ == "__main__":
    run(main, BUDGET_S)
