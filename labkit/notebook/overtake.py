"""Retries break Kafka's per-hotel order: one hotel's first booking fails once, its retry goes
to `bookings.retry.1` and waits for its backoff there, while the hotel's later bookings (later
offsets of the same partition) go ahead and complete before it.

The failure is scoped to that one booking with what faults.py has: it is poisoned until its
first attempt has failed, then the poison is lifted, so its retry succeeds. Call it inside
`lessons.lesson_faults(lab)`: the poison list is then the lesson's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from labkit.booking import Booking
from labkit.faults import CACHE_S
from labkit.status import State
from labkit.workload import Workload

LANE = "kafka"
FIRST_BOOKING = 30_000  # workload index far from the lesson's other bookings


def one_hotel(workload: Workload, count: int, *, hotel_index: int = 0) -> list[Booking]:
    """`count` bookings of one (hot) hotel, in the workload's order: they share a key, so a
    partition, and Kafka hands them to the worker in this order."""
    found: list[Booking] = []
    start = FIRST_BOOKING
    while len(found) < count:  # a hot hotel gets a booking in about one draw of eight
        found += [b for b in workload.bookings(100, start=start) if b.hotelId == workload.hotel_id(hotel_index)]
        start += 100
    return found[:count]


async def fail_first_once(lab, bookings: Sequence[Booking], *, timeout_s: float = 30.0) -> list[str]:
    """Publish `bookings` to Kafka with the first one poisoned; once its first attempt failed
    (it waits in a retry topic now), lift the poison. Returns the Kafka job ids."""
    first = bookings[0].bookingId
    await lab.faults.set({"poison": first})
    await anyio.sleep(2 * CACHE_S)  # every worker's cached faults name it before it can run
    job_ids = (await lab.publish(bookings, lanes=[LANE]))[LANE]
    with anyio.fail_after(timeout_s):
        while (status := await lab.status.get(LANE, first)) is None or status.attempts < 1 or (
            status.state is not State.RETRYING
        ):
            await anyio.sleep(0.05)
    await lab.faults.set({"poison": ""})  # the retry, due after its backoff, now succeeds
    return job_ids


async def completion_order(lab, bookings: Sequence[Booking], job_ids: Sequence[str]) -> dict[str, Any]:
    """Per booking (publish order): its offset, attempts and when it completed; and which
    later bookings of the hotel completed before the first one (overtook it)."""
    rows = []
    for booking, job_id in zip(bookings, job_ids, strict=True):
        status = await lab.status.get(LANE, booking.bookingId)
        done = [float(h["at"]) for h in status.history if h["state"] == State.COMPLETED]
        rows.append({"booking": booking.bookingId, "offset": int(job_id.split(":")[2]),
                     "attempts": status.attempts, "state": str(status.state),
                     "completed_at": min(done) if done else None})
    first = rows[0]
    overtook = [r["booking"] for r in rows[1:]
                if None not in (r["completed_at"], first["completed_at"]) and r["completed_at"] < first["completed_at"]]
    t0 = min((r["completed_at"] for r in rows if r["completed_at"]), default=0.0)
    for r in rows:  # seconds after the first completion reads better than epoch seconds
        r["completed_at"] = None if r["completed_at"] is None else round(r["completed_at"] - t0, 2)
    return {"hotel": bookings[0].hotelId, "rows": rows, "retried": first["booking"], "overtook": overtook}
