"""Apache Kafka (kafka-python): topic `bookings` keyed by hotelId, group `booking-workers`.

- Producer: acks=all and idempotence (kafka-python 3.0's defaults, stated anyway).
- Consumer: auto-commit off; an offset is committed only after its record was handled, so a
  crash means redelivery (at-least-once), never loss.
- Concurrency beyond partitions (the Confluent Parallel Consumer idea): the worker keeps
  polling while records are in flight and runs up to `concurrency` of them at once, also
  within one partition. `settings.kafka_ordering` says what may overlap: `key` (default:
  different hotels, each hotel's records in offset order), `partition` (one record of a
  partition at a time) or `unordered`. Each partition commits only its contiguous finished
  prefix (kafka_tracker.py); a partition is paused only when it holds its in-flight limit.
  When partitions are revoked, their finished prefix is committed and the rest abandoned to
  the new owner (the pipeline's effects are idempotent).
- Retries never block a partition: a failed record is re-published to `bookings.retry.N`
  with a `not-before` header and its offset committed. A retry record not due yet waits in
  flight, outside the concurrency slots.
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
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from labkit import kafka_admin, keys, names
from labkit.backends.base import Backend, DeadLetter, LaneStats, Verdict, booking_id_of, preserved
from labkit.backends.kafka_tracker import OffsetTracker, Prefix, Tracked
from labkit.settings import Settings

log = logging.getLogger(__name__)
DLQ_REDRIVE_GROUP = "booking-dlq-redrive"
WORK_TOPICS = (names.TOPIC, *names.RETRY_TOPICS)
POLL_TIMEOUT_MS = 200
MAX_POLL_INTERVAL_S = 60
MAX_POLL_RECORDS = 100
PARTITION_IN_FLIGHT = 200  # records polled and not yet committed, per partition, before it is paused
TRANSACTION_TIMEOUT_MS = 10_000  # a crashed worker's open transaction blocks read_committed readers this long
RETRY_FAILED_RECORD_S = 1.0  # a record whose handling raised is tried again after this
DLQ_READ_TIMEOUT_S = 30.0  # reading a partition's letters to its end; an error, not a hang
STUCK_CHECK_AFTER_S = 10.0  # a healthy join takes well under a second
EMPTY_POLLS_WHEN_IDLE = 3  # burst mode: this many empty polls in a row, then look at offsets
# The producer sends at most 1 MiB a request: a bigger poison value is cut in its letter.
LETTER_VALUE_MAX_BYTES = 512 * 1024
DELIVERIES_TTL_S = 24 * 3600  # a delivery count left by a record never committed expires
OutgoingRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class ConsumerSession:
    """One membership in the group: the consumer, the one thread it may be used from, the
    records it holds in flight, and the partitions it paused because they hold enough."""

    thread: ThreadPoolExecutor
    tracker: OffsetTracker
    consumer: KafkaConsumer = None  # type: ignore[assignment]  # set once subscribed
    paused: set[TopicPartition] = field(default_factory=set)
    rewind: dict[TopicPartition, int] = field(default_factory=dict)  # first abandoned offset, per revoked partition
    unstable_since: float | None = None  # when it left the stable group; None while stable
    empty_polls: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    producer: KafkaProducer | None = None  # transactional: commits offsets with retries/letters

    async def call(self, fn, *args, **kwargs):
        """kafka-python is not thread-safe: the consumer is only ever used on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, partial(fn, *args, **kwargs))

    def transactions(self, settings: Settings) -> KafkaProducer:
        """The session's transactional producer (consumer thread only). Its id is the member's
        own; a crashed member's open transaction is aborted by the broker after its timeout."""
        if self.producer is None:
            self.producer = KafkaProducer(**settings.kafka_config(
                transactional_id=f"labkit-{self.consumer.config['client_id']}",
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            ))
            self.producer.init_transactions()
        return self.producer

    def abort(self) -> None:
        try:
            self.producer.abort_transaction()
        except Exception:  # a producer that cannot abort is replaced
            log.warning("transaction abort failed; starting a new transactional producer", exc_info=True)
            self.close_producer()

    def close(self) -> None:
        self.close_producer()
        self.consumer.close()

    def close_producer(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None

    def resolve(self, items: list[Tracked], error: Exception | None = None) -> None:
        """Wake whoever waits for these records' commit, from whichever thread."""
        for item in items:
            if item.waiter is not None:
                self.loop.call_soon_threadsafe(_settle_future, item.waiter, error)

    def note_membership(self) -> None:
        if self.consumer._coordinator.stable():  # kafka-python exposes no public membership state
            self.unstable_since = None
        elif self.unstable_since is None:
            self.unstable_since = time.monotonic()


class Abandoned(Exception):
    """The record's partition moved to another member before its retry or letter committed:
    the new owner handles it again."""


def _settle_future(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Rebalance(ConsumerRebalanceListener):
    """Called inside `poll`, on the consumer thread: before partitions move away, commit
    their finished prefix and abandon the rest (never commit an unfinished record)."""

    def __init__(self, backend: KafkaBackend, session: ConsumerSession) -> None:
        self.backend = backend
        self.session = session

    def on_partitions_revoked(self, revoked) -> None:
        revoked = set(revoked)
        if not revoked:
            return
        try:
            self.backend._commit_prefixes(self.session, revoked)
        except KafkaError as exc:  # the new owner redelivers; the effects are idempotent
            log.info("commit on revoke not accepted (%s); the records will be redelivered", exc)
        abandoned = self.session.tracker.revoke(revoked)
        self.session.resolve(abandoned, Abandoned("partition revoked"))
        self.session.paused -= revoked
        for item in abandoned:
            rewind = self.session.rewind
            rewind[item.partition] = min(rewind.get(item.partition, item.offset), item.offset)
        if abandoned:
            log.info("partitions revoked: %d records in flight abandoned to their new owner", len(abandoned))

    def on_partitions_assigned(self, assigned) -> None:
        """A partition handed back to us keeps its fetch position (kafka-python), which is past
        the records we abandoned: read again from the first of them."""
        for tp in set(assigned) & set(self.session.rewind):
            self.session.consumer.seek(tp, self.session.rewind[tp])
        self.session.rewind.clear()


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
        self._session: ConsumerSession | None = None  # while `_run` is a member of the group
        self._slots = asyncio.Semaphore(1)  # records handled at once; `_run` sizes it
        self._tasks: set[asyncio.Task] = set()

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
            self._inspectors[group] = KafkaConsumer(**self.settings.kafka_config(
                group_id=group, enable_auto_commit=False, isolation_level="read_committed"
            ))
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
        self._slots = asyncio.Semaphore(concurrency)
        session = self._session = await self._join(thread)
        try:
            # Poll without pause while records are in flight: the heartbeat thread keeps the
            # session, but max_poll_interval counts between polls. On stop, keep polling
            # (every partition paused) until what is in flight is finished and committed.
            while not stop.is_set() or session.tracker.in_flight():
                await session.call(_flow_control, session, stopping=stop.is_set())
                batch = await session.call(session.consumer.poll, timeout_ms=POLL_TIMEOUT_MS)
                session.note_membership()
                if await self._stuck(session):
                    # kafka-python 3.0 can hang in a join that a metadata change interrupted:
                    # the broker then drops us while we wait. Start over with a new member.
                    log.warning("consumer stuck outside a stable group; rejoining as a new member")
                    session.resolve(session.tracker.revoke(set(session.tracker.partitions())),
                                    Abandoned("rejoining the group"))
                    await session.call(session.close)
                    session = self._session = await self._join(thread)
                    continue
                session.empty_polls = 0 if batch else session.empty_polls + 1
                for records in batch.values():
                    for record in records:
                        self._track(session, record)
                await self._commit(session)
        finally:
            self._session = None
            await session.call(session.close)  # leaves the group: partitions move at once
            thread.shutdown(wait=False)

    def _track(self, session: ConsumerSession, record: ConsumerRecord) -> None:
        item = Tracked(TopicPartition(record.topic, record.partition), record.offset, record.key, record)
        if session.tracker.add(item):
            self._start(session, item)

    def _start(self, session: ConsumerSession, item: Tracked) -> None:
        task = asyncio.create_task(self._work(session, item))
        self._tasks.add(task)  # a running task must be referenced, or it may be collected
        task.add_done_callback(self._tasks.discard)

    async def _work(self, session: ConsumerSession, item: Tracked) -> None:
        """One record, start to finish; then whoever waited behind it (same key) may start."""
        due = _number_header(item.record, "not-before", 0.0)
        if due > time.time():  # a retry not due yet waits outside the concurrency slots
            await asyncio.sleep(due - time.time())
        while session.tracker.owns(item):
            try:
                async with self._slots:
                    started = time.monotonic()
                    attempt, verdict = await self._verdict(item.record)
                # Settled outside the slot: a retry or letter waits for its prefix's commit,
                # and the records before it need slots to get there.
                await self._settle(item, verdict, attempt, started=started)
                break
            except Abandoned:
                break  # its new owner handles it
            except Exception:
                # Read it again: its delivery count grows, so it cannot fail forever.
                log.warning("record %s failed; trying it again", _source(item.record), exc_info=True)
                await asyncio.sleep(RETRY_FAILED_RECORD_S)
        self._done(session, item)

    def _done(self, session: ConsumerSession, item: Tracked) -> None:
        for ready in session.tracker.finish(item):
            self._start(session, ready)

    async def _idle(self) -> bool:
        session = self._session
        if session is None or session.empty_polls < EMPTY_POLLS_WHEN_IDLE or session.tracker.in_flight():
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

    async def _join(self, thread: ThreadPoolExecutor) -> ConsumerSession:
        session_ms = int(self.settings.stale_after_s * 1000)
        config = self.settings.kafka_config(
            group_id=names.GROUP,
            client_id=self.worker_id,
            enable_auto_commit=False,  # commit after processing, not on a timer
            auto_offset_reset="earliest",
            # The 45 s / 3 s defaults make a lab wait most of a minute to notice a dead
            # worker; the broker allows down to group.min.session.timeout.ms.
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(300, session_ms // 4),
            fetch_max_wait_ms=100,  # the default 500 ms shows up as latency
            max_poll_records=MAX_POLL_RECORDS,
            # We poll every POLL_TIMEOUT_MS whatever is in flight, so the default bound holds.
            max_poll_interval_ms=MAX_POLL_INTERVAL_S * 1000,
            isolation_level="read_committed",  # retries appear once their transaction commits
        )
        session = ConsumerSession(thread, OffsetTracker(self.settings.kafka_ordering,
                                                        partition_limit=PARTITION_IN_FLIGHT),
                                  loop=asyncio.get_running_loop())
        session.consumer = await self._in(thread, _subscribed_consumer, config, _Rebalance(self, session))
        return session

    async def _verdict(self, record: ConsumerRecord) -> tuple[int, Verdict]:
        """Count the delivery first: Kafka keeps no delivery count, and a record that kills
        its worker every time must end in the DLQ instead of taking down each new one."""
        attempt = _attempt(record)
        deliveries = await self._count_delivery(record)
        if deliveries > self.settings.max_attempts:
            reason = f"delivered {deliveries - 1} times and never settled: it kills or fails its worker"
            return attempt, Verdict.dead(booking_id_of(record.value), reason)
        return attempt, await self.process(record.value or b"", attempt=attempt, job_id=_source(record))

    async def _count_delivery(self, record: ConsumerRecord) -> int:
        key = keys.kafka_deliveries(record.topic, record.partition, record.offset)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, DELIVERIES_TTL_S)
        deliveries, _ = await pipe.execute()
        return deliveries

    async def _ack(self, item: Tracked) -> None:
        """Its offset is committed once every record before it in its partition is done."""

    async def _retry(self, item: Tracked, delay_s: float, attempt: int) -> None:
        record = item.record
        topic = names.RETRY_TOPICS[min(attempt, len(names.RETRY_TOPICS)) - 1]
        headers = [("jobId", _job_id(record)), ("attempt", str(attempt + 1).encode()),
                   ("not-before", repr(time.time() + delay_s).encode())]
        await self._send_with_commit(item, (topic, record.key, record.value or b"", headers))

    async def _dead_letter(self, item: Tracked, reason: str, attempt: int) -> None:
        record = item.record
        value = record.value or b""
        headers = [("jobId", _job_id(record)), ("reason", reason.encode()),
                   ("attempts", str(attempt).encode()), ("source", _source(record).encode())]
        if len(value) > LETTER_VALUE_MAX_BYTES:
            headers.append(("truncated-from-bytes", str(len(value)).encode()))
            value = value[:LETTER_VALUE_MAX_BYTES]
        await self._send_with_commit(item, (names.TOPIC_DLQ, record.key, value, headers))

    async def _send_with_commit(self, item: Tracked, outgoing: tuple) -> None:
        """Produce `outgoing` in the transaction that commits this record's offset, and wait
        for it: the retry or letter exists exactly when the record counts as consumed."""
        session = self._session
        item.outgoing.append(outgoing)
        item.waiter = asyncio.get_running_loop().create_future()
        if session is None or not session.tracker.owns(item):
            raise Abandoned(_source(item.record))
        self._done(session, item)  # finished: its prefix may now reach it
        await item.waiter

    def _commit_prefixes(self, session: ConsumerSession, partitions: set[TopicPartition] | None = None
                         ) -> dict[TopicPartition, Prefix]:
        """On the consumer thread: commit each partition's contiguous finished prefix, in one
        transaction with the retries and letters of the records in it."""
        prefixes = session.tracker.committable(partitions)
        if not prefixes:
            return prefixes
        offsets = {tp: OffsetAndMetadata(p.offset, "", -1) for tp, p in prefixes.items()}
        producer = session.transactions(self.settings)
        producer.begin_transaction()
        try:
            for prefix in prefixes.values():
                for topic, key, value, headers in prefix.outgoing:
                    producer.send(topic, key=key, value=value, headers=headers)
            producer.send_offsets_to_transaction(offsets, session.consumer.group_metadata())
            producer.commit_transaction()
        except Exception:
            session.abort()  # nothing of it is visible to read_committed readers
            raise
        session.tracker.committed(prefixes)
        for prefix in prefixes.values():
            session.resolve(prefix.records)
        return prefixes

    async def _commit(self, session: ConsumerSession) -> None:
        try:
            prefixes = await session.call(self._commit_prefixes, session)
        except (CommitFailedError, KafkaError) as exc:
            # The group is rebalancing: the records stay in flight, committed on the next
            # round or, once revoked, redelivered to their new owner (idempotent effects).
            log.info("commit not accepted (%s); trying again", exc)
            return
        done = [keys.kafka_deliveries(tp.topic, tp.partition, item.offset)
                for tp, prefix in prefixes.items() for item in prefix.records]
        if done:
            await self.redis.delete(*done)

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
        records = [(l.key.encode(), l.payload.encode(), [("jobId", f"redrive-{l.id}".encode())])
                   for l in letters]
        await self._send(names.TOPIC, records)
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


def _flow_control(session: ConsumerSession, *, stopping: bool) -> None:
    """Pause a partition that holds its limit of records in flight (or every partition, when
    stopping); resume it once it has room again."""
    consumer = session.consumer
    for tp in consumer.assignment():
        hold = stopping or session.tracker.full(tp)
        if hold and tp not in session.paused:
            consumer.pause(tp)
            session.paused.add(tp)
        elif not hold and tp in session.paused:
            resume_partition(consumer, tp)
            session.paused.discard(tp)


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
    never delivered). Drop them: the position never moved past records not handed out, so
    the next fetch reads them again.
    """
    consumer.resume(tp)
    parked = getattr(consumer._fetcher, "_paused_partition_records", {}).pop(tp, None)
    if parked is not None:
        parked.drain()


def _subscribed_consumer(
    config: dict[str, Any], listener: ConsumerRebalanceListener, timeout_s: float = 30.0
) -> KafkaConsumer:
    """Know every topic's partitions before joining: a group leader without metadata
    assigns nothing, and that member idles until the next rebalance."""
    consumer = KafkaConsumer(**config)
    deadline = time.monotonic() + timeout_s
    while any(consumer.partitions_for_topic(t) is None for t in WORK_TOPICS):
        if time.monotonic() > deadline:
            consumer.close()
            raise KafkaError(f"no metadata for {WORK_TOPICS} after {timeout_s:.0f}s")
        time.sleep(0.2)
    consumer.subscribe(list(WORK_TOPICS), listener=listener)
    return consumer


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


def _letter(record: ConsumerRecord) -> DeadLetter:
    return DeadLetter(
        id=f"{record.partition}:{record.offset}",  # partition:offset in bookings.dlq
        booking_id=booking_id_of(record.value),
        reason=_header(record, "reason"),
        attempts=int(_number_header(record, "attempts", 0)),
        payload=preserved(record.value or b""),
        failed_at=record.timestamp / 1000,
        key=preserved(record.key or b""),
    )
