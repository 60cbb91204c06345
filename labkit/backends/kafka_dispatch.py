"""Kafka concurrency beyond partitions (the Confluent Parallel Consumer idea).

A partition is Kafka's unit of order, but the lab only needs one hotel's bookings in order:
records of different keys in one partition may run side by side. The dispatcher takes every
polled record into a *shard* — its partition, its partition and key, or itself, as the
`Ordering` says — and runs each shard's records one at a time, in offset order, while shards
share `concurrency` slots.

What may be committed is each partition's contiguous finished prefix: the lowest offset
received and not finished yet. A record finished past an unfinished one is committed only
once everything before it is: a crash re-runs it (at-least-once), it never skips the other.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)
FAILED_RECORD_PAUSE_S = 1.0  # a record that raised runs again after this long (not a hot loop in an outage)
WAKE_S = 0.5  # a shard waiting for a retry's due time looks up this often (a stop, a revoke)
SLOT_PATIENCE_S = 1.0  # a shard waiting this long for a slot goes before busier ones


class Ordering(StrEnum):
    PARTITION = "partition"  # a partition's records one at a time: parallel only up to the partition count
    KEY = "key"  # one key's (hotel's) records in offset order; different keys side by side
    UNORDERED = "unordered"  # every record on its own: the most parallel, no order kept at all


class Revoked(Exception):
    """The record's partition went to another member: leave the record to it."""


@dataclass
class PartitionProgress:
    """The offsets of one partition this member received and has not finished."""

    unfinished: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset received
    running: int = 0  # records started and not settled
    revoked: bool = False
    # The partition's previous progress here, revoked by a rebalance that gave it back: its
    # records still running finish before these start (no record runs twice at once here).
    before: PartitionProgress | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def receive(self, offset: int) -> None:
        self.unfinished.add(offset)
        self.next_offset = max(self.next_offset or 0, offset + 1)

    def finish_now(self, offset: int) -> None:
        """The record's offset was committed with its route: no later commit may stop below it."""
        self.unfinished.discard(offset)

    async def finish(self, offset: int) -> None:
        self.finish_now(offset)
        await self.notify()

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_idle(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.running == 0)

    def committable(self, *, finishing: int | None = None) -> int | None:
        """The offset to commit: the lowest unfinished one (counting `finishing` as finished),
        else one past the highest received; None when nothing was received."""
        left = self.unfinished - {finishing}
        return min(left) if left else self.next_offset

    def settled_below(self, offset: int) -> bool:
        return all(o >= offset for o in self.unfinished)

    async def wait_settled_below(self, offset: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.revoked or self.settled_below(offset))
        if self.revoked:
            raise Revoked


class Slots:
    """`concurrency` slots. A freed one goes to the waiter with the most work behind it now:
    the hotel with the longest queue is the lane's critical path (a hot hotel's bookings run
    one after another), so it must not wait in line behind every one-booking hotel. But a
    waiter that has waited `patience_s` goes first, oldest first: a one-booking hotel (a
    lesson's, behind a learner's backlog) is never starved.

    A shard whose next record is ready may run it on the slot it holds (`may_keep`) instead
    of queueing again: a hot hotel's chain then never idles between its bookings. It gives
    the slot up to a waiter with more work behind it; and while a waiter is patient, at
    least one slot still turns over to waiters."""

    def __init__(self, count: int, *, patience_s: float = SLOT_PATIENCE_S) -> None:
        self.count = self.free = count
        self.kept = 0  # slots held on by their shard for its next record
        self.patience_s = patience_s
        self._waiting: deque[_Waiter] = deque()  # in arrival order

    async def acquire(self, priority: Callable[[], float]) -> None:
        """`priority()`: the waiter's work behind it, asked again whenever a slot is given."""
        if self.free > 0 and not self._waiting:  # a free slot means nobody waits (release gives it on)
            self.free -= 1
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), time.monotonic(), priority)
        self._waiting.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release()  # granted as it was cancelled: hand it on
            raise
        finally:
            self._forget_done()

    def may_keep(self, holder: ShardSlot) -> bool:
        """Whether `holder` may run its shard's next record on the slot it holds."""
        self._forget_done()
        if not self._waiting:
            return True
        if self._patient() is not None and self.kept - holder.kept >= self.count - 1:
            return False
        return max(w.priority() for w in self._waiting) <= holder.priority()

    def release(self) -> None:
        self._forget_done()
        if self._waiting:
            waiter = self._patient() or max(self._waiting, key=lambda w: w.priority())
            waiter.granted.set_result(None)
            self._forget_done()
            return
        self.free += 1

    def _patient(self) -> _Waiter | None:
        oldest = self._waiting[0]
        return oldest if time.monotonic() - oldest.since >= self.patience_s else None

    def _forget_done(self) -> None:
        """Drop granted and cancelled waiters."""
        if any(w.granted.done() for w in self._waiting):
            self._waiting = deque(w for w in self._waiting if not w.granted.done())


@dataclass
class _Waiter:
    granted: asyncio.Future
    since: float
    priority: Callable[[], float]


class ShardSlot:
    """One of the dispatcher's slots, as held by the record running now (and that record's
    partition progress)."""

    def __init__(self, slots: Slots, progress: PartitionProgress, priority: Callable[[], float]) -> None:
        self._slots, self.progress, self.priority = slots, progress, priority
        self.held = self.kept = False

    async def take(self, *, resuming: bool = False) -> None:
        """`resuming`: a running record taking its slot back goes first."""
        await self._slots.acquire(_resuming_priority if resuming else self.priority)
        self.held = True

    def keep_for_next(self) -> bool:
        """Hold on for the shard's next record, if the slots allow it; else give it back."""
        if self.held and self._slots.may_keep(self):
            if not self.kept:
                self.kept = True
                self._slots.kept += 1
            return True
        self.give_back()
        return False

    def give_back(self) -> None:
        if self.kept:
            self.kept = False
            self._slots.kept -= 1
        if self.held:
            self.held = False
            self._slots.release()


def _resuming_priority() -> float:
    return math.inf


_running_slot: contextvars.ContextVar[ShardSlot | None] = contextvars.ContextVar("kafka_slot", default=None)


class Dispatcher:
    """Runs polled records through `handle` (which raises only when the record must run
    again: a broker outage), shard by shard, at most `concurrency` at once."""

    def __init__(
        self, handle: Callable[[ConsumerRecord], Awaitable[None]], *, concurrency: int,
        ordering: Ordering, due_at: Callable[[ConsumerRecord], float],
    ) -> None:
        self._handle = handle
        self._due_at = due_at
        self._slots = Slots(concurrency)
        self.ordering = Ordering(ordering)
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self._shards: dict[tuple[int, Hashable], deque[ConsumerRecord]] = {}  # by (id(progress), shard)
        self._tasks: set[asyncio.Task] = set()
        self._revoked: dict[TopicPartition, PartitionProgress] = {}
        self._failure: BaseException | None = None
        self.finished: list[ConsumerRecord] = []  # since the owner last took them
        self.stopping = False

    def shard_of(self, record: ConsumerRecord) -> Hashable:
        tp = (record.topic, record.partition)
        match self.ordering:
            case Ordering.PARTITION:
                return tp
            case Ordering.KEY:
                return tp, record.key
            case Ordering.UNORDERED:
                return tp, record.offset

    def submit(self, tp: TopicPartition, records: Iterable[ConsumerRecord]) -> None:
        progress = self.progress.get(tp)
        if progress is None:
            progress = self.progress[tp] = PartitionProgress(before=self._revoked.pop(tp, None))
        for record in records:
            progress.receive(record.offset)
            shard = (id(progress), self.shard_of(record))  # a revoked partition's shards end apart
            if shard in self._shards:
                self._shards[shard].append(record)
                continue
            self._shards[shard] = deque([record])
            task = asyncio.create_task(self._run_shard(shard, progress))
            self._tasks.add(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failure = self._failure or task.exception()

    def raise_failure(self) -> None:
        """What ended a shard for good (it handles every Exception: so a BaseException, the
        process going down) ends the worker too."""
        if self._failure is not None:
            raise self._failure

    def unfinished(self, tp: TopicPartition) -> int:
        progress = self.progress.get(tp)
        return len(progress.unfinished) if progress else 0

    @property
    def idle(self) -> bool:
        return not self._tasks and not any(p.unfinished for p in self.progress.values())

    async def _run_shard(self, shard: tuple[int, Hashable], progress: PartitionProgress) -> None:
        queue = self._shards[shard]
        slot = ShardSlot(self._slots, progress, priority=lambda: len(queue))  # its records' priority: the backlog
        try:
            if progress.before is not None:
                await progress.before.wait_idle()
                progress.before = None
            while queue and not (self.stopping or progress.revoked):
                record = queue[0]
                if slot.held and self._due_at(record) > time.time():
                    slot.give_back()  # a retry not due yet waits without a slot
                elif slot.held:
                    slot.keep_for_next()  # or gives it back, when another shard's turn has come
                if not await self._wait_until_due(record, progress):
                    return
                if not await self._run_one(record, progress, slot):
                    return
                queue.popleft()
                await progress.finish(record.offset)
                self.finished.append(record)
        finally:
            slot.give_back()
            del self._shards[shard]

    async def _wait_until_due(self, record: ConsumerRecord, progress: PartitionProgress) -> bool:
        """A retry waits for its `not-before` time without a slot; False if the wait ended
        for a stop or a revoke instead."""
        while (left := self._due_at(record) - time.time()) > 0:
            if self.stopping or progress.revoked:
                return False
            await asyncio.sleep(min(left, WAKE_S))
        return True

    async def _run_one(self, record: ConsumerRecord, progress: PartitionProgress, slot: ShardSlot) -> bool:
        """Run the record until it settles (True; the shard still holds `slot`), or its
        partition is revoked or the worker stops while a failure waits to run again (False:
        it stays unfinished)."""
        while True:
            if not slot.held:
                await slot.take()
            if self.stopping or progress.revoked:  # it came while this shard waited in line
                slot.give_back()
                return False
            token = _running_slot.set(slot)
            progress.running += 1
            settled = False
            try:
                await self._handle(record)
                settled = True
                return True
            except Revoked:
                return False
            except Exception:
                log.warning("record %s:%d:%d failed; it runs again in %.0fs", record.topic,
                            record.partition, record.offset, FAILED_RECORD_PAUSE_S, exc_info=True)
            finally:
                progress.running -= 1
                _running_slot.reset(token)
                if not settled:
                    slot.give_back()
                await progress.notify()  # a route or a next run may be waiting for `running`
            if self.stopping or progress.revoked:
                return False
            await asyncio.sleep(FAILED_RECORD_PAUSE_S)

    @staticmethod
    async def wait_settled_below(offset: int) -> PartitionProgress | None:
        """Called by the running record at `offset`: wait until every record of its partition
        before it is finished (a route commits the offset past the record, which must not
        skip one of them), giving its slot to them meanwhile. None when not called from a
        record this dispatcher runs."""
        slot = _running_slot.get()
        if slot is None:
            return None
        progress = slot.progress
        if not progress.settled_below(offset) and not progress.revoked:
            slot.give_back()
            try:
                await progress.wait_settled_below(offset)
            finally:
                await slot.take(resuming=True)
        if progress.revoked:
            raise Revoked
        return progress

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """A rebalance took `partitions`: start none of their records any more (the new owner
        runs them from the committed offset), and commit nothing more of them."""
        for tp in partitions:
            progress = self.progress.pop(tp, None)
            if progress is None:
                continue
            progress.revoked = True
            self._revoked[tp] = progress
            notify = asyncio.ensure_future(progress.notify())
            self._tasks.add(notify)
            notify.add_done_callback(self._forget)

    async def drain(self) -> None:
        """A stop: running records finish, nothing new starts."""
        self.stopping = True
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def cancel(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
