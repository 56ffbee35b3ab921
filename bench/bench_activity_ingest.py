"""Activity (trace) ingest throughput: POST /agents/{name}/activity with realistic ~50 KB llm_exchange events.

Batches of 50 events (~2.5 MB of JSON per POST) are uploaded by UPLOADERS agents concurrently (each to its own
slot: uploads are self-only), cycling through DISTINCT_BATCHES pre-encoded bodies, until MAX_POSTS are accepted or
PHASE_S seconds pass. Throughput = request-body bytes accepted / wall time (MB = 10^6 bytes). Meanwhile a probe
GETs /healthz every 20 ms, showing how long each upload holds the broker's event loop.

Baseline, same run: `Store.activity.insert_batch` on the same events, in this process on a fresh Store (no HTTP,
no JSON parse, no validation), same number of batches, throughput over the same body-byte count. A single-thread
breakdown of one batch (json.loads, validate_upload, per-event json.dumps as insert_batch does, the SQLite inserts)
shows where the broker's time goes.

Topology: broker = `ac7 serve` subprocess (default Settings: 16 MiB activity body cap); uploaders in this process.
Target: >= 20 MB/s.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from _common import Broker, MachineMeter, Team, log, make_team, report, run, start_serve, summary_ms, wait_healthy
from _traces import batches
from ac7_broker.store import Store
from ac7_broker.store.schema import ACTIVITY_MIGRATIONS, migrate
from ac7_core.activity import validate_upload

EVENTS_PER_BATCH = 50
EVENT_BYTES = 50_000
DISTINCT_BATCHES = 4
UPLOADERS = 2
MAX_POSTS = 60
PHASE_S = 25.0
WARMUP_POSTS = 2
TARGET_MB_S = 20.0
BUDGET_S = 115.0
TS0 = 1_760_000_000_000


def _median_ms(fn: Callable[[], object], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def _breakdown(body: bytes, directory: Path) -> dict[str, float]:
    """Single-thread cost of each step the broker takes for one batch, in ms (median of 5)."""
    doc = json.loads(body)
    events = validate_upload(doc)
    encoded = [json.dumps(e, allow_nan=False, separators=(",", ":")) for e in events]
    conn = sqlite3.connect(directory / "breakdown.db", autocommit=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn, ACTIVITY_MIGRATIONS)

    def insert() -> None:
        conn.execute("BEGIN IMMEDIATE")
        for text in encoded:
            conn.execute(
                "INSERT INTO activity (agent, kind, ts, created_at, event) VALUES (?, ?, ?, ?, ?)",
                ("agent0", "llm_exchange", TS0, TS0, text),
            )
        conn.execute("COMMIT")

    try:
        return {
            "json_loads_ms": _median_ms(lambda: json.loads(body)),
            "validate_upload_ms": _median_ms(lambda: validate_upload(doc)),
            "encode_events_json_dumps_ms": _median_ms(
                lambda: [json.dumps(e, allow_nan=False, separators=(",", ":")) for e in events]
            ),
            "sqlite_insert_50_rows_ms": _median_ms(insert),
        }
    finally:
        conn.close()


async def _upload_phase(broker: Broker, team: Team, bodies: list[bytes], agents: list[str]) -> dict[str, Any]:
    posts: list[tuple[int, int]] = []  # (body bytes, latency ns)
    probe: list[int] = []
    stop_at = time.monotonic() + PHASE_S
    next_body = 0
    done = asyncio.Event()

    async def uploader(http: aiohttp.ClientSession, agent: str) -> None:
        nonlocal next_body
        headers = {**team.auth(agent), "Content-Type": "application/json"}
        while len(posts) < MAX_POSTS and time.monotonic() < stop_at:
            body = bodies[next_body % len(bodies)]
            next_body += 1
            t0 = time.monotonic_ns()
            async with http.post(f"{broker.url}/agents/{agent}/activity", data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 201:
                    raise RuntimeError(f"upload refused: {resp.status} {text[:200]}")
            posts.append((len(body), time.monotonic_ns() - t0))

    async def prober(http: aiohttp.ClientSession) -> None:
        while not done.is_set():
            t0 = time.monotonic_ns()
            async with http.get(f"{broker.url}/healthz") as resp:
                await resp.read()
            probe.append(time.monotonic_ns() - t0)
            await asyncio.sleep(0.02)

    cpu_before = broker.cpu_seconds()
    machine = MachineMeter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        probe_task = asyncio.create_task(prober(http))
        start = time.monotonic()
        await asyncio.gather(*(uploader(http, a) for a in agents))
        elapsed = time.monotonic() - start
        done.set()
        await probe_task
    busy = machine.busy_cores()
    cpu_after = broker.cpu_seconds()
    total = sum(size for size, _ in posts)
    return {
        "posts": len(posts),
        "bytes": total,
        "elapsed_s": round(elapsed, 3),
        "mb_per_s": round(total / elapsed / 1e6, 2),
        "events_per_s": round(len(posts) * EVENTS_PER_BATCH / elapsed, 1),
        "post_latency_ms": summary_ms(lat for _, lat in posts),
        "healthz_probe_ms_during_uploads": summary_ms(probe),
        "broker_cpu_cores_used": {k: round((cpu_after[k] - cpu_before[k]) / elapsed, 3) for k in cpu_after},
        "machine_busy_cores": busy,
    }


async def _store_baseline(
    directory: Path, docs: list[list[dict[str, Any]]], sizes: list[int], n: int
) -> dict[str, Any]:
    store = await Store.open(directory)
    try:
        await store.activity.insert_batch("agent0", docs[0])  # warm-up (file creation, first pages)
        total = 0
        t0 = time.monotonic()
        for i in range(n):
            await store.activity.insert_batch("agent0", docs[i % len(docs)])
            total += sizes[i % len(docs)]
        elapsed = time.monotonic() - t0
    finally:
        await store.close()
    return {
        "batches": n,
        "bytes": total,
        "elapsed_s": round(elapsed, 3),
        "mb_per_s": round(total / elapsed / 1e6, 2),
        "per_batch_ms": round(elapsed / n * 1000, 2),
    }


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-activity-") as tmp:
        root = Path(tmp)
        log("activity: generating events")
        event_batches = await asyncio.to_thread(batches, 7, DISTINCT_BATCHES, EVENTS_PER_BATCH, TS0, EVENT_BYTES)
        bodies = [json.dumps({"events": b}).encode() for b in event_batches]
        event_sizes = [len(json.dumps(e)) for b in event_batches for e in b]
        (root / "team").mkdir()
        agents = [f"agent{i}" for i in range(UPLOADERS)]
        team = make_team(root / "team", [*agents, "boss"], directors=["boss"])
        broker = start_serve(team)
        try:
            await wait_healthy(broker.url)
            async with aiohttp.ClientSession() as http:
                for i in range(WARMUP_POSTS):
                    async with http.post(
                        f"{broker.url}/agents/agent0/activity",
                        data=bodies[i % len(bodies)],
                        headers={**team.auth("agent0"), "Content-Type": "application/json"},
                    ) as resp:
                        assert resp.status == 201, await resp.text()
            log("activity: HTTP phase")
            http_result = await _upload_phase(broker, team, bodies, agents)
        finally:
            broker.stop()
        log(f"activity: HTTP {http_result['mb_per_s']} MB/s; store baseline")
        docs = [json.loads(b)["events"] for b in bodies]
        baseline = await _store_baseline(root / "baseline", docs, [len(b) for b in bodies], http_result["posts"])
        breakdown = await asyncio.to_thread(_breakdown, bodies[0], root)
    per_batch_sum = round(sum(breakdown.values()), 2)
    return report(
        "activity_ingest",
        metric="POST /agents/{name}/activity throughput, request-body bytes accepted per second",
        value=http_result["mb_per_s"],
        unit="MB/s",
        target=TARGET_MB_S,
        higher_is_better=True,
        baseline={
            "description": "Store.activity.insert_batch on the same events, no HTTP/parse/validation",
            "mb_per_s": baseline["mb_per_s"],
        },
        results={
            "http": http_result,
            "store_baseline": baseline,
            "http_vs_store_ratio": round(http_result["mb_per_s"] / baseline["mb_per_s"], 3),
            "single_thread_breakdown_per_batch": {**breakdown, "sum_ms": per_batch_sum},
            "single_thread_ceiling_mb_per_s": round(len(bodies[0]) / per_batch_sum / 1e3, 1),
        },
        params={
            "events_per_batch": EVENTS_PER_BATCH,
            "event_bytes_min_max": [min(event_sizes), max(event_sizes)],
            "batch_body_bytes": [len(b) for b in bodies],
            "distinct_batches": DISTINCT_BATCHES,
            "concurrent_uploaders": UPLOADERS,
            "max_posts": MAX_POSTS,
            "max_phase_seconds": PHASE_S,
            "broker": "ac7 serve subprocess, default Settings",
            "clients": "uploaders in the benchmark process",
        },
        notes=[
            "MB = 10^6 bytes of request body (the upload JSON as sent).",
            "single_thread_ceiling = batch bytes / sum of the breakdown steps (one core, no HTTP or thread hops).",
        ],
    )


if __name__ == "__main__":
    run(main, BUDGET_S)
