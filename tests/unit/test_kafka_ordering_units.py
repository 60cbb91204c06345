"""The arithmetic behind the Kafka worker's ordering: what a partition may commit, how slots
are shared, how a lesson reads runs (how many at once, which kept their order); and the
bound on a route's transactional wait."""

from __future__ import annotations

import asyncio

import pytest
from kafka.errors import KafkaTimeoutError

from labkit.backends.kafka import ROUTE_WAIT_S, _wait_for
from labkit.backends.kafka_dispatch import PartitionProgress, ShardSlot, Slots
from labkit.notebook.ordering import Run, one_at_a_time_in_order, peak_at_once


def test_only_the_contiguous_finished_prefix_is_committable():
    progress = PartitionProgress()
    assert progress.committable() is None  # nothing received: nothing to commit
    for offset in (10, 11, 12, 13):
        progress.receive(offset)
    progress.finish_now(11)
    progress.finish_now(12)
    assert progress.committable() == 10  # 11 and 12 finished past the unfinished 10
    assert progress.committable(finishing=10) == 13  # a route of 10 commits up to 13
    progress.finish_now(10)
    progress.finish_now(13)
    assert progress.committable() == 14
    assert progress.settled_below(14) and not PartitionProgress(unfinished={3}).settled_below(4)


def test_peak_counts_runs_at_the_same_moment():
    runs = [Run("a", 0, 0.0, 1.0), Run("b", 1, 0.5, 1.5), Run("c", 2, 1.0, 2.0)]
    assert peak_at_once(runs) == 2  # c starts as a ends: not three at once
    assert peak_at_once([]) == 0


def test_in_order_means_one_at_a_time_by_offset():
    assert one_at_a_time_in_order([Run("a", 0, 0.0, 1.0), Run("a", 1, 1.0, 2.0)])
    assert not one_at_a_time_in_order([Run("a", 0, 0.0, 1.0), Run("a", 1, 0.5, 2.0)])  # overlapped
    assert not one_at_a_time_in_order([Run("a", 1, 0.0, 1.0), Run("a", 0, 1.0, 2.0)])  # offsets reversed


async def test_a_freed_slot_goes_to_the_waiter_with_the_most_work_behind_it():
    slots, order = Slots(1), []
    await slots.acquire(lambda: 0)  # held

    async def wait(name: str, backlog: int) -> None:
        await slots.acquire(lambda: backlog)
        order.append(name)
        slots.release()

    waiters = [asyncio.create_task(wait(name, backlog)) for name, backlog in (("one", 1), ("hot", 20), ("three", 3))]
    await asyncio.sleep(0)  # all three queue up
    slots.release()
    await asyncio.gather(*waiters)
    assert order == ["hot", "three", "one"]  # the hot hotel's chain first: it sets the lane's pace
    assert slots.free == 1


async def test_a_cancelled_waiter_does_not_lose_a_slot():
    slots = Slots(1)
    await slots.acquire(lambda: 0)
    waiter = asyncio.create_task(slots.acquire(lambda: 5))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slots.release()
    assert slots.free == 1


async def test_a_waiter_past_its_patience_goes_before_busier_ones():
    """A one-booking hotel (a lesson's, behind a learner's backlog) is never starved."""
    slots, order = Slots(1, patience_s=0.05), []
    await slots.acquire(lambda: 0)

    async def wait(name: str, backlog: int) -> None:
        await slots.acquire(lambda: backlog)
        order.append(name)

    lesson = asyncio.create_task(wait("lesson", 1))
    await asyncio.sleep(0.1)  # the lesson's booking has waited past its patience
    backlog = asyncio.create_task(wait("backlog", 300))
    await asyncio.sleep(0)
    slots.release()
    await lesson
    slots.release()
    await backlog
    assert order == ["lesson", "backlog"]


async def test_a_shard_keeps_its_slot_for_its_next_record_but_one_slot_turns_over_to_the_patient():
    """A hot hotel's chain runs on without queueing again; while a waiter has waited past its
    patience, at least one slot still goes to waiters, and with one slot that is the slot."""
    slots = Slots(3, patience_s=0.05)
    holders = [ShardSlot(slots, PartitionProgress(), priority=lambda: 1) for _ in range(3)]
    for holder in holders:
        await holder.take()
    assert all(holder.keep_for_next() for holder in holders)  # nobody waits: all three run on
    assert slots.kept == 3

    waiter = asyncio.create_task(slots.acquire(lambda: 1))
    await asyncio.sleep(0.1)  # it waited past its patience
    assert not holders[0].keep_for_next()  # two others kept: this one turns over
    await waiter
    assert (slots.kept, holders[0].held) == (2, False)
    assert holders[1].keep_for_next()  # no waiter left

    single = Slots(1, patience_s=0.05)
    chain = ShardSlot(single, PartitionProgress(), priority=lambda: 20)
    await chain.take()
    lesson = asyncio.create_task(single.acquire(lambda: 1))
    await asyncio.sleep(0)
    assert chain.keep_for_next()  # the lesson's booking has not waited long yet
    await asyncio.sleep(0.1)
    assert not chain.keep_for_next()  # now it has: the only slot goes to it
    await lesson
    assert single.kept == 0 and single.free == 0


async def test_a_shard_gives_its_slot_up_to_a_waiter_with_more_work_behind_it():
    slots = Slots(1)
    short = ShardSlot(slots, PartitionProgress(), priority=lambda: 2)
    await short.take()
    backlog = {"hot": 2}
    hot = asyncio.create_task(slots.acquire(lambda: backlog["hot"]))
    await asyncio.sleep(0)
    assert short.keep_for_next()  # 2 left here, 2 there: no more work behind the waiter... yet
    backlog["hot"] = 21  # the hot hotel's records kept arriving while it waited
    assert not short.keep_for_next()
    await hot
    assert (short.held, slots.kept, slots.free) == (False, 0, 0)


class _Request:
    def __init__(self, answered: bool) -> None:
        self.answered, self.waited_ms = answered, None

    def wait(self, timeout_ms=None) -> bool:
        self.waited_ms = timeout_ms
        return self.answered


class _Producer:
    class _sender:  # kafka-python's attribute name
        @staticmethod
        def wakeup() -> None:
            pass


def test_a_transactional_request_is_waited_for_with_a_bound():
    """kafka-python's commit_transaction waits for ever; a route waits ROUTE_WAIT_S and gives up."""
    answered = _Request(answered=True)
    _wait_for(_Producer(), answered)
    assert answered.waited_ms == ROUTE_WAIT_S * 1000
    with pytest.raises(KafkaTimeoutError):
        _wait_for(_Producer(), _Request(answered=False))
