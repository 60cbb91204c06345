"""Poison-proof consumption (issue 9): whatever bytes arrive, the worker survives, the message
is dead-lettered once with a reason naming what was wrong (its raw bytes kept, base64 when
not UTF-8), and the next good booking on the same stream or partition completes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

from labkit import kafka_admin, keys, names
from labkit.booking import make_booking
from labkit.connections import redis_bytes_client
from labkit.status import State

pytestmark = pytest.mark.redis
FIVE_MB = 5 * 1024 * 1024
NOT_UTF8 = b"\xff\xfe not utf-8 \xc3\x28"


def good_booking(n: int = 0):
    check_in = datetime.now(UTC).date() + timedelta(days=12)
    return make_booking({"userId": f"user-{n}", "hotelId": "hotel-poison", "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=1)})


def envelope_without_data() -> bytes:
    return json.dumps({"jobId": "job-no-data", "type": "booking",
                       "timestamp": "2026-01-01T00:00:00Z"}).encode()


def five_mb_envelope() -> bytes:
    booking = json.loads(good_booking(99).model_dump_json())
    return json.dumps({"jobId": "job-huge", "type": "booking", "data": booking,
                       "timestamp": "2026-01-01T00:00:00Z", "note": "x" * FIVE_MB}).encode()


@asynccontextmanager
async def worker(backend):
    """A worker in this process; leaving the block asserts it never died."""
    stop = asyncio.Event()
    task = asyncio.create_task(backend.run_worker(concurrency=2, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)  # re-raises whatever killed it


async def first_letters(backend, timeout_s: float = 30.0) -> list:
    """The DLQ once it holds a letter (or, after `timeout_s`, as it is)."""
    deadline = time.monotonic() + timeout_s
    while not (letters := await backend.dlq_list()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return letters


async def assert_survives(lab, lane: str, send: Callable[[], Awaitable[None]], reason_says: str,
                          payload_says: str = "") -> None:
    await send()
    good = good_booking()
    await lab.publish([good], [lane])  # behind the poison on the same stream or partition
    backend = lab.backend(lane)
    async with worker(backend) as task:
        states = await lab.wait_for([good.bookingId], [lane], timeout_s=90)
        assert not task.done(), "the worker died"
        letters = await first_letters(backend)  # Kafka runs another key's record beside the poison
    assert states[lane][good.bookingId] is State.COMPLETED
    assert len(letters) == 1, letters
    assert reason_says in letters[0].reason, letters[0].reason
    assert payload_says in letters[0].payload[:200]


# -- BullMQ: data added the way the Node client or bull-board would ---------------------------
BULLMQ_POISON = {
    "json-scalar-42": (42, "valid dictionary"),
    "json-null": (None, "valid dictionary"),
    "envelope-without-data": (json.loads(envelope_without_data()), "data: Field required"),
    "five-mb-value": (json.loads(five_mb_envelope()), "note: Extra inputs are not permitted"),
}


@pytest.mark.bullmq
@pytest.mark.parametrize("case", BULLMQ_POISON)
async def test_bullmq_survives_poison(lab, case):
    data, reason = BULLMQ_POISON[case]

    async def send() -> None:
        await lab.backend("bullmq").queue().add(names.BULLMQ_JOB_NAME, data, {"jobId": f"poison-{case}"})

    await assert_survives(lab, "bullmq", send, reason)


# -- BullMQ: a job hash edited by redis-cli or bull-board after it was added -----------------
BULLMQ_UNPARSABLE = {
    "non-json-data": (b"not json {", "job is not JSON"),
    "non-utf8-data": (NOT_UTF8, "job is not JSON"),
}


@pytest.mark.bullmq
@pytest.mark.parametrize("case", BULLMQ_UNPARSABLE)
async def test_bullmq_survives_data_bullmq_itself_cannot_parse(lab, settings, case):
    """bullmq parses stored data before the processor runs: such a job once wedged the lane."""
    data, reason = BULLMQ_UNPARSABLE[case]

    async def send() -> None:
        queue = lab.backend("bullmq").queue()
        job = await queue.add(names.BULLMQ_JOB_NAME, {}, {"jobId": f"poison-{case}"})
        raw = redis_bytes_client(settings)
        try:
            await raw.hset(queue.toKey(job.id), "data", data)
        finally:
            await raw.aclose()

    await assert_survives(lab, "bullmq", send, reason)


# -- Redis Streams: entries XADDed with raw bytes ---------------------------------------------
STREAMS_POISON = {
    "non-utf8-job": ({b"job": NOT_UTF8}, "not UTF-8", "base64:"),
    "binary-fields": ({NOT_UTF8: NOT_UTF8, b"jobId": NOT_UTF8}, "the entry has no `job` field", "base64:"),
    "envelope-without-data": ({b"job": envelope_without_data()}, "data: Field required", "{"),
    "five-mb-value": ({b"job": five_mb_envelope()}, "note: Extra inputs are not permitted", "{"),
}


@pytest.mark.streams
@pytest.mark.parametrize("case", STREAMS_POISON)
async def test_streams_survives_poison(lab, settings, case):
    fields, reason, payload = STREAMS_POISON[case]

    async def send() -> None:
        await lab.backend("streams").setup()
        raw = redis_bytes_client(settings)
        try:
            await raw.xadd(names.STREAM, fields)
        finally:
            await raw.aclose()

    await assert_survives(lab, "streams", send, reason, payload)


# -- Kafka: records sent with a raw kafka-python producer ------------------------------------
KAFKA_POISON = {
    "non-utf8-value": (b"hotel-poison", NOT_UTF8, [], "not UTF-8", "base64:"),
    "non-utf8-key": (NOT_UTF8, envelope_without_data(), [], "data: Field required", "{"),
    "non-utf8-header": (b"hotel-poison", envelope_without_data(), [("attempt", NOT_UTF8)],
                        "data: Field required", "{"),
    "null-header": (b"hotel-poison", envelope_without_data(), [("jobId", None), ("attempt", None)],
                    "data: Field required", "{"),
    "envelope-without-data": (b"hotel-poison", envelope_without_data(), [], "data: Field required", "{"),
    "five-mb-value": (b"hotel-poison", five_mb_envelope(), [], "note: Extra inputs are not permitted", "{"),
}


@pytest.mark.kafka
@pytest.mark.parametrize("case", KAFKA_POISON)
async def test_kafka_survives_poison(lab, settings, case):
    key, value, headers, reason, payload = KAFKA_POISON[case]
    partition = kafka_admin.partition_for("hotel-poison")  # where the good booking goes

    def send() -> None:
        if any(v is None for _k, v in headers):
            send_with_null_headers(settings, partition, key, value, headers)
            return
        producer = KafkaProducer(**settings.kafka_config(max_request_size=2 * FIVE_MB))
        try:
            producer.send(names.TOPIC, key=key, value=value, headers=headers, partition=partition)
            producer.flush()
        finally:
            producer.close()

    async with kafka_topic_accepting(settings, len(value)):
        await assert_survives(lab, "kafka", lambda: asyncio.to_thread(send), reason, payload)


def send_with_null_headers(settings, partition: int, key, value, headers) -> None:
    """kafka-python's send() refuses a null header value, which the wire format and other
    clients (Java, librdkafka) allow: build the record batch and send the ProduceRequest
    over an admin client's connection (one broker: it leads every partition)."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=2 * FIVE_MB)
    builder.append(int(time.time() * 1000), key, value, headers)
    builder.close()
    topic = ProduceRequest.TopicProduceData
    request = ProduceRequest(
        acks=-1, timeout_ms=10_000, min_version=3, max_version=9,
        topic_data=[topic(name=names.TOPIC, partition_data=[
            topic.PartitionProduceData(index=partition, records=builder.buffer())])],
    )
    admin = KafkaAdminClient(**settings.kafka_config())
    try:
        async def produce():
            return await admin._manager.send(request)

        response = admin._manager.run(produce)
        assert response.responses[0].partition_responses[0].error_code == 0
    finally:
        admin.close()


@asynccontextmanager
async def kafka_topic_accepting(settings, size: int):
    """Raise the work topic's record size limit for a record bigger than the 1 MB default."""
    if size < 1_000_000:
        yield
        return
    admin = KafkaAdminClient(**settings.kafka_config())

    def limit(configs: dict[str, str]) -> None:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, names.TOPIC, configs=configs)])

    try:
        await asyncio.to_thread(limit, {"max.message.bytes": str(2 * size)})
        yield
    finally:
        await asyncio.to_thread(limit, {})  # back to the broker's default
        admin.close()


@pytest.mark.kafka
async def test_kafka_dead_letters_a_record_that_never_settled_max_attempts_times(lab, settings):
    one = good_booking()
    [source] = (await lab.publish([one], ["kafka"]))["kafka"]
    topic, partition, offset = source.split(":")
    deliveries = keys.kafka_deliveries(topic, int(partition), int(offset))
    # What max_attempts workers killed mid-record leave behind: deliveries never committed.
    await lab.redis.set(deliveries, settings.max_attempts)
    backend = lab.backend("kafka")
    async with worker(backend):
        states = await lab.wait_for([one.bookingId], ["kafka"], timeout_s=90)
        letters = await backend.dlq_list()
    assert states["kafka"][one.bookingId] is State.DEAD_LETTERED
    assert [letter.booking_id for letter in letters] == [one.bookingId]
    assert f"delivered {settings.max_attempts} times and never settled" in letters[0].reason
    assert await backend.effects.charges_made(one.bookingId) == 0  # not run a fifth time
    assert not await lab.redis.exists(deliveries)  # cleared once committed


@pytest.mark.streams
async def test_a_booking_is_dead_lettered_only_once_its_letter_is_written(lab, settings):
    backend = lab.backend("streams")
    await lab.redis.set(names.STREAM_DLQ, "not a stream")  # every DLQ write fails
    missing = {"jobId": "job-bad", "type": "booking", "data": {"bookingId": "bk-no-letter"},
               "timestamp": "2026-01-01T00:00:00Z"}
    await backend.publish_raw(json.dumps(missing))
    good = good_booking()
    await lab.publish([good], ["streams"])
    async with worker(backend):
        await lab.wait_for([good.bookingId], ["streams"], timeout_s=60)
        assert await lab.status.get("streams", "bk-no-letter") is None  # no status without a letter

        await lab.redis.delete(names.STREAM_DLQ)  # the DLQ is writable again
        states = await lab.wait_for(["bk-no-letter"], ["streams"], timeout_s=60)
        letters = await backend.dlq_list()
    assert states["streams"]["bk-no-letter"] is State.DEAD_LETTERED
    assert [letter.booking_id for letter in letters] == ["bk-no-letter"]
