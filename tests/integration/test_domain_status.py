"""A booking's status only moves forward: publishing it again never reopens it; the
dead-letter redrive is the one explicit way back to queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labkit.booking import make_booking
from labkit.status import State

pytestmark = pytest.mark.redis


def booking(n: int = 0):
    check_in = datetime.now(UTC).date() + timedelta(days=5)
    return make_booking({"userId": f"user-{n}", "hotelId": "hotel-1", "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=2)}, booking_id=f"bk-status-{n}")


@pytest.mark.streams
async def test_publishing_a_finished_booking_again_leaves_it_finished(lab):
    one = booking()
    backend = lab.backend("streams")
    await backend.publish_many([one])
    await lab.status.transition("streams", one.bookingId, State.COMPLETED, attempt=1)

    await backend.publish_many([one])
    status = await lab.status.get("streams", one.bookingId)
    assert status.state is State.COMPLETED
    assert (await lab.status.counts("streams"))["completed"] == 1


async def test_claim_new_queues_only_bookings_the_lane_has_not_seen(lab):
    known, fresh = booking(1), booking(2)
    assert await lab.status.claim_new("kafka", [(known.bookingId, "job-1", 1.0)]) == {known.bookingId}
    await lab.status.transition("kafka", known.bookingId, State.ACTIVE, progress=20)

    new = await lab.status.claim_new(
        "kafka", [(known.bookingId, "job-1", 2.0), (fresh.bookingId, "job-2", 3.0)]
    )
    assert new == {fresh.bookingId}
    assert (await lab.status.get("kafka", known.bookingId)).state is State.ACTIVE
    queued = await lab.status.get("kafka", fresh.bookingId)
    assert (queued.state, queued.job_id, queued.published_at) == (State.QUEUED, "job-2", 3.0)
    assert (await lab.status.counts("kafka"))["queued"] == 1


async def test_only_an_explicit_redrive_puts_a_dead_letter_back_to_queued(lab):
    one = booking(3)
    await lab.status.claim_new("bullmq", [(one.bookingId, "job-3", 1.0)])
    await lab.status.transition("bullmq", one.bookingId, State.DEAD_LETTERED, attempt=4)

    refused = await lab.status.transition("bullmq", one.bookingId, State.QUEUED, progress=0)
    assert not refused.applied
    assert (await lab.status.get("bullmq", one.bookingId)).state is State.DEAD_LETTERED

    redriven = await lab.status.transition(
        "bullmq", one.bookingId, State.QUEUED, progress=0, attempt=0, redrive=True
    )
    assert redriven.applied and redriven.old is State.DEAD_LETTERED
    again = await lab.status.transition("bullmq", one.bookingId, State.COMPLETED, attempt=1)
    assert again.first_terminal  # the redriven run counts once more when it finishes


async def test_a_finished_booking_is_counted_with_its_latency_once_in_the_same_change(lab):
    """The counter and the latency histogram move in the status change's own script: a late
    duplicate adds nothing, and a worker dying after the change cannot leave it uncounted."""
    one, unpublished = booking(4), booking(5)
    published_at = datetime.now(UTC).timestamp() - 0.3  # finished 0.3 s after its publish
    await lab.status.claim_new("streams", [(one.bookingId, "job-4", published_at)])
    await lab.status.transition("streams", one.bookingId, State.COMPLETED, attempt=1)
    await lab.status.transition("streams", one.bookingId, State.COMPLETED, attempt=2)  # a late copy
    await lab.status.transition("streams", unpublished.bookingId, State.DEAD_LETTERED, attempt=1)

    metrics = (await lab.metrics.snapshot(["streams"]))["streams"]
    assert (metrics.counters["completed"], metrics.counters["dead_lettered"]) == (1, 1)
    assert metrics.latency_count == 1  # no publish time, no latency
    assert (metrics.buckets[0.25], metrics.buckets[0.5]) == (0, 1)
    assert 0.3 <= metrics.latency_sum_s < 0.5
