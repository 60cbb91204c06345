"""The Kafka lane's parallel consumer on the real broker: hotels of one partition overlap,
each hotel keeps its order, a partition commits only its contiguous finished prefix, and a
rebalance mid-batch commits nothing unfinished."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest
from kafka import KafkaConsumer, TopicPartition

from labkit import kafka_admin, names
from labkit.status import State
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


def hotels_on_one_partition(count: int) -> tuple[int, list[str]]:
    """`count` hotel ids that Kafka's partitioner puts on one partition."""
    partition = kafka_admin.partition_for("hotel-0")
    hotels = [h for h in (f"hotel-{n}" for n in range(500)) if kafka_admin.partition_for(h) == partition]
    return partition, hotels[:count]


def bookings_for(hotels: list[str], count: int, seed: int = 21):
    return [b.model_copy(update={"hotelId": hotels[n % len(hotels)]})
            for n, b in enumerate(Workload(seed=seed, rooms_per_hotel=1000).bookings(count))]


def committed(settings, partition: int) -> int:
    consumer = KafkaConsumer(**settings.kafka_config(group_id=names.GROUP, enable_auto_commit=False))
    try:
        return consumer.committed(TopicPartition(names.TOPIC, partition)) or 0
    finally:
        consumer.close(autocommit=False)


async def until(check, *, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def worker(backend, concurrency: int):
    stop = asyncio.Event()
    task = asyncio.create_task(backend.run_worker(concurrency=concurrency, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def test_hotels_of_one_partition_keep_their_own_order(lab):
    _partition, hotels = hotels_on_one_partition(3)
    bookings = bookings_for(hotels, 30)
    await lab.stock({h: 1000 for h in hotels}, ["kafka"])
    await lab.publish(bookings, ["kafka"])

    await asyncio.wait_for(lab.backend("kafka").run_worker(concurrency=8, burst=True), timeout=120)

    by_hotel: dict[str, list[tuple[int, float]]] = {}
    for b in bookings:
        status = await lab.status.get("kafka", b.bookingId)
        assert status.state is State.COMPLETED
        offset = int(status.job_id.split(":")[2])
        started = min(float(h["at"]) for h in status.history if h["detail"] == "started")
        by_hotel.setdefault(b.hotelId, []).append((offset, started))
    assert len(by_hotel) == 3
    for hotel, runs in by_hotel.items():
        in_offset_order = [t for _offset, t in sorted(runs)]
        assert in_offset_order == sorted(in_offset_order), f"{hotel} started out of offset order"


async def test_a_slow_record_holds_the_commit_while_later_ones_finish(lab, settings):
    partition, hotels = hotels_on_one_partition(6)
    slow, *rest = bookings_for(hotels, 6)  # one hotel each: none waits behind the slow one's key
    await lab.stock({h: 1000 for h in hotels}, ["kafka"])
    backend = lab.backend("kafka")
    release = asyncio.Event()
    process = backend.process

    async def held_back(payload, **kwargs):
        if slow.bookingId.encode() in payload:
            await release.wait()
        return await process(payload, **kwargs)

    backend.process = held_back
    [first_id] = (await lab.publish([slow], ["kafka"]))["kafka"]
    await lab.publish(rest, ["kafka"])
    slow_offset = int(first_id.split(":")[2])

    async def rest_done() -> bool:
        states = [(await lab.status.get("kafka", b.bookingId)).state for b in rest]
        return states.count(State.COMPLETED) == len(rest)

    async with worker(backend, concurrency=4):
        try:
            await until(rest_done, what="the later records completed")
            await asyncio.sleep(1.0)  # several poll/commit rounds: the commit must still wait
            assert await asyncio.to_thread(committed, settings, partition) == slow_offset
        finally:
            release.set()  # also on failure: the worker can then stop

        async def moved_past_all() -> bool:
            return await asyncio.to_thread(committed, settings, partition) == slow_offset + 1 + len(rest)

        await until(moved_past_all, what="the commit past every record")


async def test_a_member_joining_mid_batch_commits_nothing_unfinished(lab):
    bookings = Workload(seed=23, rooms_per_hotel=1000).bookings(60)
    await lab.stock(Workload(seed=23, rooms_per_hotel=1000).rooms, ["kafka"])
    await lab.faults.set({"pdf.latency_s": 0.3})  # records stay in flight while the group changes
    await lab.publish(bookings, ["kafka"])
    ids = [b.bookingId for b in bookings]

    with lab.pool("kafka", concurrency=4) as pool:
        pool.start(1)

        async def some_completed() -> bool:
            states = (await lab.states(ids, ["kafka"]))["kafka"]
            return list(states.values()).count(State.COMPLETED) >= 5

        await until(some_completed, what="the first completions")
        pool.start(1)  # a second member: partitions in flight are revoked from the first
        states = (await lab.wait_for(ids, ["kafka"], timeout_s=120))["kafka"]

    assert set(states.values()) == {State.COMPLETED}
    effects = lab.effects["kafka"]
    assert [await effects.charges_made(i) for i in ids] == [1] * len(ids)
