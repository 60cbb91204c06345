"""BullMQ's own sets stay bounded and the sweeper survives what it reads: the failed set keeps
the newest FAILED_KEEP jobs, a swept job's marker expires, and a job removed while the
sweeper reads the failed set (getFailed gives None for it) does not stop the sweep."""

from __future__ import annotations

import asyncio

import pytest
from bullmq import UnrecoverableError, Worker

from labkit import keys, names
from labkit.backends import bullmq
from labkit.status import State
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.bullmq]


async def test_the_failed_set_keeps_only_the_newest_jobs(lab, monkeypatch):
    monkeypatch.setattr(bullmq, "FAILED_KEEP", 3)
    backend = lab.backend("bullmq")
    for n in range(6):
        await backend.publish_raw(f"not JSON {n}")
    await asyncio.wait_for(backend.run_worker(concurrency=2, burst=True), timeout=60)
    assert len(await backend.dlq_list()) == 6  # every letter kept
    assert (await backend.queue().getJobCounts("failed"))["failed"] == 3


async def fail(job, token):
    raise UnrecoverableError("lost its lock")


async def test_a_vanished_failed_job_does_not_stop_the_sweep_and_marks_expire(lab, settings):
    booking = Workload(seed=9).bookings(1)[0]
    await lab.publish([booking], ["bullmq"])
    backend = lab.backend("bullmq")
    # BullMQ fails it by itself; a second id in the set has no job any more (removed mid-read)
    worker = Worker(names.QUEUE, fail, {"connection": settings.redis_url})
    try:
        async with asyncio.timeout(30):
            while not await backend.queue().getJobCountByTypes("failed"):
                await asyncio.sleep(0.1)
    finally:
        await worker.close()
    await lab.redis.zadd(f"bull:{names.QUEUE}:failed", {"removed-meanwhile": 1})

    await backend._sweep_failed()

    status = await backend.status.get("bullmq", booking.bookingId)
    assert status.state is State.DEAD_LETTERED
    [job_id] = (await lab.status.job_ids("bullmq", [booking.bookingId])).values()
    assert 0 < await lab.redis.ttl(keys.bullmq_swept(job_id)) <= settings.retention_s
