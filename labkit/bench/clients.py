"""The raw-client layers: each technology's Python client moving bare messages, with the
same batching as the lab (a publish batch per call, `concurrency` messages per read or in
flight) and a consumer that does nothing but acknowledge."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from bullmq import Queue, Worker
from kafka import KafkaConsumer, KafkaProducer

from labkit import kafka_admin
from labkit.bench.layers import RAW, Layer
from labkit.connections import redis_bytes_client

KAFKA_PARTITIONS = 6
GROUP = "bench"


class StreamsRaw(Layer):
    layer, client = RAW, "redis-py + hiredis"

    async def start(self) -> None:
        self.redis = redis_bytes_client(self.settings)
        self.stream = f"bench:{uuid.uuid4().hex[:8]}"
        await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        self._done = 0
        self._stop = asyncio.Event()
        self._consumer = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        self._stop.set()
        await self._consumer
        await self.redis.delete(self.stream)
        await self.redis.aclose()

    async def publish(self, ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for message_id in ids:
            pipe.xadd(self.stream, {"id": message_id})
        await pipe.execute()

    async def completed(self) -> int:
        return self._done

    async def _consume(self) -> None:
        while not self._stop.is_set():
            reply = await self.redis.xreadgroup(
                GROUP, "c", {self.stream: ">"}, count=self.concurrency, block=100)
            entries = [e for _stream, batch in reply or [] for e in batch]
            if entries:
                await self.redis.xack(self.stream, GROUP, *(entry_id for entry_id, _f in entries))
                now = time.time()
                for _entry_id, fields in entries:
                    self.finished(fields[b"id"].decode(), now)
                self._done += len(entries)


class BullMQRaw(Layer):
    layer, client = RAW, "bullmq (Python)"

    async def start(self) -> None:
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        options = {"connection": self.settings.redis_url}
        self.queue = Queue(self.name, options)
        self._done = 0
        self.worker = Worker(self.name, self._process, options | {"concurrency": self.concurrency})

    async def stop(self) -> None:
        # Forced: every measured message has finished by now, and a graceful close cancelled
        # midway (a run that timed out) spins inside bullmq instead of ending.
        await self.worker.close(force=True)
        await self.queue.obliterate(force=True)
        await self.queue.close()

    async def publish(self, ids: list[str]) -> None:
        await self.queue.addBulk([{"name": "m", "data": {"id": i}} for i in ids])

    async def completed(self) -> int:
        return self._done

    async def _process(self, job, _token) -> None:
        self.finished(job.data["id"], time.time())
        self._done += 1


class KafkaRaw(Layer):
    """kafka-python: a producer with acks=all, and a group consumer polling in a thread
    (the client is synchronous), committing after each poll."""

    layer, client = RAW, "kafka-python"

    async def start(self) -> None:
        self.topic = f"bench-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(kafka_admin.create_topic, self.settings, self.topic, partitions=KAFKA_PARTITIONS)
        self.producer = KafkaProducer(**self.settings.kafka_config(acks="all", linger_ms=5))
        self._done = 0
        self._stop = threading.Event()
        assigned = threading.Event()
        self._thread = threading.Thread(target=self._consume, args=(assigned,), daemon=True)
        self._thread.start()
        if not await asyncio.to_thread(assigned.wait, 60):
            raise TimeoutError(f"the bench consumer got no partition of {self.topic} in 60 s")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
        self.producer.close()
        await asyncio.to_thread(kafka_admin.delete_topics, self.settings, [self.topic])

    async def publish(self, ids: list[str]) -> None:
        await asyncio.to_thread(self._send, ids)

    def _send(self, ids: list[str]) -> None:
        for message_id in ids:
            self.producer.send(self.topic, key=message_id.encode(), value=message_id.encode())
        self.producer.flush()

    async def completed(self) -> int:
        return self._done

    def _consume(self, assigned: threading.Event) -> None:
        consumer = KafkaConsumer(self.topic, **self.settings.kafka_config(
            group_id=f"{GROUP}-{self.topic}", auto_offset_reset="earliest", enable_auto_commit=False,
            max_poll_records=self.concurrency, fetch_max_wait_ms=20))
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=100)
                if consumer.assignment():
                    assigned.set()
                records = [r for batch in batches.values() for r in batch]
                if records:
                    consumer.commit()
                    now = time.time()
                    for record in records:
                        self.finished(record.value.decode(), now)
                    self._done += len(records)
        finally:
            consumer.close()


RAW_LAYERS: dict[str, type[Layer]] = {"bullmq": BullMQRaw, "streams": StreamsRaw, "kafka": KafkaRaw}
