"""Shared fixtures: the test brokers `make test` starts, and a clean lab per test.

Tests never use a learner's lab: `make test` brings up its own Redis and Kafka on the test
ports below with LABKIT_HOME=.lab-test. On a laptop without them, broker tests skip; in CI
(CI=true) they fail loudly instead. Only tests marked `kafka` (the Kafka lane's params among
them) need Kafka, so `pytest -m "not kafka"` runs with Redis alone.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from labkit.settings import LANES

TEST_ENV = {
    "LABKIT_REDIS_URL": "redis://127.0.0.1:6391/0",
    "LABKIT_KAFKA_BOOTSTRAP": "127.0.0.1:9192",
    "LABKIT_HOME": str(Path(__file__).resolve().parents[1] / ".lab-test"),
}
for _key, _value in TEST_ENV.items():
    os.environ.setdefault(_key, _value)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{service} is not running on {host}:{port}; `make test` starts it (labkit infra up)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=[pytest.param(lane, marks=getattr(pytest.mark, lane)) for lane in LANES])
def lane(request) -> str:
    """Each lane in turn, carrying its marker: `-m "bullmq and not kafka"` picks one lane."""
    return request.param


@pytest.fixture(scope="session")
def settings():
    from labkit.settings import Settings

    return Settings.from_env().with_(time_scale=0.01, backoff_base_s=0.3, stale_after_s=2.0)


@pytest.fixture(autouse=True)
def _brokers_for_markers(request, settings):
    if request.node.get_closest_marker("redis"):
        require("Redis", *settings.redis_host_port)
    if request.node.get_closest_marker("kafka"):
        require("Kafka", *settings.kafka_host_port)


@pytest.fixture
async def lab(settings, request):
    """A Lab on the test brokers, its Redis db emptied first (the test server is ours)."""
    from labkit.faults import FaultStore
    from labkit.lab import Lab

    require("Redis", *settings.redis_host_port)
    if request.node.get_closest_marker("kafka"):
        await asyncio.to_thread(_skip_kafka_leftovers, settings)
    async with Lab(settings) as lab:
        await lab.redis.flushdb()
        yield lab
        await FaultStore(lab.redis).clear()  # a fault left set would reach the next suite


def _skip_kafka_leftovers(settings) -> None:
    """Commit the lab's groups to the end of their topics: records an earlier test left
    behind must not be replayed against the Redis state this test starts without."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from labkit import names
    from labkit.backends.kafka import DLQ_REDRIVE_GROUP, WORK_TOPICS
    from labkit.kafka_admin import ensure_topics

    ensure_topics(settings)
    for group, topics in ((names.GROUP, WORK_TOPICS), (DLQ_REDRIVE_GROUP, (names.TOPIC_DLQ,))):
        consumer = KafkaConsumer(**settings.kafka_config(group_id=group, enable_auto_commit=False))
        try:
            parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
            ends = consumer.end_offsets(parts)
            consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
        finally:
            consumer.close(autocommit=False)
