"""A job BullMQ fails by itself (not through the lab's own dead-letter path) still ends as a
dead letter with a final status: the sweeper finds it in the failed set, once."""

from __future__ import annotations

import asyncio

import pytest
from bullmq import UnrecoverableError, Worker

from labkit import names
from labkit.status import State
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.bullmq]


async def failed_by_bullmq(backend, settings, reason: str) -> None:
    """A plain bullmq Worker (not the lab's pipeline) fails the queued job: BullMQ fails it."""
    async def process(job, token):
        raise UnrecoverableError(reason)

    worker = Worker(names.QUEUE, process, {"connection": settings.redis_url})
    try:
        for _ in range(150):
            if await backend.queue().getJobCountByTypes("failed"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("BullMQ never failed the job")
    finally:
        await worker.close()


async def test_a_job_bullmq_failed_by_itself_is_dead_lettered_once(lab, settings):
    booking = Workload(seed=8).bookings(1)[0]
    await lab.publish([booking], ["bullmq"])
    backend = lab.backend("bullmq")

    await failed_by_bullmq(backend, settings, "lost its lock")

    await backend._sweep_failed()
    status = await backend.status.get("bullmq", booking.bookingId)
    assert status.state == State.DEAD_LETTERED
    assert status.detail == "failed by BullMQ: lost its lock"
    assert [letter.booking_id for letter in await backend.dlq_list()] == [booking.bookingId]

    await backend._sweep_failed()  # the next sweep finds nothing new
    assert len(await backend.dlq_list()) == 1


async def test_a_job_without_a_booking_that_bullmq_failed_by_itself_gets_a_letter(lab, settings):
    """`42` added from bull-board and failed by BullMQ itself (not by the lab's processor)."""
    backend = lab.backend("bullmq")
    await backend.queue().add(names.BULLMQ_JOB_NAME, 42, {"jobId": "scalar-42"})

    await failed_by_bullmq(backend, settings, "stalled too often")

    await backend._sweep_failed()
    await backend._sweep_failed()  # once, not once per sweep
    letters = await backend.dlq_list()
    assert [(letter.booking_id, letter.reason) for letter in letters] == [(None, "failed by BullMQ: stalled too often")]
    assert "42" in letters[0].payload  # what the job carried, kept
