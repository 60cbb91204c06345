"""Apache Kafka (kafka-python): topic `bookings` keyed by hotelId, group `booking-workers`.

- Producer: acks=all and idempotence (kafka-python 3.0's defaults, stated anyway).
- Consumer: auto-commit off; an offset is committed only after its record was handled, so a
  crash means redelivery (at-least-once), never loss.
- Concurrency beyond partitions (`kafka_dispatch`): one hotel's records run in offset order,
  different hotels of one partition side by side, up to `concurrency` at once
  (`LABKIT_KAFKA_ORDERING`: `key`, or `partition` — a partition's records one at a time,
  Kafka's classic unit of parallelism — or `unordered`). Each partition's contiguous
  finished prefix is committed, never a record still running.
- The worker keeps polling while records run: a slow record never outlasts
  `max.poll.interval.ms`, and a rebalance is joined at once. A partition with
  PARTITION_BACKLOG records unfinished here is paused until half of them are done.
- Retries never block a partition: a failed record is re-published to `bookings.retry.N`
  with a `not-before` header and its offset committed; it waits for that time without
  taking a slot.
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
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.structs import ConsumerGroupMetadata, MemberState, OffsetAndMetadata

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
from labkit.backends.kafka_dispatch import Dispatcher, Ordering, Revoked
from labkit.round_trip import coalescer
from labkit.text import as_text as _s

log = logging.getLogger(__name__)
T = TypeVar("T")
DLQ_REDRIVE_GROUP = "booking-dlq-redrive"
WORK_TOPICS = (names.TOPIC, *names.RETRY_TOPICS)
POLL_TIMEOUT_MS = 200
KEEP_POLLING_S = 1.0  # while a stop's drain waits for running records: well inside max.poll.interval
COMMIT_EVERY_S = 0.2  # the finished prefix is committed this often while records flow
# Records one partition may have unfinished here before it is paused: enough for many keys
# to run side by side, few enough that a rebalance hands little over.
PARTITION_BACKLOG = 64
KEEP_POLLING_TIMEOUT_MS = 100  # time for a rebalance's join to make progress in that poll
MIN_POLL_INTERVAL_S = 60
DLQ_READ_TIMEOUT_S = 30.0  # reading a partition's letters to its end; an error, not a hang
STUCK_CHECK_AFTER_S = 10.0  # a healthy join takes well under a second
NOT_WAITING_FOR_US = {"Stable", "Empty", "Dead"}  # group states in which no rebalance waits for a member
EMPTY_POLLS_WHEN_IDLE = 3  # burst mode: this many empty polls in a row, then look at offsets
# The producer sends at most 1 MiB a request: a bigger poison value is cut in its letter.
LETTER_VALUE_MAX_BYTES = 512 * 1024
DELIVERIES_TTL_S = 24 * 3600  # a delivery count left by a record never committed expires
# A dead worker's open route transaction holds back read_committed readers of its partition
# until the broker aborts it: a route takes milliseconds, so let that be seconds, not a minute.
ROUTE_TIMEOUT_MS = 10_000
ROUTE_WAIT_S = 15.0  # a route's transactional request unanswered this long is given up
ROUTE_TRIES = 3  # a route fenced by a rebalance under way is tried again in the new generation
ROUTE_REJOIN_WAIT_S = 10.0  # a rebalance of the lab's group settles well within this
OutgoingRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class ConsumerSession:
    """One membership in the group: the consumer, the one thread it may be used from, and
    what it paused and committed."""

    thread: ThreadPoolExecutor
    consumer: KafkaConsumer
    held: set[TopicPartition] = field(default_factory=set)  # paused: too much unfinished
    dropped: set[TopicPartition] = field(default_factory=set)  # revoked here: read again if given back
    unstable_since: float | None = None  # when it left the stable group; None while stable
    empty_polls: int = 0
    committed: dict[TopicPartition, int] = field(default_factory=dict)  # what we last committed
    committed_at: float = 0.0

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
        self._dispatcher: Dispatcher | None = None  # while `_run` runs records
        self._commit_lock = asyncio.Lock()  # offset commits one at a time: none moves an offset back
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
                transactional_id=f"labkit-router-{self.worker_id}", transaction_timeout_ms=ROUTE_TIMEOUT_MS,
                max_block_ms=int(ROUTE_WAIT_S * 1000)))
            router.init_transactions()
            self._router = router
        return self._router

    def _warm_router(self) -> None:
        """Start the transactional producer (init_transactions: a broker round trip or more)
        before it is needed: the lane's first retry or letter then does not wait for it."""
        try:
            self._router_client()
        except KafkaError as exc:  # the first route tries again, and fails loudly if it must
            log.info("transactional producer not started yet (%s)", exc)

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
        dispatcher = self._dispatcher = Dispatcher(
            self._deliver, concurrency=concurrency, ordering=Ordering(self.settings.kafka_ordering), due_at=_due_at)
        session = self._session = await self._join(thread, concurrency)
        warm_router = asyncio.ensure_future(self._in(self._producer_thread, self._warm_router))
        try:
            while not stop.is_set():
                batch, assigned = await session.call(_poll, session.consumer)
                dispatcher.raise_failure()
                if moved := set(dispatcher.progress) - assigned:
                    # A rebalance gave them to another member, which runs them from the
                    # committed offset: start none of their records here, commit nothing.
                    dispatcher.revoke(moved)
                    session.held -= moved
                    session.dropped |= moved
                if back := session.dropped & assigned:
                    # Given back: what was dropped here must be read again, from the committed
                    # offset (kafka-python may have kept the old position, and a pause).
                    await session.call(_from_committed, session.consumer, back)
                    session.dropped -= back
                    batch = {tp: records for tp, records in batch.items() if tp not in back}
                session.note_membership()
                if await self._stuck(session):
                    # kafka-python 3.0 can hang in a join that a metadata change interrupted:
                    # the broker then drops us while we wait. Start over with a new member.
                    log.warning("consumer stuck outside a stable group; rejoining as a new member")
                    await session.call(session.consumer.close)
                    dispatcher.revoke(list(dispatcher.progress))
                    session = self._session = await self._join(thread, concurrency)
                    continue
                for tp, records in batch.items():
                    dispatcher.submit(tp, records)
                session.empty_polls = 0 if batch else session.empty_polls + 1
                await self._hold_full_partitions(session)
                if not batch or time.monotonic() - session.committed_at >= COMMIT_EVERY_S:
                    await self._commit_progress(session)
            # Stopping: records running finish (polling meanwhile keeps the membership), then
            # what they finished is committed.
            await self._polling_while(session, dispatcher.drain())
            dispatcher.raise_failure()
            await self._commit_progress(session)
        finally:
            self._session = self._dispatcher = None
            dispatcher.cancel()
            await warm_router
            await session.call(session.consumer.close)  # leaves the group: partitions move at once
            thread.shutdown(wait=False)

    async def _polling_while(self, session: ConsumerSession, work: Awaitable[T]) -> T:
        """Await `work` while polling with every partition paused: Kafka evicts a member that
        has not polled within max.poll.interval.ms, and a rebalance is joined at once."""
        task = asyncio.ensure_future(work)
        await session.call(_pause_all, session.consumer)
        try:
            while not task.done():
                await asyncio.wait([task], timeout=KEEP_POLLING_S)
                if not task.done():
                    await session.call(_poll_paused, session.consumer)
        finally:
            if not task.done():
                task.cancel()
        return task.result()

    async def _hold_full_partitions(self, session: ConsumerSession) -> None:
        """Pause a partition once it has PARTITION_BACKLOG records unfinished here; resume it
        when half of them are done. Others keep flowing: one hot hotel never stops a lane."""
        dispatcher = self._dispatcher
        full = {tp for tp in dispatcher.progress if dispatcher.unfinished(tp) >= PARTITION_BACKLOG}
        hold = full - session.held
        release = {tp for tp in session.held if dispatcher.unfinished(tp) <= PARTITION_BACKLOG // 2}
        if hold or release:
            await session.call(_hold_and_release, session.consumer, hold, release)
            session.held = (session.held | hold) - release

    def _on_lost(self, loop: asyncio.AbstractEventLoop, lost: set[TopicPartition]) -> None:
        """kafka-python calls this (on its I/O thread) when the group dropped us: the lost
        partitions' positions start again from the committed offsets, so whatever of them
        is received here must not run. (A partition a rebalance merely moved keeps running
        until the poll's assignment shows it gone; one it gave back keeps its position.)"""
        dispatcher = self._dispatcher
        if dispatcher is not None and lost:
            loop.call_soon_threadsafe(dispatcher.revoke, lost)

    async def _idle(self) -> bool:
        session, dispatcher = self._session, self._dispatcher
        if session is None or dispatcher is None:
            return False
        if session.empty_polls < EMPTY_POLLS_WHEN_IDLE or not dispatcher.idle:
            return False
        caught_up = await session.call(_caught_up, session.consumer)
        return caught_up and session.empty_polls >= EMPTY_POLLS_WHEN_IDLE and dispatcher.idle  # no batch since

    async def _stuck(self, session: ConsumerSession) -> bool:
        """Outside a stable group while the broker's group is in no rebalance (it went on
        without us), or longer than any join may wait (max_poll_interval): stuck, not waiting."""
        if session.unstable_since is None:
            return False
        waited_s = time.monotonic() - session.unstable_since
        if waited_s > session.consumer.config["max_poll_interval_ms"] / 1000 + 15:
            return True
        if waited_s < STUCK_CHECK_AFTER_S or time.monotonic() - self._checked_at < STUCK_CHECK_AFTER_S:
            return False
        self._checked_at = time.monotonic()  # an admin round trip: not on every poll
        # Stable: it went on with the others. Empty (or gone): it went on without anyone, what
        # a lone worker's hung join looks like; before, that waited out the 75 s bound.
        return await self._in(self._inspect_thread, kafka_admin.group_state, self.settings) in NOT_WAITING_FOR_US

    def _max_poll_interval_ms(self, concurrency: int) -> int:
        # The worker polls while records run; only the stop's drain waits for records, and
        # it polls too. A generous bound still catches a worker that hangs for real.
        return MIN_POLL_INTERVAL_S * 1000

    async def _join(self, thread: ThreadPoolExecutor, concurrency: int) -> ConsumerSession:
        session_ms = int(self.settings.stale_after_s * 1000)
        config = self.settings.kafka_config(
            group_id=names.GROUP,
            client_id=self.worker_id,
            enable_auto_commit=False,  # commit the finished prefix, not on a timer
            isolation_level="read_committed",  # an aborted retry route is never delivered
            auto_offset_reset="earliest",
            # The 45 s / 3 s defaults make a lab wait most of a minute to notice a dead
            # worker; the broker allows down to group.min.session.timeout.ms.
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(300, session_ms // 4),
            fetch_max_wait_ms=100,  # the default 500 ms shows up as latency
            max_poll_records=PARTITION_BACKLOG,
            max_poll_interval_ms=self._max_poll_interval_ms(concurrency),
        )
        consumer = await self._in(thread, KafkaConsumer, **config)
        listener = _Losses(partial(self._on_lost, asyncio.get_running_loop()))
        subscribed = await self._in(thread, kafka_admin.subscribed, consumer, list(WORK_TOPICS), listener=listener)
        return ConsumerSession(thread, subscribed)

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
        deliveries, _ = await coalescer(self.redis).run_all([lambda pipe: pipe.incr(key),
                                                             lambda pipe: pipe.expire(key, DELIVERIES_TTL_S)])
        return deliveries

    async def _ack(self, record: ConsumerRecord) -> None:
        """The offset is committed once every record before it in its partition is finished."""

    async def _retry(self, record: ConsumerRecord, delay_s: float, attempt: int) -> None:
        topic = names.RETRY_TOPICS[min(attempt, len(names.RETRY_TOPICS)) - 1]
        headers = [("jobId", _job_id(record)), ("attempt", str(attempt + 1).encode())]
        await self._route(topic, (record.key, record.value or b"", headers), record, delay_s=delay_s)

    async def _dead_letter(self, record: ConsumerRecord, reason: str, attempt: int) -> None:
        value = record.value or b""
        headers = [("jobId", _job_id(record)), ("reason", reason.encode()),
                   ("attempts", str(attempt).encode()), ("source", _source(record).encode())]
        if len(value) > LETTER_VALUE_MAX_BYTES:
            headers.append(("truncated-from-bytes", str(len(value)).encode()))
            value = value[:LETTER_VALUE_MAX_BYTES]
        await self._route(names.TOPIC_DLQ, (record.key, value, headers), record)

    async def _route(self, topic: str, outgoing: OutgoingRecord, source: ConsumerRecord, *,
                     delay_s: float | None = None) -> None:
        """Produce `outgoing` and commit the offset past `source` in one transaction. That
        offset must not skip an unfinished record, so the route first waits for its
        partition's earlier records (other keys' records run side by side). A rebalance
        under way fences the transaction (IllegalGeneration): it is tried again in the new
        generation, while the partition is still ours. A retry's `delay_s` counts from its
        send, not from before those waits."""
        tp = TopicPartition(source.topic, source.partition)
        progress = await Dispatcher.wait_settled_below(source.offset)
        fenced = None  # the generation a try was fenced in
        for tries_left in reversed(range(ROUTE_TRIES)):
            group = await self._stable_group(after=fenced)
            async with self._commit_lock:  # one commit at a time: a later one never moves an offset back
                if progress is not None and progress.revoked:
                    raise Revoked
                commit_at = progress.committable(finishing=source.offset) if progress else source.offset + 1
                try:
                    await self._in(self._producer_thread, self._route_in_transaction, topic, outgoing,
                                   {tp: commit_at}, group, delay_s)
                except CommitFailedError:
                    if not tries_left:
                        raise
                    fenced = getattr(group, "generation_id", None)
                    continue
                if progress is not None:
                    progress.finish_now(source.offset)  # committed: the next commit must not see it unfinished
                if self._session is not None:
                    committed = self._session.committed
                    committed[tp] = max(committed.get(tp, -1), commit_at)
                return

    async def _stable_group(self, *, after: int | None = None) -> ConsumerGroupMetadata | str:
        """The group membership a route's offsets are committed under, once it is stable and,
        after a fenced try, in a newer generation (a snapshot of plain fields: safe off the
        consumer's thread, which may be in a poll)."""
        session = self._session
        if session is None:
            return names.GROUP
        deadline = time.monotonic() + ROUTE_REJOIN_WAIT_S
        while ((group := session.consumer.group_metadata()).state != MemberState.STABLE
               or (after is not None and group.generation_id <= after)):
            if time.monotonic() > deadline:
                break  # the broker decides: a stale generation fails the route, and it runs again
            await asyncio.sleep(0.05)
        return group

    def _route_in_transaction(self, topic: str, outgoing: OutgoingRecord, offsets: dict[TopicPartition, int],
                              group, delay_s: float | None = None) -> None:
        router = self._router_client()
        try:
            router.begin_transaction()
            key, value, headers = outgoing
            if delay_s is not None:
                headers = [*headers, ("not-before", repr(time.time() + delay_s).encode())]
            router.send(topic, key=key, value=value, headers=headers)
            _send_offsets(router, {tp: OffsetAndMetadata(at, "", -1) for tp, at in offsets.items()}, group)
            _commit_transaction(router)
        except Exception:
            # Nothing was routed and the offset stays: the record runs again (here, or at
            # the member that owns its partition now, if a rebalance fenced us). After a
            # timeout the outcome is unknown: a new producer's start fences this one and
            # settles its transaction (a record routed twice is absorbed downstream).
            try:
                _wait_for(router, router._transaction_manager.begin_abort())
            except KafkaError:  # a fatal state (fenced producer), or no answer: start a new one next time
                router.close(timeout=0)
                self._router = None
            raise

    async def _commit_progress(self, session: ConsumerSession) -> None:
        """Commit each partition's finished prefix: its lowest unfinished offset, or, with
        nothing unfinished, its position (past the markers routed retries' transactions
        leave behind their records, so a drained topic's lag reads 0)."""
        session.committed_at = time.monotonic()
        if session.unstable_since is not None:
            return  # not a member of a stable group: the coordinator refuses any commit
        if self._commit_lock.locked():
            return  # a route is committing: try again next time, polling must go on meanwhile
        dispatcher = self._dispatcher
        async with self._commit_lock:
            positions = await session.call(_positions, session.consumer)
            offsets = {}
            for tp, position in positions.items():
                progress = dispatcher.progress.get(tp)
                at = min(progress.unfinished) if progress and progress.unfinished else position
                if at > session.committed.get(tp, -1):
                    offsets[tp] = at
            await self._commit_offsets(session, offsets)
        finished, dispatcher.finished = dispatcher.finished, []
        if finished:  # settled either way: a redelivery after a refused commit is not a crash to count
            await self.redis.delete(*(keys.kafka_deliveries(r.topic, r.partition, r.offset) for r in finished))

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


def _wait_for(producer: KafkaProducer, request) -> None:
    """Wait for one transactional request as kafka-python's own methods do, but not for ever:
    they wait without a timeout, and a transaction coordinator lost mid-request (its broker
    died) left a route, and the commit lock it holds, waiting for good."""
    producer._sender.wakeup()
    if not request.wait(timeout_ms=ROUTE_WAIT_S * 1000):
        raise KafkaTimeoutError(f"no answer to a transactional request within {ROUTE_WAIT_S:.0f} s")


def _send_offsets(producer: KafkaProducer, offsets: dict[TopicPartition, OffsetAndMetadata], group) -> None:
    """`send_offsets_to_transaction`, with the bound of `_wait_for`."""
    _wait_for(producer, producer._transaction_manager.send_offsets_to_transaction(offsets, group))


def _commit_transaction(producer: KafkaProducer) -> None:
    """`commit_transaction`, with the bound of `_wait_for`."""
    _wait_for(producer, producer._transaction_manager.begin_commit())


def _poll(consumer: KafkaConsumer) -> tuple[dict[TopicPartition, list[ConsumerRecord]], set[TopicPartition]]:
    """A poll's records and the assignment it left."""
    return consumer.poll(timeout_ms=POLL_TIMEOUT_MS), consumer.assignment()


def _from_committed(consumer: KafkaConsumer, partitions: set[TopicPartition]) -> None:
    """Resume `partitions` and read them again from the group's committed offsets."""
    for tp in partitions:
        resume_partition(consumer, tp)
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def _pause_all(consumer: KafkaConsumer) -> None:
    consumer.pause(*(consumer.assignment() - consumer.paused()))


def _poll_paused(consumer: KafkaConsumer) -> None:
    """A poll that only keeps the membership alive. A partition a rebalance assigned
    meanwhile is not paused: rewind whatever it returned and pause it too."""
    for tp, records in consumer.poll(timeout_ms=KEEP_POLLING_TIMEOUT_MS).items():
        consumer.seek(tp, records[0].offset)
    _pause_all(consumer)


def _hold_and_release(consumer: KafkaConsumer, hold: set[TopicPartition], release: set[TopicPartition]) -> None:
    assigned = consumer.assignment()
    consumer.pause(*(hold & assigned))
    for tp in release & assigned:
        resume_partition(consumer, tp)


class _Losses(ConsumerRebalanceListener):
    def __init__(self, on_lost: Callable[[set[TopicPartition]], None]) -> None:
        self._on_lost = on_lost

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._on_lost(set(lost))

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing yet: an eager rebalance revokes every partition and gives most back, with
        their positions kept (kafka-python), so their received records must still run."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: a partition's progress starts with its first record."""


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


def _due_at(record: ConsumerRecord) -> float:
    """When a retry may run (its `not-before` header); 0 for a first delivery."""
    return _number_header(record, "not-before", 0.0)


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
