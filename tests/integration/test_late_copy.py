"""A late copy of a booking that already ended without its charge (dead-lettered or rejected)
must not run: at-least-once delivery can hand a worker a redelivered record, or a retry chain
of a second copy, after the first copy was dead-lettered and refunded. Found by `labkit chaos`
(payment-outage, Kafka lane at 120 bookings: a group rebalance redelivered records, the
copies retried on their own, one was dead-lettered during the outage and another completed
after it, so a dead-lettered booking was charged and confirmed)."""

from __future__ import annotations

import pytest

from labkit.backends.base import Action
from labkit.booking import Envelope
from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("ended", [State.DEAD_LETTERED, State.REJECTED])
async def test_a_late_copy_of_a_booking_that_ended_uncharged_is_not_run(lab, lane, ended):
    workload = Workload(seed=43)
    await lab.stock(workload.rooms, [lane])
    [booking] = workload.bookings(1)
    envelope = Envelope.wrap(booking)
    await lab.status.transition(lane, booking.bookingId, State.QUEUED, published_at=envelope.published_at)
    await lab.status.transition(lane, booking.bookingId, ended, attempt=4, detail="gave up")

    verdict = await lab.backend(lane).process(envelope.to_json(), attempt=4)

    assert (verdict.action, verdict.final) == (Action.ACK, ended)
    effects = lab.effects[lane]
    assert await effects.charges_made(booking.bookingId) == 0
    assert effects.confirmations_for(booking.bookingId) == []
    assert (await lab.status.get(lane, booking.bookingId)).state is ended
