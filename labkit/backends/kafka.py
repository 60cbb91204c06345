"""Apache Kafka (kafka-python): topic `bookings` keyed by hotelId, group `booking-workers`.

- Producer: acks=all and idempotence (kafka-python 3.0's defaults, stated anyway).
- Consumer: auto-commit off; an offset is committed only after its record was handled, so a
  crash means redelivery (at-least-once), never loss.
- One partition's records are handled in offset order; partitions run side by side up to
  `concurrency`. That is Kafka's unit of parallelism: more consumers than partitions idle.
- Retries never block a partition: a failed record is re-published to `bookings.retry.N`
  with a `not-before` header and its offset committed. A retry partition whose head is not
  due yet is paused, and resumed when it is.
- Dead letters go to `bookings.dlq`; a separate group's committed offset marks how far the
  DLQ has been redriven.

kafka-python clients are synchronous and not thread-safe: each lives on its own one-thread
executor, and the asyncio side awaits it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from labkit import kafka_admin, names
from labkit.backends.base import Backend, DeadLetter, LaneStats, Verdict, _booking_id_of
from labkit.pipeline import STEPS

log = logging.getLogger(__name__)
DLQ_REDRIVE_GROUP = "booking-dlq-redrive"
WORK_TOPICS = (names.TOPIC, *names.RETRY_TOPICS)


class KafkaBackend(Backend):
    lane = "kafka"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._producer: KafkaProducer | None = None
        self._producer_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-producer")
        self._inspect_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-inspect")
        self._inspectors: dict[str, KafkaConsumer] = {}
        self._topics_ready = False
        self._checked_at = 0.0

    # -- clients ---------------------------------------------------------------------------
    async def _in(self, executor: ThreadPoolExecutor, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args, **kwargs))

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **self.settings.kafka_config(
                    acks="all", enable_idempotence=True, linger_ms=5, client_id=f"labkit-{self.worker_id}"
                )
            )
        return self._producer

    def _inspector(self, group: str) -> KafkaConsumer:
        """A consumer that never joins its group: it only reads committed and end offsets."""
        if group not in self._inspectors:
            self._inspectors[group] = KafkaConsumer(
                **self.settings.kafka_config(group_id=group, enable_auto_commit=False)
            )
        return self._inspectors[group]

    async def setup(self) -> None:
        if not self._topics_ready:
            await self._in(self._inspect_thread, kafka_admin.ensure_topics, self.settings)
            self._topics_ready = True

    async def close(self) -> None:
        def shut() -> None:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None

        await self._in(self._producer_thread, shut)
        for consumer in self._inspectors.values():
            await self._in(self._inspect_thread, consumer.close, autocommit=False)
        self._inspectors.clear()
        self._producer_thread.shutdown(wait=False)
        self._inspect_thread.shutdown(wait=False)

    # -- publishing ------------------------------------------------------------------------
    async def _publish(self, messages: list[tuple[str, str, str]], **options: Any) -> list[str]:
        await self.setup()
        return await self._in(self._producer_thread, self._send_all, names.TOPIC, messages)

    def _send_all(self, topic: str, messages, headers: list | None = None) -> list[str]:
        producer = self._producer_client()
        futures = [
            producer.send(
                topic, key=key.encode(), value=payload.encode(),
                headers=[("jobId", job_id.encode()), *(headers or [])],
            )
            for job_id, key, payload in messages
        ]
        producer.flush()
        return [f"{m.topic}:{m.partition}:{m.offset}" for m in (f.get(timeout=30) for f in futures)]

    # -- consuming -------------------------------------------------------------------------
    async def _run(self, *, concurrency: int, stop: asyncio.Event, burst: bool) -> None:
        thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        consumer = await self._in(thread, self._join, concurrency)
        paused: dict[TopicPartition, float] = {}
        idle_polls = 0
        unstable_since: float | None = None
        try:
            while not stop.is_set():
                await self._resume_due(thread, consumer, paused)
                batch = await self._in(thread, consumer.poll, timeout_ms=200)
                unstable_since = _unstable_since(consumer, unstable_since)
                if await self._stuck(consumer, unstable_since):
                    # kafka-python 3.0 can hang in a join that a metadata change interrupted:
                    # the broker then drops us while we wait. Start over with a new member.
                    log.warning("consumer stuck outside a stable group; rejoining as a new member")
                    await self._in(thread, consumer.close)
                    consumer, paused, unstable_since = await self._in(thread, self._join, concurrency), {}, None
                    continue
                if not batch:
                    idle_polls += 1
                    if burst and idle_polls >= 3 and not paused and await self._caught_up(thread, consumer):
                        return
                    continue
                idle_polls = 0
                sem = asyncio.Semaphore(concurrency)
                done = await asyncio.gather(
                    *(self._partition(sem, thread, consumer, tp, recs, paused) for tp, recs in batch.items())
                )
                offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in done if pos is not None}
                if offsets:
                    await self._commit(thread, consumer, offsets)
        finally:
            await self._in(thread, consumer.close)  # leaves the group: partitions move at once
            thread.shutdown(wait=False)

    async def _stuck(self, consumer: KafkaConsumer, since: float | None) -> bool:
        """Outside a stable group while the broker's group is Stable (it went on without
        us), or longer than any join may wait (max_poll_interval): stuck, not waiting."""
        if since is None:
            return False
        waited_s = time.monotonic() - since
        if waited_s > consumer.config["max_poll_interval_ms"] / 1000 + 15:
            return True
        if waited_s < STUCK_CHECK_AFTER_S or time.monotonic() - self._checked_at < STUCK_CHECK_AFTER_S:
            return False
        self._checked_at = time.monotonic()  # an admin round trip: not on every poll
        return await self._in(self._inspect_thread, kafka_admin.group_state, self.settings) == "Stable"

    def _max_poll_interval_ms(self, concurrency: int) -> int:
        # Worst case: the whole batch sits in one partition and runs back to back.
        batch_s = concurrency * SEED_PIPELINE_S * self.settings.time_scale
        return int(max(MIN_POLL_INTERVAL_S, 2 * batch_s + 30) * 1000)

    def _join(self, concurrency: int) -> KafkaConsumer:
        session_ms = int(self.settings.stale_after_s * 1000)
        consumer = KafkaConsumer(
            **self.settings.kafka_config(
                group_id=names.GROUP,
                client_id=self.worker_id,
                enable_auto_commit=False,  # commit after processing, not on a timer
                auto_offset_reset="earliest",
                # The 45 s / 3 s defaults make a lab wait most of a minute to notice a dead
                # worker; the broker allows down to group.min.session.timeout.ms.
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(300, session_ms // 4),
                fetch_max_wait_ms=100,  # the default 500 ms shows up as latency
                # A rebalance waits for every member to poll again, so a poll's batch must
                # finish well inside max_poll_interval_ms even at time_scale 1 (12 s a
                # booking, one partition's records in order): a few records at a time.
                max_poll_records=concurrency,
                max_poll_interval_ms=self._max_poll_interval_ms(concurrency),
            )
        )
        _subscribe_with_metadata(consumer)
        return consumer

    async def _partition(self, sem, thread, consumer, tp, records, paused) -> tuple[TopicPartition, int | None]:
        """Handle one partition's records in offset order; return the offset to commit."""
        async with sem:
            position = None
            for record in records:
                headers = {k: v.decode() for k, v in record.headers or []}
                due = float(headers.get("not-before", 0))
                if due > time.time():
                    # Not due: rewind to it and pause this retry partition until it is.
                    await self._in(thread, consumer.seek, tp, record.offset)
                    await self._in(thread, consumer.pause, tp)
                    paused[tp] = due
                    break
                attempt = int(headers.get("attempt", 1))
                job_id = f"{tp.topic}:{tp.partition}:{record.offset}"
                try:
                    verdict = await self.process(record.value or b"", attempt=attempt, job_id=job_id)
                    await self._route(record, verdict, attempt)
                except Exception:
                    # Rewind and stop this partition for now: the record is read again on
                    # the next poll, and nothing after it is committed past it.
                    log.warning("record %s failed; it will be read again", job_id, exc_info=True)
                    await self._in(thread, consumer.seek, tp, record.offset)
                    break
                position = record.offset + 1
            return tp, position

    async def _route(self, record, verdict: Verdict, attempt: int) -> None:
        if verdict.action == "ack":
            return
        key = (record.key or b"").decode()
        job_id = dict(record.headers or []).get("jobId", b"").decode() or "unknown"
        message = [(job_id, key, (record.value or b"").decode(errors="replace"))]
        if verdict.action == "retry":
            topic = names.RETRY_TOPICS[min(attempt, len(names.RETRY_TOPICS)) - 1]
            headers = [("attempt", str(attempt + 1).encode()),
                       ("not-before", repr(time.time() + verdict.delay_s).encode())]
        else:
            topic = names.TOPIC_DLQ
            headers = [("reason", verdict.reason.encode()), ("attempts", str(attempt).encode()),
                       ("source", f"{record.topic}:{record.partition}:{record.offset}".encode())]
        # Wait for the broker's ack before our offset is committed: the record is never lost.
        await self._in(self._producer_thread, self._send_all, topic, message, headers)

    async def _resume_due(self, thread, consumer, paused: dict[TopicPartition, float]) -> None:
        due = [tp for tp, at in paused.items() if at <= time.time()]
        assigned = await self._in(thread, consumer.assignment) if due else set()
        for tp in due:
            del paused[tp]
            if tp in assigned:
                await self._in(thread, resume_partition, consumer, tp)

    async def _commit(self, thread, consumer, offsets) -> None:
        try:
            await self._in(thread, consumer.commit, offsets=offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group rebalanced while we worked (or the commit failed): another member
            # redelivers these records. At-least-once; the idempotent effects absorb it.
            log.info("commit not accepted (%s); the records will be redelivered", exc)

    async def _caught_up(self, thread, consumer) -> bool:
        assigned = await self._in(thread, consumer.assignment)
        if not assigned:
            return False
        ends = await self._in(thread, consumer.end_offsets, list(assigned))
        for tp in assigned:
            if await self._in(thread, consumer.position, tp) < ends[tp]:
                return False
        return True

    # -- dead letters ------------------------------------------------------------------------
    def _read_dlq(self, limit: int) -> tuple[list[DeadLetter], dict[TopicPartition, int]]:
        """DLQ records past the redrive group's committed offsets, and where each part ends."""
        reader = self._inspector(DLQ_REDRIVE_GROUP)
        partitions = [TopicPartition(names.TOPIC_DLQ, p) for p in reader.partitions_for_topic(names.TOPIC_DLQ) or ()]
        reader.assign(partitions)
        ends = reader.end_offsets(partitions)
        letters: list[DeadLetter] = []
        for tp in partitions:
            start = reader.committed(tp) or 0
            if start >= ends[tp]:
                continue
            reader.seek(tp, start)
            deadline = time.monotonic() + DLQ_READ_TIMEOUT_S
            while reader.position(tp) < ends[tp] and len(letters) < limit:
                if time.monotonic() > deadline:
                    raise KafkaError(f"{tp.topic}:{tp.partition}: no records past offset "
                                     f"{reader.position(tp)} within {DLQ_READ_TIMEOUT_S:.0f}s (end {ends[tp]})")
                for record in reader.poll(timeout_ms=1000, max_records=500).get(tp, []):
                    if record.offset < ends[tp]:
                        letters.append(_letter(record))
        reader.unsubscribe()
        return letters[:limit], ends

    async def _dlq_list(self, limit: int) -> list[DeadLetter]:
        await self.setup()
        letters, _ends = await self._in(self._inspect_thread, self._read_dlq, limit)
        return letters

    async def _redrive(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        messages = [(f"redrive-{l.id}", l.key, l.payload) for l in letters]
        await self._in(self._producer_thread, self._send_all, names.TOPIC, messages)
        marks: dict[TopicPartition, int] = {}
        for letter in letters:
            partition, offset = (int(x) for x in letter.id.split(":"))
            tp = TopicPartition(names.TOPIC_DLQ, partition)
            marks[tp] = max(marks.get(tp, 0), offset + 1)
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in marks.items()}
        await self._in(self._inspect_thread, self._inspector(DLQ_REDRIVE_GROUP).commit, offsets=offsets)
        return len(letters)

    # -- stats -------------------------------------------------------------------------------
    def _lag(self, group: str, topics: tuple[str, ...]) -> dict[str, int]:
        inspector = self._inspector(group)
        parts = [TopicPartition(t, p) for t in topics for p in inspector.partitions_for_topic(t) or ()]
        ends = inspector.end_offsets(parts)
        return {f"{tp.topic}:{tp.partition}": ends[tp] - (inspector.committed(tp) or 0) for tp in parts}

    async def _transport_stats(self, stats: LaneStats) -> None:
        await self.setup()
        try:
            work = await self._in(self._inspect_thread, self._lag, names.GROUP, WORK_TOPICS)
            dlq = await self._in(self._inspect_thread, self._lag, DLQ_REDRIVE_GROUP, (names.TOPIC_DLQ,))
        except KafkaError as exc:
            stats.detail = {"error": str(exc)}
            return
        stats.lag = sum(v for k, v in work.items() if k.startswith(f"{names.TOPIC}:"))
        stats.dlq_size = sum(dlq.values())
        stats.detail = {"lag_per_partition": work, "retry_backlog": _retry_backlog(work)}


MIN_POLL_INTERVAL_S = 60
DLQ_READ_TIMEOUT_S = 30.0  # reading a partition's letters to its end; an error, not a hang
STUCK_CHECK_AFTER_S = 10.0  # a healthy join takes well under a second
SEED_PIPELINE_S = sum(step.seed_duration_s for step in STEPS)


def _unstable_since(consumer: KafkaConsumer, since: float | None) -> float | None:
    """When this member left the stable state (None while stable)."""
    if consumer._coordinator.stable():  # kafka-python exposes no public membership state
        return None
    return since or time.monotonic()


def resume_partition(consumer: KafkaConsumer, tp: TopicPartition) -> None:
    """`consumer.resume(tp)`, and make sure `tp` is fetched again.

    kafka-python 3.0.12 parks a paused partition's buffered records and hands them back only
    when its in-line slot is None, which a used-up slot never is; while parked, the partition
    is left out of every fetch. The partition then stalls for good (seen: one retry record
    never delivered). We seek back before each pause, so parked records are stale: drop them.
    """
    consumer.resume(tp)
    parked = getattr(consumer._fetcher, "_paused_partition_records", {}).pop(tp, None)
    if parked is not None:
        parked.drain()


def _subscribe_with_metadata(consumer: KafkaConsumer, timeout_s: float = 30.0) -> None:
    """Know every topic's partitions before joining: a group leader without metadata
    assigns nothing, and that member idles until the next rebalance."""
    deadline = time.monotonic() + timeout_s
    while any(consumer.partitions_for_topic(t) is None for t in WORK_TOPICS):
        if time.monotonic() > deadline:
            raise KafkaError(f"no metadata for {WORK_TOPICS} after {timeout_s:.0f}s")
        time.sleep(0.2)
    consumer.subscribe(list(WORK_TOPICS))


def _retry_backlog(lag: dict[str, int]) -> int:
    return sum(v for k, v in lag.items() if not k.startswith(f"{names.TOPIC}:"))


def _letter(record) -> DeadLetter:
    headers = {k: v.decode(errors="replace") for k, v in record.headers or []}
    payload = record.value.decode(errors="replace")
    return DeadLetter(
        id=f"{record.partition}:{record.offset}",  # partition:offset in bookings.dlq
        booking_id=_booking_id_of(payload),
        reason=headers.get("reason", ""),
        attempts=int(headers.get("attempts", 0) or 0),
        payload=payload,
        failed_at=record.timestamp / 1000,
        key=(record.key or b"").decode(),
    )
