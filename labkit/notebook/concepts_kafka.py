"""Kafka concepts, each shown on scratch topics and groups of its own (never the lab's
`bookings`), deleted afterwards: acks and the idempotent producer, eager vs cooperative
rebalancing, at-most-once, fan-out to a second group, partition skew from hot keys,
retention, and transactions (exactly-once inside Kafka, not outside it).

kafka-python is blocking: these are plain functions (a lesson may call them directly).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import redis
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaConfigurationError
from kafka.structs import OffsetAndMetadata

from labkit import kafka_admin
from labkit.settings import Settings
from labkit.workload import Workload

ASSIGNORS = {"eager": RangePartitionAssignor, "cooperative": CooperativeStickyAssignor}


def _unique(concept: str) -> str:
    return f"lesson.{concept}.{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def scratch_topic(
    settings: Settings, concept: str, *, partitions: int = 1, configs: dict[str, str] | None = None
) -> Iterator[str]:
    """A new topic (one replica, so acks=all needs only its leader), deleted afterwards."""
    topic = _unique(concept)
    configs = {"min.insync.replicas": "1", **(configs or {})}
    with kafka_admin.admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
        admin.wait_for_topics([topic], timeout_ms=30_000)
    try:
        yield topic
    finally:
        kafka_admin.delete_topics(settings, [topic])


def _producer(settings: Settings, **options: Any) -> KafkaProducer:
    return KafkaProducer(**settings.kafka_config(**options))


def _consumer(settings: Settings, **options: Any) -> KafkaConsumer:
    defaults = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
    return KafkaConsumer(**settings.kafka_config(**{**defaults, **options}))


def _produce(settings: Settings, topic: str, values: list[str], keys: list[str] | None = None) -> None:
    producer = _producer(settings)
    for n, value in enumerate(values):
        producer.send(topic, value.encode(), key=keys[n].encode() if keys else None)
    producer.flush()
    producer.close()


def _drain(consumer: KafkaConsumer, expected: int, timeout_s: float = 15.0) -> list[ConsumerRecord]:
    """Poll until `expected` records came or nothing more arrives before the deadline."""
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            got += batch
    return got


def _read_all(settings: Settings, topic: str, **options: Any) -> list[str]:
    """Every record this reader may see, up to the end offset it is allowed to read to (for
    `read_committed`: the last stable offset)."""
    tp = TopicPartition(topic, 0)
    consumer = _consumer(settings, **options)
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    values: list[str] = []
    deadline = time.monotonic() + 15.0
    while consumer.position(tp) < end and time.monotonic() < deadline:
        values += [r.value.decode() for batch in consumer.poll(timeout_ms=200).values() for r in batch]
    consumer.close()
    return values


# -- acks and idempotence ----------------------------------------------------------------------
def acks_and_idempotence(settings: Settings) -> dict[str, Any]:
    """acks=0: the producer does not wait for the broker (a lost write goes unnoticed). acks=1:
    the leader wrote it. acks=all: every in-sync replica has it. The idempotent producer gets a
    producer id from the broker and numbers its batches, so a resend after a lost ack is
    dropped as a duplicate; it insists on acks=all."""
    offsets: dict[str, int] = {}
    with scratch_topic(settings, "acks") as topic:
        for acks in (0, 1, "all"):
            producer = _producer(settings, acks=acks, enable_idempotence=False)
            offsets[str(acks)] = producer.send(topic, b"hello").get(timeout=10).offset
            producer.close()
        idempotent = _producer(settings, acks="all", enable_idempotence=True)
        idempotent.send(topic, b"numbered").get(timeout=10)
        producer_id = idempotent._transaction_manager.producer_id_and_epoch.producer_id
        idempotent.close()
    try:
        _producer(settings, acks=1, enable_idempotence=True).close()
        refused = ""
    except KafkaConfigurationError as error:
        refused = str(error)
    return {"offset_by_acks": offsets, "producer_id": producer_id, "idempotence_with_acks_1": refused}


# -- rebalancing -------------------------------------------------------------------------------
class _Recorder(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.revoked: list[int] = []

    def on_partitions_revoked(self, revoked) -> None:
        self.revoked += [tp.partition for tp in revoked]

    def on_partitions_assigned(self, assigned) -> None:
        pass


def _polling(consumer: KafkaConsumer, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            consumer.poll(timeout_ms=100)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:.0f}s")
        time.sleep(0.1)


def rebalance_stops(settings: Settings, protocol: str, *, partitions: int = 6, timeout_s: float = 90.0) -> dict[str, Any]:
    """One consumer owns all partitions; a second joins. Eager (range, round-robin, sticky)
    revokes every partition from every member before reassigning: all of them stop.
    Cooperative-sticky revokes only the partitions that move; the others never stop."""
    group = _unique(f"rebalance-{protocol}")
    options = {"group_id": group, "partition_assignment_strategy": (ASSIGNORS[protocol],),
               "session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    with scratch_topic(settings, "rebalance", partitions=partitions) as topic:
        first, second = _consumer(settings, **options), _consumer(settings, **options)
        recorder = _Recorder()
        stop = threading.Event()
        kafka_admin.subscribed(first, [topic], listener=recorder)
        threads = [_polling(first, stop)]
        try:
            _wait(lambda: len(first.assignment()) == partitions, timeout_s, "first consumer never owned all")
            before = sorted(tp.partition for tp in first.assignment())
            kafka_admin.subscribed(second, [topic])
            threads.append(_polling(second, stop))
            _wait(lambda: first.assignment() and second.assignment()
                  and len(first.assignment() | second.assignment()) == partitions
                  and not first.assignment() & second.assignment(), timeout_s, "the group never split")
            kept = sorted(tp.partition for tp in first.assignment())
            stopped = sorted(set(recorder.revoked))  # now: closing revokes everything again
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            first.close()
            second.close()
    return {"protocol": protocol, "before": before, "first_keeps": kept, "stopped": stopped,
            "never_stopped": [p for p in before if p not in stopped]}


# -- at-most-once ------------------------------------------------------------------------------
def at_most_once(settings: Settings, *, records: int = 3) -> dict[str, Any]:
    """Commit the offset first, process after: a crash between the two loses the record — the
    restarted consumer resumes after the commit and never sees it again."""
    group = _unique("at-most-once")
    values = [f"booking-{n}" for n in range(records)]
    with scratch_topic(settings, "at-most-once") as topic:
        _produce(settings, topic, values)
        tp = TopicPartition(topic, 0)
        reader = _consumer(settings, group_id=group, max_poll_records=1)
        reader.assign([tp])
        (taken,) = _drain(reader, 1)
        reader.commit()  # offset taken + 1 is now "done" ...
        reader.close(autocommit=False)  # ... and the process dies before processing `taken`
        restarted = _consumer(settings, group_id=group)
        restarted.assign([tp])
        seen = [r.value.decode() for r in _drain(restarted, records - 1)]
        restarted.close(autocommit=False)
    taken_value = taken.value.decode()
    return {"taken_then_crashed": taken_value, "seen_after_restart": seen,
            "lost": [v for v in values if v not in seen]}


# -- fan-out -----------------------------------------------------------------------------------
def fan_out(settings: Settings, *, groups: tuple[str, ...] = ("billing", "audit"), records: int = 6) -> dict[str, list[str]]:
    """Every consumer group keeps its own offsets: each group receives every record (inside
    one group, the partitions are split between its members instead)."""
    values = [f"booking-{n}" for n in range(records)]
    got: dict[str, list[str]] = {}
    with scratch_topic(settings, "fan-out", partitions=3) as topic:
        _produce(settings, topic, values, keys=values)
        for name in groups:
            consumer = kafka_admin.subscribed(_consumer(settings, group_id=_unique(name)), [topic])
            got[name] = sorted(r.value.decode() for r in _drain(consumer, records))
            consumer.close()
    return got


# -- skew --------------------------------------------------------------------------------------
def partition_skew(settings: Settings, workload: Workload, *, bookings: int = 300, partitions: int = 6) -> dict[str, Any]:
    """Key = hotel: the workload's few hot hotels fill their partitions more than the rest.
    Counts come from the broker (end offsets), beside what murmur2 predicts."""
    hotels = [b.hotelId for b in workload.bookings(bookings, start=50_000)]
    with scratch_topic(settings, "skew", partitions=partitions) as topic:
        _produce(settings, topic, hotels, keys=hotels)
        with kafka_admin.offsets_reader(settings) as reader:
            ends = reader.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    counts = [ends[TopicPartition(topic, p)] for p in range(partitions)]
    predicted = Counter(kafka_admin.partition_for(h, partitions) for h in hotels)
    hot = {workload.hotel_id(i): kafka_admin.partition_for(workload.hotel_id(i), partitions)
           for i in range(workload.hot_hotels)}
    return {"per_partition": counts, "predicted": [predicted[p] for p in range(partitions)],
            "hot_hotel_partition": hot, "busiest": counts.index(max(counts)),
            "max_over_mean": round(max(counts) / (sum(counts) / partitions), 2)}


# -- retention ---------------------------------------------------------------------------------
def retention(settings: Settings, *, retention_ms: int = 1000, timeout_s: float = 20.0) -> dict[str, Any]:
    """A topic that keeps records `retention_ms` and rolls a new segment every 100 ms: once the
    broker's retention check runs (`log.retention.check.interval.ms`), old closed segments are
    deleted and the log start offset moves up — those records are gone for every reader."""
    configs = {"retention.ms": str(retention_ms), "segment.ms": "100", "file.delete.delay.ms": "0"}
    with scratch_topic(settings, "retention", configs=configs) as topic:
        tp = TopicPartition(topic, 0)
        producer = _producer(settings)
        with kafka_admin.offsets_reader(settings) as reader:
            deadline = time.monotonic() + timeout_s
            # keep writing: a segment only rolls (and can expire) when a newer record arrives
            while (start := reader.beginning_offsets([tp])[tp]) == 0 and time.monotonic() < deadline:
                producer.send(topic, b"x").get(timeout=10)
                time.sleep(0.2)
            end = reader.end_offsets([tp])[tp]
        producer.close()
    return {"retention_ms": retention_ms, "log_start_offset": start, "log_end_offset": end}


# -- transactions ------------------------------------------------------------------------------
def transactions(settings: Settings) -> dict[str, Any]:
    """Exactly-once INSIDE Kafka: a transaction carries the produced record and the input's
    offset commit, all or nothing. An aborted record stays in the log, hidden from
    `read_committed` readers but visible to `read_uncommitted` ones, and the offset does not
    move. An effect OUTSIDE Kafka (here a Redis counter, like an email sent) ran anyway: it
    needs an idempotency key to happen once."""
    group = _unique("eos")
    outside = redis.Redis.from_url(settings.redis_url)
    sent, once = _unique("eos-emails"), _unique("eos-email-once")
    with scratch_topic(settings, "eos-in") as source, scratch_topic(settings, "eos-out") as sink:
        _produce(settings, source, ["booking-1"])
        tp = TopicPartition(source, 0)
        reader = _consumer(settings, group_id=group, isolation_level="read_committed")
        reader.assign([tp])
        (record,) = _drain(reader, 1)
        producer = _producer(settings, transactional_id=_unique("eos-producer"))
        producer.init_transactions()
        keyed_emails = 0
        for outcome in ("abort", "commit"):  # the first try fails, the retry succeeds
            producer.begin_transaction()
            producer.send(sink, f"confirmed booking-1 ({outcome})".encode())
            producer.send_offsets_to_transaction({tp: OffsetAndMetadata(record.offset + 1, "", -1)}, group)
            outside.incr(sent)  # the email goes out on both tries
            keyed_emails += bool(outside.set(once, outcome, nx=True))  # keyed: the first try only
            if outcome == "abort":
                producer.abort_transaction()
                committed_after_abort = reader.committed(tp)
            else:
                producer.commit_transaction()
        producer.close()
        committed = reader.committed(tp)
        reader.close(autocommit=False)
        visible = {level: _read_all(settings, sink, isolation_level=level)
                   for level in ("read_committed", "read_uncommitted")}
    emails = int(outside.get(sent) or 0)
    outside.delete(sent, once)
    outside.close()
    return {"read_committed": visible["read_committed"], "read_uncommitted": visible["read_uncommitted"],
            "offset_after_abort": committed_after_abort, "offset_after_commit": committed,
            "emails_without_key": emails, "emails_with_key": keyed_emails}
