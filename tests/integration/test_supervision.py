"""Supervised workers: they ride out a Redis outage, a worker killed from outside the pool is
started again, and `labkit stats` counts the restart. Uses this suite's own Redis (it is
stopped and started here), never a learner's."""

from __future__ import annotations

import json
import os
import signal
import sys

import anyio
import pytest

from labkit.infra import brokers
from labkit.status import State
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

OUTAGE_S = 10
MAX_LOG_LINES = 20_000  # two workers' logs through the outage: a warning a second, not a busy loop


async def eventually(check, *, timeout_s: float = 60.0) -> None:
    with anyio.fail_after(timeout_s):
        while not await check():
            await anyio.sleep(0.2)


async def test_workers_ride_out_a_redis_outage_and_finish_every_booking(lab, settings, lane):
    """Every lane's workers keep Redis state (status, effects; BullMQ and Streams their queue)."""
    workload = Workload(seed=11)
    before, after = workload.bookings(20), workload.bookings(20, start=20)
    await lab.stock({hotel: 1000 for hotel in workload.rooms}, [lane])
    async with lab.workers([lane], count=2, concurrency=4) as pools:
        pool = pools[lane]
        await lab.publish(before, [lane])
        await anyio.to_thread.run_sync(lambda: brokers.down(settings, services=["redis"]))
        await anyio.sleep(OUTAGE_S)
        await anyio.to_thread.run_sync(lambda: brokers.up(settings, services=["redis"]))
        await lab.redis.connection_pool.disconnect()  # its sockets died with the old server
        await lab.publish(after, [lane])
        states = await lab.wait_for([b.bookingId for b in before + after], [lane], timeout_s=120)
        assert pool.size == 2  # every worker is alive, or was started again
        logs = pool.logs(200)
        log_lines = len(pool.logs(10**6).splitlines())
    assert set(states[lane].values()) == {State.COMPLETED}
    # logged as an outage (the worker's reconnect loop, or a retried step), never a busy loop
    assert any(said in logs for said in ("lost its broker", "retrying", "runs again")), logs[-2000:]
    assert log_lines < MAX_LOG_LINES, log_lines  # the Kafka worker once wrote 115,000 in 10 s


async def test_a_worker_killed_from_outside_is_restarted_and_counted(lab, settings):
    async with lab.workers(["streams"], count=1) as pools:
        pool = pools["streams"]
        [victim] = pool.pids
        os.kill(victim, signal.SIGKILL)  # not through the pool: a crash as far as it knows

        async def replaced() -> bool:
            return pool.size == 1 and victim not in pool.pids

        async def counted() -> bool:
            return (await lab.worker_restarts(["streams"]))["streams"] == 1

        await eventually(replaced)
        await eventually(counted)
        assert pool.restarts == 1
        assert pool.exit_codes()[victim] == -signal.SIGKILL
    stats = await anyio.run_process(
        [sys.executable, "-m", "labkit", "stats", "--backend", "streams", "--json"],
        env={**os.environ, **settings.env()},
    )
    assert json.loads(stats.stdout)["streams"]["restarts"] == 1
