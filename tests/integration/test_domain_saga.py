"""A booking is a saga: no guest holds a confirmation of a booking that ends rejected or
dead-lettered, and every charge of a booking that does not complete is refunded."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from labkit.booking import make_booking
from labkit.pipeline import Outcome, Pipeline, TransientError

pytestmark = pytest.mark.redis

HOTEL = "hotel-saga"
RUN = uuid.uuid4().hex[:6]  # documents outlive the Redis flush between runs


def booking(n: int, hotel: str = HOTEL):
    check_in = datetime.now(UTC).date() + timedelta(days=8)
    return make_booking({"userId": f"user-{n}", "hotelId": hotel, "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=2)}, booking_id=f"bk-saga-{RUN}-{n}")


async def _quiet(progress, note) -> None:
    """The pipeline's progress reports go nowhere here: the tests read the effects."""


@pytest.fixture
async def pipeline(lab):
    effects = lab.effects["kafka"]
    await effects.stock({HOTEL: 1})
    return Pipeline(effects=effects, faults=lab.faults, time_scale=0)


async def run(pipeline, one, attempt: int = 1) -> Outcome:
    return await pipeline.run(one, attempt=attempt, report=_quiet)


async def test_a_rejected_booking_gets_no_confirmation_and_its_charge_back(pipeline):
    guest, late = booking(1), booking(2)
    effects = pipeline.effects
    assert await run(pipeline, guest) is Outcome.CONFIRMED
    assert await run(pipeline, late) is Outcome.REJECTED

    assert [p.suffix for p in effects.confirmations_for(guest.bookingId)] == [".pdf", ".eml"]
    assert await effects.net_charged(guest.bookingId) == guest.amount_cents
    assert effects.confirmations_for(late.bookingId) == []
    assert await effects.charges_made(late.bookingId) == 1
    assert await effects.net_charged(late.bookingId) == 0
    assert not list(effects.drafts_dir.glob(f"{late.bookingId}.*"))


async def test_a_booking_that_fails_after_its_charge_is_compensated_once(lab, pipeline):
    one = booking(3)
    effects = pipeline.effects
    await lab.faults.set(["inventory.fail_times=4"])  # every attempt fails at the last step
    with pytest.raises(TransientError):
        await run(pipeline, one)
    assert effects.confirmations_for(one.bookingId) == []  # rendered, never delivered
    assert await effects.net_charged(one.bookingId) == one.amount_cents

    done = await pipeline.compensate(one, "dead-lettered after 4 attempts")  # the DLQ path
    assert (done.refunded, done.withdrawn) == (True, 2)
    assert await effects.net_charged(one.bookingId) == 0
    assert (await effects.ledger_entry(one.bookingId))["refundReason"].startswith("dead-lettered")
    again = await pipeline.compensate(one, "dead-lettered after 4 attempts")
    assert (again.refunded, again.released, again.withdrawn) == (False, False, 0)


async def test_compensation_gives_a_reserved_stay_back(pipeline):
    first, second = booking(4), booking(5)
    assert await run(pipeline, first) is Outcome.CONFIRMED
    done = await pipeline.compensate(first, "dead-lettered")
    assert done.released and done.withdrawn == 2
    assert pipeline.effects.confirmations_for(first.bookingId) == []
    assert await run(pipeline, second) is Outcome.CONFIRMED  # the room is free again


async def test_a_late_duplicate_of_a_compensated_booking_neither_pays_nor_confirms(pipeline):
    guest, late = booking(6), booking(7)
    effects = pipeline.effects
    await run(pipeline, guest)
    assert await run(pipeline, late) is Outcome.REJECTED
    await pipeline.compensate(guest, "dead-lettered")  # a room frees up meanwhile

    assert await run(pipeline, late) is Outcome.REJECTED  # the duplicate stops at payment
    assert await effects.charges_made(late.bookingId) == 1
    assert effects.confirmations_for(late.bookingId) == []


async def test_a_redriven_booking_pays_again_and_completes(pipeline):
    one = booking(8)
    effects = pipeline.effects
    await effects.charge(one)
    await pipeline.compensate(one, "dead-lettered")

    await pipeline.prepare_redrive(one.bookingId)
    assert await run(pipeline, one) is Outcome.CONFIRMED
    assert await effects.charges_made(one.bookingId) == 2  # the first was refunded
    assert await effects.net_charged(one.bookingId) == one.amount_cents
    assert len(effects.confirmations_for(one.bookingId)) == 2


async def test_a_replay_after_delivery_keeps_the_confirmation(lab, pipeline):
    one = booking(9)
    assert await run(pipeline, one) is Outcome.CONFIRMED
    assert await run(pipeline, one, attempt=2) is Outcome.CONFIRMED  # crashed before the ack
    assert len(pipeline.effects.confirmations_for(one.bookingId)) == 2
    counters = (await lab.metrics.snapshot(["kafka"]))["kafka"].counters
    assert (counters["duplicate_effects"], counters["replays_prevented"]) == (0, 4)


async def test_documents_are_delivered_after_the_lanes_folders_were_removed(pipeline):
    """The effects make their folders once per process; a learner who deletes them while
    workers run (cleaning the lab home by hand) loses the files, never the next booking's."""
    first, second = booking(10), booking(11, hotel="hotel-saga-other")
    effects = pipeline.effects
    assert await run(pipeline, first) is Outcome.CONFIRMED
    shutil.rmtree(effects.drafts_dir.parent)

    assert await run(pipeline, second) is Outcome.CONFIRMED
    assert [p.suffix for p in effects.confirmations_for(second.bookingId)] == [".pdf", ".eml"]
    assert effects.confirmations_for(second.bookingId)[0].read_bytes().startswith(b"%PDF")
    assert not list(effects.drafts_dir.iterdir())  # delivered, and no temp file left behind
