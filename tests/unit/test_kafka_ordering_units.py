"""The arithmetic behind the Kafka worker's ordering: what a partition may commit, and how a
lesson reads runs (how many at once, which kept their order)."""

from __future__ import annotations

import asyncio

from labkit.backends.kafka_dispatch import PartitionProgress, Slots
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
    await slots.acquire(0)  # held

    async def wait(name: str, backlog: int) -> None:
        await slots.acquire(backlog)
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
    await slots.acquire(0)
    waiter = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slots.release()
    assert slots.free == 1


async def test_a_waiter_past_its_patience_goes_before_busier_ones():
    """A one-booking hotel (a lesson's, behind a learner's backlog) is never starved."""
    slots, order = Slots(1, patience_s=0.05), []
    await slots.acquire(0)

    async def wait(name: str, backlog: int) -> None:
        await slots.acquire(backlog)
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
