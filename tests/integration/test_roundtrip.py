"""One raw round trip per technology with the plain clients, no labkit in the loop:
proof that the brokers `labkit infra up` started really work for each technology."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from bullmq import Queue, Worker
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from redis.asyncio import Redis


@pytest.mark.redis
async def test_bullmq_job_is_processed_by_a_worker(settings):
    name = f"roundtrip-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, {"connection": settings.redis_url})
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def process(job, token):
        seen.set_result(job.data)
        return "ok"

    worker = Worker(name, process, {"connection": settings.redis_url})
    try:
        job = await queue.add("ping", {"hello": "bullmq"})
        assert await asyncio.wait_for(seen, 15) == {"hello": "bullmq"}
        for _ in range(50):
            if await queue.getJobState(job.id) == "completed":
                break
            await asyncio.sleep(0.1)
        assert await queue.getJobState(job.id) == "completed"
    finally:
        await worker.close()
        await queue.obliterate(force=True)
        await queue.close()


@pytest.mark.redis
async def test_stream_entry_is_read_and_acknowledged_through_a_group(settings):
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    stream = f"roundtrip:{uuid.uuid4().hex[:8]}"
    try:
        await redis.xgroup_create(stream, "g", id="0", mkstream=True)
        entry_id = await redis.xadd(stream, {"hello": "streams"})
        reply = await redis.xreadgroup("g", "c1", {stream: ">"}, count=1, block=2000)
        [(_, [(got_id, fields)])] = reply
        assert (got_id, fields) == (entry_id, {"hello": "streams"})
        assert (await redis.xpending(stream, "g"))["pending"] == 1
        assert await redis.xack(stream, "g", got_id) == 1
        assert (await redis.xpending(stream, "g"))["pending"] == 0
    finally:
        await redis.delete(stream)
        await redis.aclose()


@pytest.mark.kafka
def test_kafka_record_is_consumed_and_committed_through_a_group(settings):
    topic, group = f"roundtrip-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**settings.kafka_config())
    admin.create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(**settings.kafka_config(acks="all"))
    consumer = KafkaConsumer(topic, **settings.kafka_config(
        group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        consumer_timeout_ms=15000))
    try:
        metadata = producer.send(topic, key=b"hotel-1", value=b"hello kafka").get(timeout=15)
        record = next(iter(consumer))
        assert (record.key, record.value, record.offset) == (b"hotel-1", b"hello kafka", metadata.offset)
        consumer.commit()
        assert consumer.committed(TopicPartition(topic, 0)) == metadata.offset + 1
    finally:
        consumer.close()
        producer.close()
        admin.delete_topics([topic])
        admin.close()
