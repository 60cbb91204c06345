"""Retries break Kafka's per-hotel order: a retried booking is overtaken by its hotel's later ones."""

from __future__ import annotations

import pytest

from labkit.notebook import lessons, overtake
from labkit.workload import Workload

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_one_hotel_gives_bookings_of_a_single_hotel_in_workload_order():
    workload = Workload(seed=42)
    bookings = overtake.one_hotel(workload, 5)
    assert {b.hotelId for b in bookings} == {workload.hotel_id(0)}
    assert [b.bookingId for b in bookings] == sorted(b.bookingId for b in bookings)


async def test_later_bookings_of_the_hotel_complete_before_the_retried_first(lab, settings):
    workload = Workload(seed=42)
    await lab.stock(workload.rooms, lanes=["kafka"])
    bookings = overtake.one_hotel(workload, 4)
    # The lesson's backoff (base 1 s: a retry waits 0.5-1 s), not the suite's short one: on
    # a busy machine a 0.15 s wait let the retry tie with the hotel's next booking.
    async with lessons.lesson_faults(lab, ["retry.backoff_base_s=1"]), lab.workers(["kafka"], count=1, concurrency=2):
        job_ids = await overtake.fail_first_once(lab, bookings)
        await lab.wait_for([b.bookingId for b in bookings], ["kafka"], timeout_s=60)
    run = await overtake.completion_order(lab, bookings, job_ids)
    offsets = [r["offset"] for r in run["rows"]]
    assert offsets == sorted(offsets)  # published in order, one partition
    assert [r["state"] for r in run["rows"]] == ["completed"] * 4
    assert run["rows"][0]["attempts"] >= 2 and all(r["attempts"] == 1 for r in run["rows"][1:])
    assert run["overtook"] and set(run["overtook"]) <= {b.bookingId for b in bookings[1:]}
