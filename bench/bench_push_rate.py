"""Sustained POST /push rate: broadcasts, each stored in SQLite before its 201, with 10 live subscribers.

SENDERS concurrent senders (one slot each, one keep-alive aiohttp session) loop POST /push with a ~200-character
broadcast for PHASE_S seconds; the rate is accepted (201) pushes per second of wall time, with per-request latency
percentiles. Every push is persisted (the handler appends to ac7.db before answering); the row count is checked at
the end.

Baseline, same broker and run: the same load with 0 subscribers. Conditions alternate (baseline, subscribers,
baseline, subscribers) after a warm-up. The 10 subscribers (one socket per slot) run in their own process and count
every frame, so delivery completeness is checked too (each broadcast must reach all 10).

Topology: broker = `ac7 serve` subprocess; senders = this process; subscribers = a third process. All share 2 cores.
Target: >= 1000 messages/s with the 10 subscribers.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import sqlite3
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from _common import (
    Broker,
    MachineMeter,
    Team,
    log,
    make_team,
    report,
    run,
    start_serve,
    summary_ms,
    wait_healthy,
    wait_until,
)

SUBSCRIBERS = 10
SENDERS = 8
PHASE_S = 8.0
WARMUP_S = 2.0
ROUNDS = 2
TARGET_RATE = 1000.0
BUDGET_S = 110.0
BODY = (
    "Build 4512 finished: 1287 tests passed, 3 skipped. Coverage 91.4% (+0.2). Deployed billing-service "
    "to staging; smoke tests green. Next: reviewing the retry policy change in payments/retry.py before merge."
)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _subscriber_process(url: str, tokens: dict[str, str], conn: Connection) -> None:
    """Child process: hold one socket per slot, count frames; report the count when told to stop."""

    async def main() -> None:
        received = 0

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    received += 1

        async with aiohttp.ClientSession() as http:
            sockets = [
                await http.ws_connect(f"{url}/subscribe?name={name}", headers={"Authorization": f"Bearer {token}"})
                for name, token in tokens.items()
            ]
            tasks = [asyncio.create_task(reader(ws)) for ws in sockets]
            cpu0 = _cpu_self()
            conn.send("ready")
            expected = await asyncio.to_thread(conn.recv)  # frames the parent knows were sent to us
            await wait_until(lambda: received >= expected, 10)
            cpu = _cpu_self() - cpu0
            for ws in sockets:
                await ws.close()
            await asyncio.gather(*tasks)
        conn.send((received, cpu))

    asyncio.run(main())


async def _load(broker: Broker, team: Team, senders: list[str], seconds: float) -> dict[str, Any]:
    """SENDERS loops of POST /push for `seconds`; returns accepted count, elapsed and latencies."""
    latencies: list[int] = []
    errors = 0
    payload = json.dumps({"body": BODY, "level": "info", "data": {"build": 4512}}).encode()
    stop_at = time.monotonic() + seconds

    async def sender(http: aiohttp.ClientSession, name: str) -> None:
        nonlocal errors
        headers = {**team.auth(name), "Content-Type": "application/json"}
        while time.monotonic() < stop_at:
            t0 = time.monotonic_ns()
            async with http.post(f"{broker.url}/push", data=payload, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    errors += 1
                    continue
            latencies.append(time.monotonic_ns() - t0)

    cpu_before = broker.cpu_seconds()
    client_cpu_before = _cpu_self()
    machine = MachineMeter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        start = time.monotonic()
        await asyncio.gather(*(sender(http, name) for name in senders))
        elapsed = time.monotonic() - start
    busy = machine.busy_cores()
    cpu_after = broker.cpu_seconds()
    cpu_after["sender_process"] = _cpu_self()
    cpu_before["sender_process"] = client_cpu_before
    return {
        "accepted": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "latencies": latencies,
        "machine_busy_cores": busy,
        "broker_cpu_s": {k: cpu_after[k] - cpu_before[k] for k in cpu_after},
    }


async def measure(team: Team, broker: Broker, subscribers: list[str], senders: list[str]) -> dict[str, Any]:
    await wait_healthy(broker.url)
    await _load(broker, team, senders, WARMUP_S)
    phases: dict[str, list[dict[str, Any]]] = {"baseline": [], "subscribers": []}
    delivery: list[dict[str, int]] = []
    ctx = multiprocessing.get_context("spawn")
    for rnd in range(ROUNDS):
        for condition in ("baseline", "subscribers"):
            if condition == "baseline":
                phases[condition].append(await _load(broker, team, senders, PHASE_S))
            else:
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_subscriber_process, args=(broker.url, {n: team.tokens[n] for n in subscribers}, child)
                )
                proc.start()
                try:
                    if not await asyncio.to_thread(parent.poll, 30) or parent.recv() != "ready":
                        raise RuntimeError("subscriber process did not get ready")
                    result = await _load(broker, team, senders, PHASE_S)
                    phases[condition].append(result)
                    expected = result["accepted"] * SUBSCRIBERS
                    parent.send(expected)
                    got, sub_cpu = (-1, 0.0)
                    if await asyncio.to_thread(parent.poll, 20):
                        got, sub_cpu = parent.recv()
                    delivery.append({"expected_frames": expected, "received_frames": got})
                    result["broker_cpu_s"]["subscriber_process"] = sub_cpu
                finally:
                    await asyncio.to_thread(proc.join, 10)
                    if proc.is_alive():
                        proc.kill()
            last = phases[condition][-1]
            log(f"push_rate: round {rnd} {condition}: {last['accepted'] / last['elapsed_s']:.0f} msg/s")

    def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
        accepted = sum(r["accepted"] for r in runs)
        elapsed = sum(r["elapsed_s"] for r in runs)
        cpu = {k: round(sum(r["broker_cpu_s"][k] for r in runs) / elapsed, 3) for k in runs[0]["broker_cpu_s"]}
        broker_cpu = {k: cpu[k] for k in ("loop_thread", "other_threads")}
        clients_cpu = {k: v for k, v in cpu.items() if k not in broker_cpu}
        return {
            "msgs_per_s": round(accepted / elapsed, 1),
            "per_round_msgs_per_s": [round(r["accepted"] / r["elapsed_s"], 1) for r in runs],
            "accepted": accepted,
            "errors": sum(r["errors"] for r in runs),
            "latency_ms": summary_ms([v for r in runs for v in r["latencies"]]),
            # CPU seconds per wall second. subscriber_process counts from "ready" until it has every frame.
            "broker_cpu_cores_used": broker_cpu,
            "client_cpu_cores_used": clients_cpu,
            "machine_busy_cores": round(sum(r["machine_busy_cores"] * r["elapsed_s"] for r in runs) / elapsed, 2),
            "broker_loop_cpu_us_per_msg": round(broker_cpu["loop_thread"] / (accepted / elapsed) * 1e6, 1),
            "broker_other_threads_cpu_us_per_msg": round(broker_cpu["other_threads"] / (accepted / elapsed) * 1e6, 1),
            # What the broker alone could sustain on one free core if its two threads never overlapped (the GIL
            # serialises their Python work; SQLite's C work could overlap, so this is a floor, not a ceiling).
            "broker_cpu_bound_estimate_msgs_per_s": round(
                accepted / elapsed / (broker_cpu["loop_thread"] + broker_cpu["other_threads"])
            ),
        }

    with_subs = combine(phases["subscribers"])
    baseline = combine(phases["baseline"])
    with sqlite3.connect(f"file:{team.directory / 'ac7.db'}?mode=ro", uri=True) as db:
        stored = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    return report(
        "push_rate",
        metric="sustained POST /push broadcasts accepted per second (persisted), 10 live subscribers",
        value=with_subs["msgs_per_s"],
        unit="msgs/s",
        target=TARGET_RATE,
        higher_is_better=True,
        baseline={"description": "same load, 0 subscribers", "msgs_per_s": baseline["msgs_per_s"]},
        results={
            "with_subscribers": with_subs,
            "baseline_no_subscribers": baseline,
            "rate_ratio_vs_baseline": round(with_subs["msgs_per_s"] / baseline["msgs_per_s"], 3),
            "delivery": delivery,
            "messages_in_store_at_end": stored,
        },
        params={
            "subscribers": SUBSCRIBERS,
            "concurrent_senders": SENDERS,
            "phase_seconds": PHASE_S,
            "rounds_per_condition": ROUNDS,
            "warmup_seconds": WARMUP_S,
            "body_chars": len(BODY),
            "kind": "broadcast",
            "broker": "ac7 serve subprocess, default Settings",
            "clients": "senders in the benchmark process, subscribers in a separate process",
        },
        notes=["Broker, senders and subscribers share the same cores."],
    )


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-push-") as tmp:
        subscribers = [f"sub{i:02d}" for i in range(SUBSCRIBERS)]
        senders = [f"sender{i:02d}" for i in range(SENDERS)]
        team = make_team(Path(tmp), subscribers + senders, directors=[senders[0]])
        broker = start_serve(team)
        try:
            return await measure(team, broker, subscribers, senders)
        finally:
            broker.stop()


if __name__ == "__main__":
    run(main, BUDGET_S)
