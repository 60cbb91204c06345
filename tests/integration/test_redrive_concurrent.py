"""Two dead-letter redrives of one lane at the same moment (two API requests, a notebook and
the dashboard) republish each letter once between them."""

from __future__ import annotations

import asyncio

import pytest

from labkit import names
from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def work_queue_size(lab, lane) -> int:
    if lane == "streams":
        return await lab.redis.xlen(names.STREAM)
    counts = await lab.backend(lane).queue().getJobCounts("wait", "prioritized", "delayed")
    return sum(counts.values())


@pytest.mark.parametrize("lane", [pytest.param("bullmq", marks=pytest.mark.bullmq),
                                  pytest.param("streams", marks=pytest.mark.streams)])
async def test_two_redrives_at_once_republish_each_letter_once(lab, lane):
    workload = Workload(seed=41, rooms_per_hotel=100)
    bookings = workload.bookings(5)
    await lab.stock(workload.rooms, [lane])
    backend = lab.backend(lane)
    await lab.faults.set(["payment.fail_rate=1"])
    await lab.publish(bookings, [lane])
    await asyncio.wait_for(backend.run_worker(concurrency=5, burst=True), timeout=90)
    assert len(await backend.dlq_list()) == 5
    await lab.faults.clear()
    before = await work_queue_size(lab, lane)

    moved = await asyncio.gather(backend.dlq_redrive(), backend.dlq_redrive())

    assert sorted(moved) == [0, 5]
    assert await work_queue_size(lab, lane) == before + 5
    assert (await lab.metrics.snapshot([lane]))[lane].counters["redriven"] == 5
    await asyncio.wait_for(backend.run_worker(concurrency=5, burst=True), timeout=90)
    states = await lab.status.many(lane, [b.bookingId for b in bookings])
    assert set(states.values()) == {State.COMPLETED}
