"""Apache Kafka (kafka-python): topic `bookings` keyed by hotelId, group `booking-workers`.

- Producer: acks=all and idempotence (kafka-python 3.0's defaults, stated anyway).
- Consumer: auto-commit off; an offset is committed only after its record was handled, so a
  crash means redelivery (at-least-once), never loss.
- One partition's records are handled in offset order; partitions run side by side up to
  `concurrency`. That is Kafka's unit of parallelism: more consumers than partitions idle.
- While a batch runs, the worker keeps polling with every partition paused: a slow batch
  (injected latency, real-time steps) never outlasts `max.poll.interval.ms` and gets the
  member evicted as stuck, and a rebalance is joined at once.
- Retries never block a partition: a failed record is re-published to `bookings.retry.N`
  with a `not-before` header and its offset committed. A retry partition whose head is not
  due yet is paused, and resumed when it is.
- Dead letters go to `bookings.dlq`; a separate group's committed offset marks how far the
  DLQ has been redriven.
- A retry or a dead letter and the consumed record's offset commit go in **one transaction**
  (a worker's transactional producer, fenced by its group generation, KIP-447): a crash in
  between can never leave the record both routed and uncommitted (two retries, two letters).
  The lab reads every topic `read_committed`, so an aborted route is never seen.

kafka-python clients are synchronous and not thread-safe: each lives on its own one-thread
executor, and the asyncio side awaits it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from labkit import kafka_admin, keys, names
from labkit.backends.base import (
    DLQ_SEARCH_LIMIT,
    Backend,
    DeadLetter,
    LaneStats,
    Verdict,
    booking_id_of,
    preserved,
)
from labkit.pipeline import STEPS
from labkit.text import as_text as _s

log = logging.getLogger(__name__)
T = TypeVar("T")
DLQ_REDRIVE_GROUP = "booking-dlq-redrive"
WORK_TOPICS = (names.TOPIC, *names.RETRY_TOPICS)
POLL_TIMEOUT_MS = 200
FAILED_RECORD_PAUSE_S = 1.0  # a record that raised is read again after this long
KEEP_POLLING_S = 1.0  # while a batch runs: well inside any max.poll.interval
KEEP_POLLING_TIMEOUT_MS = 100  # time for a rebalance's join to make progress in that poll
MIN_POLL_INTERVAL_S = 60
DLQ_READ_TIMEOUT_S = 30.0  # reading a partition's letters to its end; an error, not a hang
STUCK_CHECK_AFTER_S = 10.0  # a healthy join takes well under a second
SEED_PIPELINE_S = sum(step.seed_duration_s for step in STEPS)
EMPTY_POLLS_WHEN_IDLE = 3  # burst mode: this many empty polls in a row, then look at offsets
# The producer sends at most 1 MiB a request: a bigger poison value is cut in its letter.
LETTER_VALUE_MAX_BYTES = 512 * 1024
DELIVERIES_TTL_S = 24 * 3600  # a delivery count left by a record never committed expires
# A dead worker's open route transaction holds back read_committed readers of its partition
# until the broker aborts it: a route takes milliseconds, so let that be seconds, not a minute.
ROUTE_TIMEOUT_MS = 10_000
OutgoingRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class ConsumerSession:
    """One membership in the group: the consumer, the one thread it may be used from, and
    the retry partitions it paused until their head is due."""

    thread: ThreadPoolExecutor
    consumer: KafkaConsumer
    paused: dict[TopicPartition, float] = field(default_factory=dict)
    unstable_since: float | None = None  # when it left the stable group; None while stable
    empty_polls: int = 0
    committed: dict[TopicPartition, int] = field(default_factory=dict)  # what we last committed

    async def call(self, fn, *args, **kwargs):
        """kafka-python is not thread-safe: the consumer is only ever used on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, partial(fn, *args, **kwargs))

    def note_membership(self) -> None:
        if self.consumer._coordinator.stable():  # kafka-python exposes no public membership state
            self.unstable_since = None
        elif self.unstable_since is None:
            self.unstable_since = time.monotonic()


class KafkaBackend(Backend):
    lane = "kafka"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._producer: KafkaProducer | None = None
        self._router: KafkaProducer | None = None  # transactional: retries and letters
        self._producer_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-producer")
        self._inspect_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-inspect")
        self._inspectors: dict[str, KafkaConsumer] = {}
        self._topics_ready = False
        self._checked_at = 0.0
        self._session: ConsumerSession | None = None  # while `_run` is a member of the group
        self._letters, self._letters_counted_at = 0, None  # _count_letters' cache

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

    def _router_client(self) -> KafkaProducer:
        """The worker's transactional producer (one per worker process; its transactions run
        one at a time on the producer thread)."""
        if self._router is None:
            router = KafkaProducer(**self.settings.kafka_config(
                acks="all", enable_idempotence=True, linger_ms=0, client_id=f"labkit-{self.worker_id}-router",
                transactional_id=f"labkit-router-{self.worker_id}", transaction_timeout_ms=ROUTE_TIMEOUT_MS))
            router.init_transactions()
            self._router = router
        return self._router

    def _inspector(self, group: str) -> KafkaConsumer:
        """A consumer that never joins its group: it only reads committed and end offsets."""
        if group not in self._inspectors:
            self._inspectors[group] = KafkaConsumer(
                **self.settings.kafka_config(group_id=group, enable_auto_commit=False, isolation_level="read_committed")
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
            if self._router is not None:
                self._router.close(timeout=5)
                self._router = None

        await self._in(self._producer_thread, shut)
        for consumer in self._inspectors.values():
            await self._in(self._inspect_thread, consumer.close, autocommit=False)
        self._inspectors.clear()
        self._producer_thread.shutdown(wait=False)
        self._inspect_thread.shutdown(wait=False)

    # -- publishing ------------------------------------------------------------------------
    async def _publish(self, messages: list[tuple[str, str, str]], **options: Any) -> list[str]:
        await self.setup()
        records = [(key.encode(), payload.encode(), [("jobId", job_id.encode())])
                   for job_id, key, payload in messages]
        return await self._send(names.TOPIC, records)

    async def _send(self, topic: str, records: list[OutgoingRecord]) -> list[str]:
        return await self._in(self._producer_thread, self._send_all, topic, records)

    def _send_all(self, topic: str, records: list[OutgoingRecord]) -> list[str]:
        producer = self._producer_client()
        futures = [producer.send(topic, key=key, value=value, headers=headers) for key, value, headers in records]
        producer.flush()
        return [f"{m.topic}:{m.partition}:{m.offset}" for m in (f.get(timeout=30) for f in futures)]

    # -- consuming -------------------------------------------------------------------------
    async def _run(self, *, concurrency: int, stop: asyncio.Event) -> None:
        thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        session = self._session = await self._join(thread, concurrency)
        try:
            while not stop.is_set():
                await self._resume_due(session)
                batch = await session.call(session.consumer.poll, timeout_ms=POLL_TIMEOUT_MS)
                session.note_membership()
                if await self._stuck(session):
                    # kafka-python 3.0 can hang in a join that a metadata change interrupted:
                    # the broker then drops us while we wait. Start over with a new member.
                    log.warning("consumer stuck outside a stable group; rejoining as a new member")
                    await session.call(session.consumer.close)
                    session = self._session = await self._join(thread, concurrency)
                    continue
                session.empty_polls = 0 if batch else session.empty_polls + 1
                if not batch:
                    await self._commit_positions(session)
                if batch:
                    sem = asyncio.Semaphore(concurrency)
                    settled = await self._polling_while(session, asyncio.gather(
                        *(self._partition(sem, session, tp, records) for tp, records in batch.items())
                    ))
                    await self._commit(session, dict(settled))
        finally:
            self._session = None
            await session.call(session.consumer.close)  # leaves the group: partitions move at once
            thread.shutdown(wait=False)

    async def _polling_while(self, session: ConsumerSession, work: Awaitable[T]) -> T:
        """Await `work` (a batch) while polling with every partition paused. Kafka evicts a
        member that has not polled within max.poll.interval.ms; a batch of slow records
        (injected latency, real-time steps) would outlast it, its commit be refused and the
        batch run again, for ever. Polling also joins a rebalance at once, not after the batch.
        A batch done within KEEP_POLLING_S (nearly all) pauses nothing: a resume drops the
        records fetched meanwhile, and fetching them again costs throughput."""
        task = asyncio.ensure_future(work)
        await asyncio.wait([task], timeout=KEEP_POLLING_S)
        if task.done():
            return task.result()
        held = await session.call(_pause_all, session.consumer)
        try:
            while not task.done():
                await asyncio.wait([task], timeout=KEEP_POLLING_S)
                if not task.done():
                    held |= await session.call(_poll_paused, session.consumer)
        finally:
            if not task.done():
                task.cancel()
            await session.call(_resume, session.consumer, held - set(session.paused))
        return task.result()

    async def _idle(self) -> bool:
        session = self._session
        if session is None or session.empty_polls < EMPTY_POLLS_WHEN_IDLE or session.paused:
            return False
        caught_up = await session.call(_caught_up, session.consumer)
        return caught_up and session.empty_polls >= EMPTY_POLLS_WHEN_IDLE  # no batch since

    async def _stuck(self, session: ConsumerSession) -> bool:
        """Outside a stable group while the broker's group is Stable (it went on without
        us), or longer than any join may wait (max_poll_interval): stuck, not waiting."""
        if session.unstable_since is None:
            return False
        waited_s = time.monotonic() - session.unstable_since
        if waited_s > session.consumer.config["max_poll_interval_ms"] / 1000 + 15:
            return True
        if waited_s < STUCK_CHECK_AFTER_S or time.monotonic() - self._checked_at < STUCK_CHECK_AFTER_S:
            return False
        self._checked_at = time.monotonic()  # an admin round trip: not on every poll
        return await self._in(self._inspect_thread, kafka_admin.group_state, self.settings) == "Stable"

    def _max_poll_interval_ms(self, concurrency: int) -> int:
        # Worst case: the whole batch sits in one partition and runs back to back.
        batch_s = concurrency * SEED_PIPELINE_S * self.settings.time_scale
        return int(max(MIN_POLL_INTERVAL_S, 2 * batch_s + 30) * 1000)

    async def _join(self, thread: ThreadPoolExecutor, concurrency: int) -> ConsumerSession:
        session_ms = int(self.settings.stale_after_s * 1000)
        config = self.settings.kafka_config(
            group_id=names.GROUP,
            client_id=self.worker_id,
            enable_auto_commit=False,  # commit after processing, not on a timer
            isolation_level="read_committed",  # an aborted retry route is never delivered
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
        consumer = await self._in(thread, KafkaConsumer, **config)
        return ConsumerSession(thread, await self._in(thread, kafka_admin.subscribed, consumer, list(WORK_TOPICS)))

    async def _partition(
        self, sem: asyncio.Semaphore, session: ConsumerSession, tp: TopicPartition, records: list
    ) -> tuple[TopicPartition, list[int]]:
        """Handle one partition's records in offset order; return the offsets settled."""
        async with sem:
            settled: list[int] = []
            for record in records:
                due = _number_header(record, "not-before", 0.0)
                if due > time.time():
                    # Not due: rewind to it and pause this retry partition until it is.
                    await session.call(session.consumer.seek, tp, record.offset)
                    await session.call(session.consumer.pause, tp)
                    session.paused[tp] = due
                    break
                try:
                    await self._deliver(record)
                except Exception:
                    # Rewind and stop this partition for now: the record is read again after
                    # a pause (not at once: in a Redis outage that was a hot loop, hundreds of
                    # tracebacks a second), and nothing after it is committed past it.
                    log.warning("record %s failed; it will be read again", _source(record), exc_info=True)
                    await session.call(session.consumer.seek, tp, record.offset)
                    await asyncio.sleep(FAILED_RECORD_PAUSE_S)
                    break
                settled.append(record.offset)
            return tp, settled

    async def _deliver(self, record: ConsumerRecord) -> None:
        """Count the delivery first: Kafka keeps no delivery count, and a record that kills
        its worker every time must end in the DLQ instead of taking down each new one."""
        attempt = _attempt(record)
        deliveries = await self._count_delivery(record)
        if deliveries > (await self.retry_policy()).max_attempts:
            reason = f"delivered {deliveries - 1} times and never settled: it kills or fails its worker"
            verdict = Verdict.dead(booking_id_of(record.value), reason)
            await self._settle(record, verdict, attempt, started=time.monotonic())
            return
        await self.consume(record, record.value or b"", attempt=attempt, job_id=_source(record))

    async def _count_delivery(self, record: ConsumerRecord) -> int:
        key = keys.kafka_deliveries(record.topic, record.partition, record.offset)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, DELIVERIES_TTL_S)
        deliveries, _ = await pipe.execute()
        return deliveries

    async def _ack(self, record: ConsumerRecord) -> None:
        """The offset is committed with its poll's batch, once its partition got that far."""

    async def _retry(self, record: ConsumerRecord, delay_s: float, attempt: int) -> None:
        topic = names.RETRY_TOPICS[min(attempt, len(names.RETRY_TOPICS)) - 1]
        headers = [("jobId", _job_id(record)), ("attempt", str(attempt + 1).encode()),
                   ("not-before", repr(time.time() + delay_s).encode())]
        await self._route(topic, (record.key, record.value or b"", headers), record)

    async def _dead_letter(self, record: ConsumerRecord, reason: str, attempt: int) -> None:
        value = record.value or b""
        headers = [("jobId", _job_id(record)), ("reason", reason.encode()),
                   ("attempts", str(attempt).encode()), ("source", _source(record).encode())]
        if len(value) > LETTER_VALUE_MAX_BYTES:
            headers.append(("truncated-from-bytes", str(len(value)).encode()))
            value = value[:LETTER_VALUE_MAX_BYTES]
        await self._route(names.TOPIC_DLQ, (record.key, value, headers), record)

    async def _route(self, topic: str, outgoing: OutgoingRecord, source: ConsumerRecord) -> None:
        """Produce `outgoing` and commit `source`'s offset in one transaction. Earlier records
        of its partition are settled already (a partition runs in offset order)."""
        session = self._session
        group = await session.call(session.consumer.group_metadata) if session else names.GROUP
        await self._in(self._producer_thread, self._route_in_transaction, topic, outgoing, source, group)

    def _route_in_transaction(self, topic: str, outgoing: OutgoingRecord, source: ConsumerRecord, group) -> None:
        router = self._router_client()
        try:
            router.begin_transaction()
            key, value, headers = outgoing
            router.send(topic, key=key, value=value, headers=headers)
            offsets = {TopicPartition(source.topic, source.partition): OffsetAndMetadata(source.offset + 1, "", -1)}
            router.send_offsets_to_transaction(offsets, group)
            router.commit_transaction()
        except Exception:
            # Nothing was routed and the offset stays: the record is read again (by us, or by
            # the member that owns its partition now, if a rebalance fenced us).
            try:
                router.abort_transaction()
            except KafkaError:  # a fatal state (fenced producer): start a new one next time
                router.close(timeout=0)
                self._router = None
            raise

    async def _commit_offsets(self, session: ConsumerSession, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await session.call(session.consumer.commit,
                               offsets={tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            session.committed.update(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group rebalanced while we worked (or the commit failed): another member
            # redelivers these records. At-least-once; the idempotent effects absorb it.
            log.info("commit not accepted (%s); the records will be redelivered", exc)

    async def _commit_positions(self, session: ConsumerSession) -> None:
        """After an empty poll every record fetched is settled (or rewound to): commit each
        position past what we committed. That moves the offset over the marker a routed
        retry's transaction leaves behind its record, so a drained topic's lag reads 0."""
        if session.unstable_since is not None:
            return  # not a member of a stable group: the coordinator refuses any commit
        positions = await session.call(_positions, session.consumer)
        await self._commit_offsets(session, {tp: at for tp, at in positions.items()
                                             if at > session.committed.get(tp, -1)})

    async def _resume_due(self, session: ConsumerSession) -> None:
        due = [tp for tp, at in session.paused.items() if at <= time.time()]
        assigned = await session.call(session.consumer.assignment) if due else set()
        for tp in due:
            del session.paused[tp]
            if tp in assigned:
                await session.call(resume_partition, session.consumer, tp)

    async def _commit(self, session: ConsumerSession, settled: dict[TopicPartition, list[int]]) -> None:
        offsets = {tp: done[-1] + 1 for tp, done in settled.items() if done}
        if not offsets:
            return
        await self._commit_offsets(session, offsets)
        # Settled either way: a redelivery after a refused commit is not a crash to count.
        await self.redis.delete(*(keys.kafka_deliveries(tp.topic, tp.partition, offset)
                                  for tp, done in settled.items() for offset in done))

    # -- dead letters ------------------------------------------------------------------------
    # The redrive group's committed offset marks how far each DLQ partition was redriven. A
    # selective redrive (some bookings' letters) takes letters out of order: those past the
    # offset are remembered in KAFKA_REDRIVEN until the offset can move over them.
    def _dlq_partitions(self, reader: KafkaConsumer) -> list[tuple[TopicPartition, int, int]]:
        """(partition, redrive group's committed offset, end) of each DLQ partition with letters."""
        partitions = [TopicPartition(names.TOPIC_DLQ, p) for p in reader.partitions_for_topic(names.TOPIC_DLQ) or ()]
        ends = reader.end_offsets(partitions)
        starts = {tp: reader.committed(tp) or 0 for tp in partitions}
        return [(tp, starts[tp], ends[tp]) for tp in partitions if starts[tp] < ends[tp]]

    @staticmethod
    def _dlq_records(reader: KafkaConsumer, tp: TopicPartition, start: int, end: int) -> Iterator[ConsumerRecord]:
        """One DLQ partition's records from `start` to `end`, in offset order."""
        reader.assign([tp])
        reader.seek(tp, start)
        deadline = time.monotonic() + DLQ_READ_TIMEOUT_S
        while reader.position(tp) < end:
            if time.monotonic() > deadline:
                raise KafkaError(f"{tp.topic}:{tp.partition}: no records past offset "
                                 f"{reader.position(tp)} within {DLQ_READ_TIMEOUT_S:.0f}s (end {end})")
            for record in reader.poll(timeout_ms=1000, max_records=500).get(tp, []):
                if record.offset < end:
                    yield record

    def _read_dlq(self, limit: int, redriven: set[str]) -> list[DeadLetter]:
        """Up to `limit` letters not redriven yet, partition by partition in offset order."""
        reader = self._inspector(DLQ_REDRIVE_GROUP)
        letters: list[DeadLetter] = []
        try:
            for tp, start, end in self._dlq_partitions(reader):
                for record in self._dlq_records(reader, tp, start, end):
                    if len(letters) >= limit:
                        return letters
                    if _letter_id(record) not in redriven:
                        letters.append(_letter(record))
        finally:
            reader.unsubscribe()
        return letters

    def _commit_redriven(self, redriven: set[str]) -> set[str]:
        """Move each partition's redrive offset over its leading run of redriven letters (and
        the transaction markers between them: up to the next letter, or the end); return
        their ids (the offset now covers them)."""
        reader = self._inspector(DLQ_REDRIVE_GROUP)
        covered: set[str] = set()
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            for tp, start, end in self._dlq_partitions(reader):
                mark = end
                for record in self._dlq_records(reader, tp, start, end):
                    if (letter_id := _letter_id(record)) not in redriven:
                        mark = record.offset
                        break
                    covered.add(letter_id)
                if mark > start:
                    offsets[tp] = OffsetAndMetadata(mark, "", -1)
            if offsets:
                reader.commit(offsets=offsets)
        finally:
            reader.unsubscribe()
        return covered

    def _count_letters(self, redriven: set[str]) -> int:
        """Letters not redriven yet (up to DLQ_SEARCH_LIMIT). Offsets alone over-count: each
        transaction leaves a marker. Read again only when the DLQ's offsets moved."""
        reader = self._inspector(DLQ_REDRIVE_GROUP)
        spans = self._dlq_partitions(reader)
        seen_at = (tuple(spans), len(redriven))
        if seen_at != self._letters_counted_at:
            self._letters = len(self._read_dlq(DLQ_SEARCH_LIMIT, redriven))
            self._letters_counted_at = seen_at
        return self._letters

    async def _redriven(self) -> set[str]:
        return {_s(m) for m in await self.redis.smembers(keys.KAFKA_REDRIVEN)}

    async def _dlq_list(self, limit: int) -> list[DeadLetter]:
        await self.setup()
        return await self._in(self._inspect_thread, self._read_dlq, limit, await self._redriven())

    async def _redrive(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        records = [(l.key.encode(), l.payload.encode(), [("jobId", f"redrive-{l.id}".encode())])
                   for l in letters]
        await self._send(names.TOPIC, records)
        await self.redis.sadd(keys.KAFKA_REDRIVEN, *(l.id for l in letters))
        covered = await self._in(self._inspect_thread, self._commit_redriven, await self._redriven())
        if covered:
            await self.redis.srem(keys.KAFKA_REDRIVEN, *covered)
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
            stats.dlq_size = await self._in(self._inspect_thread, self._count_letters, await self._redriven())
        except KafkaError as exc:
            stats.detail = {"error": str(exc)}
            return
        stats.lag = sum(v for k, v in work.items() if k.startswith(f"{names.TOPIC}:"))
        stats.detail = {"lag_per_partition": work, "retry_backlog": _retry_backlog(work)}


def _pause_all(consumer: KafkaConsumer) -> set[TopicPartition]:
    """Pause every assigned partition not paused yet; return those."""
    newly = consumer.assignment() - consumer.paused()
    consumer.pause(*newly)
    return newly


def _poll_paused(consumer: KafkaConsumer) -> set[TopicPartition]:
    """A poll that only keeps the membership alive. A partition a rebalance assigned
    meanwhile is not paused: rewind whatever it returned and pause it too."""
    returned = consumer.poll(timeout_ms=KEEP_POLLING_TIMEOUT_MS)
    for tp, records in returned.items():
        consumer.seek(tp, records[0].offset)
    return _pause_all(consumer) | set(returned)


def _resume(consumer: KafkaConsumer, partitions: set[TopicPartition]) -> None:
    for tp in partitions & consumer.assignment():
        resume_partition(consumer, tp)


def _positions(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    return {tp: consumer.position(tp) for tp in consumer.assignment()}


def _caught_up(consumer: KafkaConsumer) -> bool:
    assigned = consumer.assignment()
    if not assigned:
        return False
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)


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


def _retry_backlog(lag: dict[str, int]) -> int:
    return sum(v for k, v in lag.items() if not k.startswith(f"{names.TOPIC}:"))


def _header(record: ConsumerRecord, name: str) -> str:
    """A header's text; a missing or null one reads as empty, undecodable bytes as U+FFFD."""
    for key, value in record.headers or []:
        if key == name and value is not None:
            return value.decode(errors="replace")
    return ""


def _number_header(record: ConsumerRecord, name: str, default: float) -> float:
    try:
        return float(_header(record, name) or default)
    except ValueError:
        return default


def _attempt(record: ConsumerRecord) -> int:
    attempt = _number_header(record, "attempt", 1)
    return int(attempt) if 1 <= attempt <= 1000 else 1  # also rejects nan and inf


def _job_id(record: ConsumerRecord) -> bytes:
    return (_header(record, "jobId") or "unknown").encode()


def _source(record: ConsumerRecord) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def _letter_id(record: ConsumerRecord) -> str:
    return f"{record.partition}:{record.offset}"  # partition:offset in bookings.dlq


def _letter(record: ConsumerRecord) -> DeadLetter:
    return DeadLetter(
        id=_letter_id(record),
        booking_id=booking_id_of(record.value),
        reason=_header(record, "reason"),
        attempts=int(_number_header(record, "attempts", 0)),
        payload=preserved(record.value or b""),
        failed_at=record.timestamp / 1000,
        key=preserved(record.key or b""),
    )
