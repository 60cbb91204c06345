"""Lesson 06's experiment: kill -9 a worker right after it charged the card, then see what
each technology does with the booking it was holding."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio

from labkit.booking import Booking
from labkit.notebook.background import task_group
from labkit.pipeline import STEPS

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
        await workers[lane].kill_async()  # stays dead: no restart by the pool's supervisor
        killed_at = time.time()
        workers[lane].start(1)  # a fresh worker
        await lab.wait_for([booking.bookingId], [lane], timeout_s=timeout_s)
    s = await lab.status.get(lane, booking.bookingId)
    starts = [float(h["at"]) for h in s.history if h["detail"] == "started"]
    return {"lane": lane, "state": s.state.value, "runs": len(starts), "attempt": s.attempts,
            "charges": await lab.effects[lane].charges_made(booking.bookingId),
            "recovered_after_s": round(starts[-1] - killed_at, 2)}


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
