"""Burst mode (drain, then exit), per lane: the worker returns by itself once every booking
it was given is finished, as arq's burst workers do in tests."""

from __future__ import annotations

import asyncio

import pytest

from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def test_a_burst_worker_drains_the_lane_then_returns(lab, lane):
    bookings = Workload(seed=11, rooms_per_hotel=100).bookings(4)
    await lab.stock(Workload(seed=11, rooms_per_hotel=100).rooms, [lane])
    await lab.publish(bookings, [lane])
    backend = lab.backend(lane)

    await asyncio.wait_for(backend.run_worker(concurrency=2, burst=True), timeout=90)

    statuses = [await lab.status.get(lane, b.bookingId) for b in bookings]
    assert [s.state for s in statuses] == [State.COMPLETED] * len(bookings)
