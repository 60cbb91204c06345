"""Two dead-letter redrives of one lane at the same moment (two API requests, a notebook and
the dashboard) republish each letter once between them."""

from __future__ import annotations

import asyncio

import pytest
from kafka import TopicPartition

from labkit import kafka_admin, names
from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


def _kafka_records(settings) -> int:
    with kafka_admin.offsets_reader(settings) as reader:
        parts = [TopicPartition(names.TOPIC, p) for p in reader.partitions_for_topic(names.TOPIC)]
        return sum(reader.end_offsets(parts).values())


async def work_queue_size(lab, lane) -> int:
    """Messages ever put on the lane's work queue (Kafka's log keeps them all)."""
    if lane == "streams":
        return await lab.redis.xlen(names.STREAM)
    if lane == "kafka":
        return await asyncio.to_thread(_kafka_records, lab.settings)
    counts = await lab.backend(lane).queue().getJobCounts("wait", "prioritized", "delayed")
    return sum(counts.values())


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
