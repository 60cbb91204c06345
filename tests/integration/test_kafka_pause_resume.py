"""A paused retry partition must be fetched again once resumed. kafka-python 3.0.12 can leave
it parked for good (a retry record never delivered, its booking never finished); the
worker resumes through `resume_partition`, which this test holds to it on the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from labkit.backends.kafka import resume_partition

pytestmark = pytest.mark.kafka


def test_a_resumed_partition_delivers_its_records_again(settings):
    held, busy = (f"pause-{name}-{uuid.uuid4().hex[:6]}" for name in ("held", "busy"))
    admin = KafkaAdminClient(**settings.kafka_config())
    producer = KafkaProducer(**settings.kafka_config())
    consumer = KafkaConsumer(**settings.kafka_config(max_poll_records=4, auto_offset_reset="earliest",
                                                     fetch_max_wait_ms=100))
    admin.create_topics([NewTopic(held, 1, 1), NewTopic(busy, 1, 1)])
    try:
        for i in range(4):
            producer.send(held, f"retry-{i}".encode())
        producer.flush()
        tp_held, tp_busy = TopicPartition(held, 0), TopicPartition(busy, 0)
        consumer.assign([tp_held, tp_busy])
        first = poll_until(consumer, tp_held)
        assert [r.offset for r in first] == [0, 1, 2, 3]  # the poll's whole budget: 4 records

        # What the worker does with a retry that is not due yet: rewind, pause...
        consumer.seek(tp_held, 0)
        consumer.pause(tp_held)
        for i in range(3):  # ...while other partitions keep delivering
            producer.send(busy, f"work-{i}".encode())
            producer.flush()
            consumer.poll(timeout_ms=300)

        resume_partition(consumer, tp_held)  # due now
        again = poll_until(consumer, tp_held)
        assert [r.offset for r in again] == [0, 1, 2, 3]
    finally:
        consumer.close()
        producer.close()
        admin.delete_topics([held, busy])
        admin.close()


def poll_until(consumer: KafkaConsumer, tp: TopicPartition, timeout_s: float = 10.0) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=200).get(tp)
        if records:
            return records
    return []
