"""lab.workers: real worker processes, driven from async code without blocking the event loop,
and a pool that refuses to start processes once its block has ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import psutil
import pytest

from labkit.workers import PoolClosed

pytestmark = pytest.mark.redis


async def eventually(check, *, timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while not check():
            await anyio.sleep(0.1)


async def test_a_pool_whose_block_ended_starts_nothing(lab):
    async with lab.workers(["streams"], count=1) as pools:
        pool = pools["streams"]
        assert pool.size == 1
    assert pool.size == 0
    with pytest.raises(PoolClosed, match="closed"):
        pool.scale(2)  # what a slider bound to this pool would do
    with pytest.raises(PoolClosed):
        await pool.start_async(1)
    assert pool.size == 0


async def test_scale_reaches_the_count_in_both_directions(lab):
    async with lab.workers(["streams"], count=1) as pools:
        pool = pools["streams"]
        first = pool.pids
        assert len(await pool.scale_async(3)) == 3
        kept = await pool.scale_async(1)
        assert kept == first  # the newest go first
        stopped = {pid: code for pid, code in pool.exit_codes().items() if pid not in kept}
        assert len(stopped) == 2 and None not in stopped.values()
        assert pool.restarts == 0  # stopped on purpose: not restarted


async def test_the_event_loop_runs_while_workers_stop(lab):
    ticks_while_stopping = 0
    stopping = False

    async def another_lane():  # e.g. a live board: it must keep running meanwhile
        nonlocal ticks_while_stopping
        while True:
            ticks_while_stopping += stopping
            await anyio.sleep(0.01)

    async with lab.workers(["streams", "bullmq"], count=1) as pools, anyio.create_task_group() as tg:
        tg.start_soon(another_lane)
        stopping = True
        await pools.stop()
        stopping = False
        tg.cancel_scope.cancel()
    assert ticks_while_stopping > 0
    assert pools["streams"].size == pools["bullmq"].size == 0


async def test_a_deliberate_kill_stays_dead_unless_restart_is_asked(lab):
    async with lab.workers(["streams"], count=2) as pools:
        pool = pools["streams"]
        stays_dead, comes_back = pool.pids
        assert await pool.kill_async(stays_dead) == stays_dead
        await pool.kill_async(comes_back, restart=True)
        await eventually(lambda: pool.restarts == 1 and pool.size == 1)
        assert stays_dead not in pool.pids and comes_back not in pool.pids
        assert pool.exit_codes()[stays_dead] == pool.exit_codes()[comes_back] == -9


ORPHANING_PARENT = """
import sys, time
from labkit.settings import Settings
from labkit.workers import WorkerPool
pool = WorkerPool("streams", settings=Settings.from_env())
print(pool.start(1)[0], flush=True)
time.sleep(600)  # killed with SIGKILL by the test: no cleanup runs
"""


async def test_a_pool_worker_stops_when_its_parent_is_killed_outright(lab):
    """A notebook kernel killed with SIGKILL runs no cleanup: its workers must not live on."""
    parent = await anyio.to_thread.run_sync(lambda: subprocess.Popen(
        [sys.executable, "-c", ORPHANING_PARENT], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **lab.settings.env()}))
    try:
        worker_pid = int(await anyio.to_thread.run_sync(parent.stdout.readline))
        assert psutil.pid_exists(worker_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    worker = psutil.Process(worker_pid)
    await anyio.to_thread.run_sync(lambda: worker.wait(timeout=30))  # raises if it lives on
    assert not worker.is_running()
