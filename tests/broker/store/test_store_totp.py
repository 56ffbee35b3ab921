"""TOTP replay guard: monotonic, atomic across tasks, connections and processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ac7_broker
from ac7_broker.store import Store

pytestmark = pytest.mark.asyncio


async def test_accepts_only_increasing_steps(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:
        assert await s.totp.last_step("alice") is None
        assert await s.totp.accept_step("alice", 100) is True
        assert await s.totp.accept_step("alice", 100) is False  # replay
        assert await s.totp.accept_step("alice", 99) is False  # older code still in the window
        assert await s.totp.last_step("alice") == 100
        assert await s.totp.accept_step("alice", 101) is True
        assert await s.totp.last_step("alice") == 101
        # Per slot.
        assert await s.totp.accept_step("bob", 100) is True
        await s.totp.reset("alice")
        assert await s.totp.last_step("alice") is None
        assert await s.totp.accept_step("alice", 50) is True
        with pytest.raises(ValueError):
            await s.totp.accept_step("alice", -1)


async def test_concurrent_tasks_accept_a_step_once(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as s:
        for step in range(1, 51):
            results = await asyncio.gather(*(s.totp.accept_step("alice", step) for _ in range(8)))
            assert results.count(True) == 1, step


async def test_two_connections_accept_a_step_once(tmp_path: Path) -> None:
    a = await Store.open(tmp_path)
    b = await Store.open(tmp_path)
    try:
        for step in range(1, 301):
            results = await asyncio.gather(
                a.totp.accept_step("alice", step),
                b.totp.accept_step("alice", step),
                a.totp.accept_step("alice", step),
                b.totp.accept_step("alice", step),
            )
            assert results.count(True) == 1, (step, results)
        assert await a.totp.last_step("alice") == 300
    finally:
        await a.close()
        await b.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from ac7_broker.store import Store

    async def main(directory, go, steps):
        store = await Store.open(directory)
        open(os.path.join(directory, "ready-%d" % os.getpid()), "w").close()
        while not os.path.exists(go):
            time.sleep(0.001)
        accepted = [step for step in range(1, steps + 1) if await store.totp.accept_step("alice", step)]
        await store.close()
        print(json.dumps(accepted))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.slow
async def test_processes_racing_through_the_same_steps_accept_each_once(tmp_path: Path) -> None:
    steps, workers = 1000, 3
    package_root = str(Path(ac7_broker.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(go), str(steps)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("ready-*"))) < workers:
            assert time.monotonic() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            await asyncio.sleep(0.01)
        go.touch()
        accepted: list[int] = []
        for p in procs:
            out, err = await asyncio.to_thread(p.communicate, timeout=60)
            assert p.returncode == 0, err
            accepted.extend(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # Every step is first tried while the stored step is below it, so each is accepted exactly once overall.
    assert sorted(accepted) == list(range(1, steps + 1))
