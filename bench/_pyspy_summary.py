"""Summarise a py-spy raw (collapsed-stack) profile of the broker: where each thread spends its samples.

Usage: python bench/_pyspy_summary.py PROFILE.txt [TOP]

Record one by running any benchmark with AC7_BENCH_PYSPY=<dir> (py-spy must be installed in the venv; it is an
investigation tool, not a project dependency). Prints, per thread: total samples, the top functions by self samples
(the leaf frame) and by inclusive samples (anywhere on the stack), as shares of that thread's busy samples.
Samples whose leaf is a wait (the event loop's epoll, a worker thread waiting for its next job) are counted as idle
and left out of the shares.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

# Leaf frames that mean "waiting for work", not "working".
_IDLE_LEAVES = ("EpollSelector.select (", "_worker (concurrent/futures/thread.py:89)")


def main() -> None:
    path = Path(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    totals: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    self_samples: defaultdict[str, Counter[str]] = defaultdict(Counter)
    inclusive: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
        frames = frames[1:]
        if frames and frames[-1].startswith(_IDLE_LEAVES):
            idle[thread] += count
            continue
        totals[thread] += count
        if frames:
            self_samples[thread][frames[-1]] += count
        for frame in set(frames):
            inclusive[thread][frame] += count
    for thread, total in totals.most_common():
        print(f"\n== {thread}: {total} busy samples ({idle[thread]} idle samples left out)")
        print("-- self")
        for frame, n in self_samples[thread].most_common(top):
            print(f"{100 * n / total:6.1f}%  {frame}")
        print("-- inclusive")
        for frame, n in inclusive[thread].most_common(top):
            print(f"{100 * n / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
