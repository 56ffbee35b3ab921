"""Run every bench/bench_*.py in turn (each in its own process) and print their JSON objects as one JSON array.

Usage: .venv/bin/python bench/run_all.py [NAME ...]   (e.g. `fanout rss` to run just those; default: all)

Progress from each benchmark passes through on stderr. A benchmark that crashes or runs past PER_BENCH_TIMEOUT_S
is reported in the array as {"benchmark", "pass": false, "error"} and the others still run. Exits 0 either way:
benchmarks report, they do not fail builds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PER_BENCH_TIMEOUT_S = 150


def run_one(path: Path) -> dict[str, Any]:
    name = path.stem.removeprefix("bench_")
    print(f"== {path.name}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], stdout=subprocess.PIPE, timeout=PER_BENCH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"benchmark": name, "pass": False, "error": f"killed after {PER_BENCH_TIMEOUT_S} s"}
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"benchmark": name, "pass": False, "error": f"exit {proc.returncode}, no JSON on stdout"}
    return result


def main() -> None:
    wanted = set(sys.argv[1:])
    paths = [p for p in sorted(BENCH_DIR.glob("bench_*.py")) if not wanted or p.stem.removeprefix("bench_") in wanted]
    results = [run_one(p) for p in paths]
    print(json.dumps(results, indent=2))
    summary = ", ".join(f"{r['benchmark']}: {'pass' if r.get('pass') else 'MISS'}" for r in results)
    print(f"== summary: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
