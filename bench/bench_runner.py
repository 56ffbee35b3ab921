"""`ac7 claude-code` start-up time (to the moment claude is spawned) and the runner's memory during a session.

A real `ac7 serve` broker and the real runner, with a stand-in `claude` (a tiny Python script named by CLAUDE_PATH)
that records the wall clock the moment it starts, then sleeps while the runner's VmRSS/VmHWM are read from /proc.

Start-up = (fake claude's first timestamp - the runner's launch) - the fake's own interpreter start-up - one
/briefing round trip; the two subtractions are measured in the same run (the baseline): the fake launched directly,
and GET /briefing timed from here. The runner's default path (silent doctor preflight) and `--skip-doctor` are both
reported. Targets (issue): start-up to child spawn ≤ 1.5 s; runner RSS during a session ≤ 150 MB.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from _common import Broker, log, make_team, report, run, start_serve, wait_healthy

ROUNDS = 5
HOLD_S = 1.5
TARGET_START_S = 1.5
TARGET_RSS_MB = 150.0
BUDGET_S = 110.0

_FAKE = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    stamp = time.time_ns()
    with open(os.environ["FAKE_STAMP"], "w") as fh:
        fh.write(str(stamp))
    time.sleep(float(os.environ.get("FAKE_HOLD", "0")))
    """
)


def _read_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _fake_claude(directory: Path) -> Path:
    path = directory / "claude"
    path.write_text(_FAKE.format(python=sys.executable))
    path.chmod(0o700)
    return path


def _direct_start(fake: Path, stamp: Path) -> float:
    """Seconds from launching the fake to its first timestamp: the part of start-up that is not the runner's."""
    t0 = time.time_ns()
    subprocess.run([str(fake)], env={**os.environ, "FAKE_STAMP": str(stamp), "FAKE_HOLD": "0"}, check=True)
    return (int(stamp.read_text()) - t0) / 1e9


def _one_session(env: dict[str, str], stamp: Path, project: Path, extra: list[str]) -> dict[str, float]:
    ac7 = str(Path(sys.executable).parent / "ac7")
    stamp.unlink(missing_ok=True)
    t0 = time.time_ns()
    proc = subprocess.Popen(
        [ac7, "claude-code", *extra, "--", "-p", "hi"],
        env=env,
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not stamp.exists() or not stamp.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"runner exited ({proc.returncode}) or timed out before spawning claude")
        time.sleep(0.002)
    spawned = (int(stamp.read_text()) - t0) / 1e9
    time.sleep(HOLD_S / 2)  # the session is up: proxy, bridge link, presence socket, uploader
    rss = _read_kb(proc.pid, "VmRSS")
    hwm = _read_kb(proc.pid, "VmHWM")
    proc.wait(timeout=30)
    return {"spawned_s": spawned, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024}


async def _briefing_rtt(broker: Broker, token: str) -> float:
    async with aiohttp.ClientSession() as http:
        samples = []
        for _ in range(10):
            t0 = time.perf_counter()
            async with http.get(f"{broker.url}/briefing", headers={"Authorization": f"Bearer {token}"}) as r:
                await r.read()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-runner-") as tmp:
        root = Path(tmp)
        (root / "team").mkdir()
        team = make_team(root / "team", ["lead", "agent"], ["lead"])
        broker = start_serve(team)
        try:
            await wait_healthy(broker.url)
            fake = _fake_claude(root)
            stamp = root / "stamp"
            project = root / "project"
            project.mkdir()
            for sub in ("home", "tmp", "cache"):
                (root / sub).mkdir()
            env = {
                **os.environ,
                "AC7_URL": broker.url,
                "AC7_TOKEN": team.tokens["agent"],
                "CLAUDE_PATH": str(fake),
                "FAKE_STAMP": str(stamp),
                "FAKE_HOLD": str(HOLD_S),
                "HOME": str(root / "home"),
                "TMPDIR": str(root / "tmp"),
                "XDG_CACHE_HOME": str(root / "cache"),
                "IS_SANDBOX": "1",
            }
            rtt = await _briefing_rtt(broker, team.tokens["agent"])
            direct = statistics.median(_direct_start(fake, stamp) for _ in range(ROUNDS))
            runs: dict[str, list[dict[str, float]]] = {"default": [], "skip_doctor": []}
            for i in range(ROUNDS):
                for mode, extra in (("default", []), ("skip_doctor", ["--skip-doctor"])):
                    runs[mode].append(await asyncio.to_thread(_one_session, env, stamp, project, extra))
                log(f"round {i + 1}/{ROUNDS} done")
        finally:
            broker.stop()

    def startup(mode: str) -> float:
        return round(statistics.median(r["spawned_s"] for r in runs[mode]) - direct - rtt, 3)

    rss = max(r["rss_mb"] for rs in runs.values() for r in rs)
    hwm = max(r["hwm_mb"] for rs in runs.values() for r in rs)
    result = report(
        "runner",
        metric="startup_to_spawn_s (default path, broker round trip excluded)",
        value=startup("default"),
        unit="s",
        target=TARGET_START_S,
        higher_is_better=False,
        baseline={"fake_claude_direct_start_s": round(direct, 4), "briefing_rtt_s": round(rtt, 4)},
        results={
            "startup_default_s": startup("default"),
            "startup_skip_doctor_s": startup("skip_doctor"),
            "runner_rss_mb_max": round(rss, 1),
            "runner_hwm_mb_max": round(hwm, 1),
            "rss_target_mb": TARGET_RSS_MB,
            "rss_pass": rss <= TARGET_RSS_MB,
            "raw": runs,
        },
        params={"rounds": ROUNDS, "hold_s": HOLD_S},
        notes=[
            "RSS is read while the session is idle (proxy, bridge link, presence and uploader up, no LLM traffic).",
            "The default path includes the silent doctor (CA generation, a /briefing call) before the session starts.",
        ],
    )
    return result


if __name__ == "__main__":
    run(main, BUDGET_S)
