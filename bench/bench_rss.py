"""Broker resident memory with 200 connected subscribers.

`ac7 serve` on a 201-slot team. Baseline: VmRSS when idle (started, one /healthz answered, no sockets). Then 200
subscribers connect (one /subscribe socket per slot, clients in this process), and RSS is read once they are
settled, again after BROADCASTS broadcasts (~1 KB each) have been delivered to all 200, and once more after they all
disconnect. VmHWM (peak RSS) is reported too. Read from /proc/<pid>/status.

Target: VmRSS <= 150 MB with the 200 subscribers connected (after the traffic, the larger of the two readings).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from _common import Broker, Team, log, make_team, report, run, start_serve, wait_healthy, wait_until

SUBSCRIBERS = 200
BROADCASTS = 100
INTERVAL_S = 0.01
BODY_CHARS = 1000
SETTLE_S = 1.0
TARGET_MB = 150.0
BUDGET_S = 100.0


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)  # /proc reports KiB; MB here means MiB


def _memory(broker: Broker) -> dict[str, float]:
    return {"VmRSS_MB": _mb(broker.status_kb("VmRSS")), "VmHWM_MB": _mb(broker.status_kb("VmHWM"))}


async def measure(team: Team, broker: Broker, names: list[str]) -> dict[str, Any]:
    await wait_healthy(broker.url)
    await asyncio.sleep(SETTLE_S)
    idle = _memory(broker)
    log(f"rss: idle {idle}")
    received = 0

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal received
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                received += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = await asyncio.gather(
            *(http.ws_connect(f"{broker.url}/subscribe?name={n}", headers=team.auth(n)) for n in names)
        )
        tasks = [asyncio.create_task(reader(ws)) for ws in sockets]
        await asyncio.sleep(SETTLE_S)
        connected = _memory(broker)
        log(f"rss: {len(sockets)} connected {connected}")

        body = ("status update from the build agent " * 40)[:BODY_CHARS]
        start = time.monotonic()
        async with aiohttp.ClientSession() as sender:
            for i in range(BROADCASTS):
                delay = start + i * INTERVAL_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                msg = {"body": f"#{i} {body}", "data": {"seq": i}}
                async with sender.post(f"{broker.url}/push", json=msg, headers=team.auth("sender")) as resp:
                    assert resp.status == 201, await resp.text()
        await wait_until(lambda: received >= BROADCASTS * SUBSCRIBERS, 20)
        await asyncio.sleep(SETTLE_S)
        after_traffic = _memory(broker)
        log(f"rss: after {BROADCASTS} broadcasts {after_traffic}")
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*tasks)
    await asyncio.sleep(SETTLE_S)
    disconnected = _memory(broker)

    value = max(connected["VmRSS_MB"], after_traffic["VmRSS_MB"])
    per_socket_kb = (after_traffic["VmRSS_MB"] - idle["VmRSS_MB"]) * 1024 / SUBSCRIBERS
    return report(
        "rss",
        metric="broker VmRSS with 200 connected subscribers (max of: settled, after traffic)",
        value=value,
        unit="MiB",
        target=TARGET_MB,
        higher_is_better=False,
        baseline={"description": "idle broker, no sockets", "VmRSS_MB": idle["VmRSS_MB"]},
        results={
            "idle": idle,
            "connected_settled": connected,
            "after_broadcasts": after_traffic,
            "after_disconnect": disconnected,
            "delta_vs_idle_MB": round(value - idle["VmRSS_MB"], 1),
            "approx_kb_per_subscriber": round(per_socket_kb, 1),
            "frames_delivered": received,
            "frames_expected": BROADCASTS * SUBSCRIBERS,
        },
        params={
            "subscribers": SUBSCRIBERS,
            "broadcasts": BROADCASTS,
            "send_interval_ms": INTERVAL_S * 1000,
            "body_chars": BODY_CHARS,
            "frame_bytes_approx": len(json.dumps({"body": body})) + 200,
            "broker": "ac7 serve subprocess, default Settings",
            "clients": "all sockets and the sender in the benchmark process",
        },
        notes=["MB here = MiB (VmRSS is reported in KiB)."],
    )


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-rss-") as tmp:
        names = [f"r{i:03d}" for i in range(SUBSCRIBERS)]
        team = make_team(Path(tmp), [*names, "sender"], directors=["sender"])
        broker = start_serve(team)
        try:
            return await measure(team, broker, names)
        finally:
            broker.stop()


if __name__ == "__main__":
    run(main, BUDGET_S)
