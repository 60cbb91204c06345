"""`labkit bench`: jobs/s per lane with one worker process, beside each raw client's rate.

The lab's figure includes everything a booking does at time_scale 0 (status transitions,
ledger, a real PDF, an .eml, inventory); the raw figure is the bare client moving bare
messages. The gap is the lab's own cost, not the broker's. Numbers, not assertions: this
is a command, never a timed test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from bullmq import Queue, Worker
from kafka import KafkaConsumer, KafkaProducer

from labkit import kafka_admin
from labkit.lab import Lab
from labkit.settings import Settings
from labkit.workload import Workload


@dataclass
class BenchResult:
    lane: str
    lab_jobs_per_s: float
    raw_per_s: float
    raw_what: str


async def lab_rate(lab: Lab, lane: str, count: int, concurrency: int) -> float:
    """Time publish → every booking terminal, with one warmed-up worker process."""
    workload = Workload(seed=1, rooms_per_hotel=count * 2)
    await lab.stock(workload.rooms, [lane])
    bookings = workload.bookings(count)
    backend = lab.backend(lane)
    with lab.pool(lane, concurrency=concurrency) as pool:
        pool.start(1)
        while not await backend.live_workers():  # process start-up is not throughput
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let a Kafka consumer finish joining its group
        started = time.perf_counter()
        await lab.publish(bookings, [lane])
        await lab.wait_for([b.bookingId for b in bookings], [lane], timeout_s=600, poll_s=0.05)
        return count / (time.perf_counter() - started)


async def raw_streams(lab: Lab, count: int) -> float:
    """Pipelined XADD, then XREADGROUP count=100 + XACK: redis-py with hiredis."""
    stream = f"bench:{uuid.uuid4().hex[:6]}"
    redis = lab.redis
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    started = time.perf_counter()
    pipe = redis.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"job": f"{i}"})
    await pipe.execute()
    done = 0
    while done < count:
        reply = await redis.xreadgroup("g", "c", {stream: ">"}, count=100)
        ids = [i for _s, entries in reply for i, _f in entries]
        await redis.xack(stream, "g", *ids)
        done += len(ids)
    rate = count / (time.perf_counter() - started)
    await redis.delete(stream)
    return rate


async def raw_bullmq(settings: Settings, count: int) -> float:
    """addBulk, then an in-process Worker whose processor does nothing."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    queue = Queue(name, {"connection": settings.redis_url})
    done = asyncio.Event()
    processed = 0

    async def process(job, token):
        nonlocal processed
        processed += 1
        if processed == count:
            done.set()

    started = time.perf_counter()
    for i in range(0, count, 1000):
        await queue.addBulk([{"name": "n", "data": {"i": j}} for j in range(i, min(count, i + 1000))])
    worker = Worker(name, process, {"connection": settings.redis_url, "concurrency": 50})
    await done.wait()
    rate = count / (time.perf_counter() - started)
    await worker.close()
    await queue.obliterate(force=True)
    await queue.close()
    return rate


def raw_kafka(settings: Settings, count: int) -> float:
    """Produce with acks=all, then consume the same records through a fresh group."""
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    kafka_admin.create_topic(settings, topic, partitions=6)
    producer = KafkaProducer(**settings.kafka_config(acks="all", linger_ms=5))
    consumer = KafkaConsumer(topic, **settings.kafka_config(
        group_id=topic, auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_wait_ms=100))
    started = time.perf_counter()
    for i in range(count):
        producer.send(topic, key=str(i % 20).encode(), value=b"x" * 200)
    producer.flush()
    seen = 0
    while seen < count:
        seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
        consumer.commit()
    rate = count / (time.perf_counter() - started)
    consumer.close()
    producer.close()
    kafka_admin.delete_topics(settings, [topic])
    return rate


async def run(settings: Settings, *, count: int, raw_count: int, concurrency: int) -> list[BenchResult]:
    settings = settings.with_(time_scale=0.0)
    results = []
    async with Lab(settings) as lab:
        raws = {
            "bullmq": (await raw_bullmq(settings, raw_count), "addBulk + no-op Worker"),
            "streams": (await raw_streams(lab, raw_count), "pipelined XADD + XREADGROUP/XACK"),
            "kafka": (await asyncio.to_thread(raw_kafka, settings, raw_count), "produce acks=all + group consume"),
        }
        for lane, (raw, what) in raws.items():
            results.append(BenchResult(lane, await lab_rate(lab, lane, count, concurrency), raw, what))
    return results
