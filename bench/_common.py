"""Shared plumbing for the broker benchmarks.

A throwaway team config in a temp directory, the real broker as a subprocess (`ac7 serve`, or
`bench/_broker_runner.py` when a benchmark needs non-default Settings), /proc readings of that process, percentiles,
and the JSON report every benchmark prints on stdout. Progress goes to stderr so stdout stays one JSON object.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ac7_core.config_file import create_config
from ac7_core.tokens import mint_token

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # benchmarks never send traffic anywhere but loopback
_LISTENING_RE = re.compile(r"listening on (http://\S+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Variables that would point the broker at another key, config or address than the throwaway team's.
_SCRUBBED_ENV = ("AC7_KEK", "AC7_KEK_PASSPHRASE", "AC7_CONFIG", "AC7_HOST", "AC7_PORT", "AC7_URL", "AC7_TOKEN")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


@dataclass
class Team:
    directory: Path
    config_path: Path
    tokens: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def make_team(directory: Path, names: Sequence[str], directors: Iterable[str]) -> Team:
    """Write a config for `names` (plaintext tokens, hashed by create_config; the key file is created beside it).

    A team needs at least one director; every other slot is an individual contributor.
    """
    directors = set(directors)
    tokens = {name: mint_token() for name in names}
    doc = {
        "team": {"name": "bench", "directive": "Measure the broker", "brief": ""},
        "roles": {"agent": {"description": "Benchmark client", "instructions": ""}},
        "slots": [
            {
                "name": name,
                "role": "agent",
                "authority": "director" if name in directors else "individual-contributor",
                "token": tokens[name],
            }
            for name in names
        ],
    }
    path = directory / "ac7.json"
    create_config(path, doc, env={})  # env={}: AC7_KEK is not consulted, so ac7-kek.bin is created
    return Team(directory, path, tokens)


class Broker:
    """A broker subprocess this benchmark started; `stop()` sends it SIGTERM (SIGKILL if it will not go).

    Under AC7_BENCH_PYSPY the started process is py-spy and the broker is its only child; `pid` is the broker's.
    """

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.pid = proc.pid
        if os.environ.get("AC7_BENCH_PYSPY"):
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            self.pid = int(children[0])

    def status_kb(self, field: str) -> int:
        """A `kB` line of /proc/<pid>/status, e.g. VmRSS or VmHWM."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU of the event-loop thread (tid == pid) and of all other threads (SQLite workers etc.)."""
        main = other = 0.0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended while we looked
            seconds = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
            if int(task.name) == self.pid:
                main += seconds
            else:
                other += seconds
        return {"loop_thread": main, "other_threads": other}

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        if self.pid != self.proc.pid:
            os.kill(self.pid, signal.SIGTERM)  # py-spy writes its profile once the broker has exited
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat, summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


class MachineMeter:
    """Cores busy machine-wide over an interval: shows when something outside the benchmark competes for CPU."""

    def __init__(self) -> None:
        self._busy, self._total = machine_cpu_seconds()
        self._wall = time.monotonic()

    def busy_cores(self) -> float:
        busy, _ = machine_cpu_seconds()
        return round((busy - self._busy) / (time.monotonic() - self._wall), 2)


def _broker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _spawn(argv: list[str], directory: Path, timeout: float = 30.0) -> Broker:
    log_path = directory / "broker.log"
    profile_dir = os.environ.get("AC7_BENCH_PYSPY")
    if profile_dir:
        # Investigation only: sample the broker with py-spy (pip install py-spy; not a project dependency).
        out = Path(profile_dir).resolve() / f"{Path(sys.argv[0]).stem}-{int(time.time())}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        pyspy = Path(sys.executable).parent / "py-spy"
        argv = [str(pyspy), "record", "--threads", "-r", "200", "-f", "raw", "-o", str(out), "--", *argv]
        log(f"profiling the broker with py-spy into {out}")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=_broker_env(), cwd=directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING_RE.search(log_path.read_text(errors="replace"))
        if match:
            return Broker(proc, match.group(1), log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise RuntimeError(f"broker did not start; its log:\n{log_path.read_text(errors='replace')}")


def start_serve(team: Team) -> Broker:
    """`ac7 serve` exactly as an operator runs it (default Settings), on a free loopback port."""
    ac7 = Path(sys.executable).parent / "ac7"
    return _spawn([str(ac7), "serve", "--config", str(team.config_path), "--host", HOST, "--port", "0"], team.directory)


def start_runner(team: Team, **settings: Any) -> Broker:
    """The same `run_broker` as `ac7 serve`, in its own process, with these Settings fields overridden."""
    argv = [sys.executable, str(BENCH_DIR / "_broker_runner.py"), str(team.config_path), json.dumps(settings)]
    return _spawn(argv, team.directory)


async def wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        resp.raise_for_status()


async def wait_until(condition: Callable[[], bool], within: float, poll: float = 0.01) -> bool:
    """Poll `condition` until it holds (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values_ns: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """count/mean/p50/p90/p99/p99.9/max in milliseconds, from nanosecond samples."""
    ms = sorted(v / 1e6 for v in values_ns)
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "mean": round(sum(ms) / len(ms), digits),
        "p50": round(percentile(ms, 50), digits),
        "p90": round(percentile(ms, 90), digits),
        "p99": round(percentile(ms, 99), digits),
        "p99_9": round(percentile(ms, 99.9), digits),
        "max": round(ms[-1], digits),
    }


def _git_revision() -> str:
    """HEAD's short hash, with "+dirty" when the broker or core packages differ from it (what was measured)."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "packages/broker", "packages/core"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    return {
        "git": _git_revision(),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
    }


def report(
    name: str,
    *,
    metric: str,
    value: float,
    unit: str,
    target: float,
    higher_is_better: bool,
    baseline: dict[str, Any],
    results: dict[str, Any],
    params: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    passed = value >= target if higher_is_better else value <= target
    return {
        "benchmark": name,
        "metric": metric,
        "value": value,
        "unit": unit,
        "target": {"op": ">=" if higher_is_better else "<=", "value": target, "unit": unit},
        "pass": passed,
        "baseline": baseline,
        "results": results,
        "params": params,
        "notes": list(notes),
        "environment": environment(),
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2), flush=True)


def run(main: Any, budget: float) -> None:
    """Run the benchmark coroutine under a hard time budget and print its JSON object.

    Going over budget is a result, not a crash: it prints an object with `"pass": false` and an `error`, and exits 0
    (benchmarks report; they never fail a build). Any other exception propagates. Each benchmark's own `finally`
    stops its broker.
    """

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(budget):
            result: dict[str, Any] = await main()
            return result

    try:
        emit(asyncio.run(bounded()))
    except TimeoutError:
        name = Path(sys.argv[0]).stem.removeprefix("bench_")
        emit({"benchmark": name, "pass": False, "error": f"exceeded its {budget:.0f} s budget", **_env_only()})


def _env_only() -> dict[str, Any]:
    return {"environment": environment()}
