"""Publishing a booking a lane already knows (a re-run notebook cell, an API retry) is a
no-op on every lane: no state moves, nothing runs twice, no counter changes."""

from __future__ import annotations

import asyncio

import pytest

from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def drain(lab, lane):
    await asyncio.wait_for(lab.backend(lane).run_worker(concurrency=2, burst=True), timeout=90)


async def test_republishing_finished_bookings_changes_nothing(lab, lane):
    workload = Workload(seed=23, rooms_per_hotel=100)
    bookings = workload.bookings(5)
    await lab.stock(workload.rooms, [lane])
    first_ids = (await lab.publish(bookings, [lane]))[lane]
    await drain(lab, lane)
    before = [await lab.status.get(lane, b.bookingId) for b in bookings]
    assert all(s.terminal for s in before)
    counters = await lab.metrics.snapshot([lane])  # this lane only: others may still be busy

    again = (await lab.publish(bookings + bookings[:1], [lane]))[lane]
    await drain(lab, lane)  # whatever a re-publish sent would run now

    assert again == first_ids + first_ids[:1]  # the original job ids answer
    after = [await lab.status.get(lane, b.bookingId) for b in bookings]
    assert [(s.state, len(s.history)) for s in after] == [(s.state, len(s.history)) for s in before]
    assert await lab.metrics.snapshot([lane]) == counters
    for one in bookings:
        assert await lab.backend(lane).effects.charges_made(one.bookingId) <= 1
