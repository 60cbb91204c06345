"""Lesson 06's experiment: kill -9 a worker right after it charged the card, then see what
each technology does with the booking it was holding.

On a used lab a worker the learner left running may have taken the booking, so the victim is
the worker that holds it, asked of the technology itself (`holder_pid`), not the lesson's own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import anyio

from labkit import kafka_admin, names
from labkit.booking import Booking
from labkit.pipeline import STEPS
from labkit.tasks import task_group

CHARGED = next(s.progress_after for s in STEPS if s.name == "payment")  # progress once paid


async def crash_after_payment(
    lab, lane: str, booking: Booking, *, timeout_s: float
) -> dict[str, Any]:
    """Publish `booking` to `lane`, kill -9 its worker once the card is charged, start a fresh
    worker and wait for the booking to finish. Returns its final state, how often it started,
    its attempt count, the charges made and how soon after the kill it started again."""
    async with lab.workers([lane], count=1) as workers:
        await lab.publish([booking], [lane])
        with anyio.fail_after(timeout_s):
            while (s := await lab.status.get(lane, booking.bookingId)) is None or s.progress < CHARGED:
                await anyio.sleep(0.05)
        for pid in await holder_pids(lab, lane, booking):
            if pid in workers[lane].pids:
                await workers[lane].kill_async(pid)  # stays dead: no restart by the pool's supervisor
            else:  # a worker the lesson did not start (one you left running)
                os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        workers[lane].start(1)  # a fresh worker
        await lab.wait_for([booking.bookingId], [lane], timeout_s=timeout_s)
    s = await lab.status.get(lane, booking.bookingId)
    starts = [float(h["at"]) for h in s.history if h["detail"] == "started"]
    return {"lane": lane, "state": s.state.value, "runs": len(starts), "attempt": s.attempts,
            "charges": await lab.effects[lane].charges_made(booking.bookingId),
            "recovered_after_s": round(starts[-1] - killed_at, 2)}


def worker_pid(worker_id: str) -> int:
    """Worker ids are `<host>-<pid>-<random>` (BullMQ worker name, Streams consumer, Kafka client)."""
    return int(worker_id.rsplit("-", 2)[1])


async def holder_pids(lab, lane: str, booking: Booking) -> list[int]:
    """The worker holding `booking` now, as its technology records it: the Streams consumer
    the entry is pending for, the owner of the Kafka partition its hotel hashes to. A BullMQ
    job's lock names only a random token, so there: every live worker of the lane."""
    if lane == "bullmq":
        return sorted({info["pid"] for info in (await lab.backend(lane).live_workers()).values()})
    if lane == "streams":
        return [await _streams_holder(lab.redis, f"job-{booking.bookingId}")]
    view = await anyio.to_thread.run_sync(kafka_admin.group_view, lab.settings)
    owner = {row["partition"]: row["consumer"] for row in view.rows}[kafka_admin.partition_for(booking.hotelId)]
    return [int(owner.removeprefix("pid "))]


async def _streams_holder(redis, job_id: str) -> int:
    for consumer in await redis.xinfo_consumers(names.STREAM, names.GROUP):
        if not consumer["pending"]:
            continue
        pending = await redis.xpending_range(names.STREAM, names.GROUP, min="-", max="+",
                                             count=consumer["pending"], consumername=consumer["name"])
        for entry in pending:
            for _id, fields in await redis.xrange(names.STREAM, entry["message_id"], entry["message_id"]):
                if fields.get("jobId") == job_id:
                    return worker_pid(consumer["name"])
    raise LookupError(f"{job_id} is pending for no consumer")


async def crash_each_lane(
    lab, lanes: Sequence[str], bookings: Sequence[Booking], *, timeout_s: float
) -> list[dict[str, Any]]:
    """`crash_after_payment` on every lane at once, one booking each; results in lane order."""
    results: dict[str, dict[str, Any]] = {}

    async def crash(lane: str, booking: Booking) -> None:
        results[lane] = await crash_after_payment(lab, lane, booking, timeout_s=timeout_s)

    async with task_group() as tasks:
        for lane, booking in zip(lanes, bookings, strict=True):
            tasks.start_soon(crash, lane, booking)
    return [results[lane] for lane in lanes]
