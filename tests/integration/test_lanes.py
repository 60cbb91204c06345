"""One behaviour suite, run against all three technologies with real brokers and real
worker processes (faststream's pattern: the test is written once, each lane plugs in)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from labkit import keys
from labkit.booking import make_booking
from labkit.pipeline import PROGRESS_CHECKPOINTS, STEPS
from labkit.settings import LANES
from labkit.status import State
from labkit.workload import Workload

# Each test runs per lane through conftest's `lane` fixture, which marks the lane's params.
pytestmark = pytest.mark.redis
RETRY_PICKUP_S = 2.0  # how late a due retry may start: a poll, not a queue of other retries


def booking(hotel: str = "hotel-test", n: int = 0, *, days_ahead: int | None = None):
    check_in = datetime.now(UTC).date() + timedelta(days=10 + n % 20 if days_ahead is None else days_ahead)
    return make_booking({"userId": f"user-{n}", "hotelId": hotel, "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=2), "guests": 2})


async def run_to_end(lab, lane, bookings, *, workers=1, concurrency=2, timeout_s=60.0):
    await lab.publish(bookings, [lane])
    with lab.pool(lane, concurrency=concurrency) as pool:
        pool.start(workers)
        states = await lab.wait_for([b.bookingId for b in bookings], [lane], timeout_s=timeout_s)
    return states[lane]


async def test_progress_checkpoints_arrive_in_order(lab, lane):
    one = booking()
    states = await run_to_end(lab, lane, [one])
    assert states[one.bookingId] is State.COMPLETED
    status = await lab.status.get(lane, one.bookingId)
    progress = [int(h["progress"]) for h in status.history if h["progress"] != ""]
    seen = [p for i, p in enumerate(progress) if i == 0 or p != progress[i - 1]]
    assert seen[-len(PROGRESS_CHECKPOINTS):] == list(PROGRESS_CHECKPOINTS)
    assert status.progress == 100
    # Reports are written beside the run (ProgressWriter), yet land in the run's order, each
    # at the time it was made, and all before the final state.
    notes = [h["detail"] for h in status.history if h["state"] == "active"]
    assert notes == ["started", *(note for step in STEPS for note in (
        f"{step.name} started", *([f"{step.name} done"] if step.progress_after is not None else [])))]
    assert status.history[-1]["state"] == "completed"
    times = [float(h["at"]) for h in status.history]
    assert times == sorted(times)


async def test_two_failures_then_success_with_growing_backoff(lab, lane):
    one = booking()
    await lab.faults.set(["payment.fail_times=2"])
    states = await run_to_end(lab, lane, [one])
    assert states[one.bookingId] is State.COMPLETED
    status = await lab.status.get(lane, one.bookingId)
    assert status.attempts == 3
    scheduled = [float(re.search(r"retry in ([\d.]+)s", h["detail"]).group(1))
                 for h in status.history if h["state"] == "retrying"]
    starts = [float(h["at"]) for h in status.history if h["detail"] == "started"]
    failures = [float(h["at"]) for h in status.history if h["state"] == "retrying"]
    assert len(scheduled) == 2 and scheduled[0] < scheduled[1]
    gaps = [start - failed for failed, start in zip(failures, starts[1:], strict=True)]
    # each retry waited its backoff (small slack for clock reads), and not much longer: a
    # due retry is picked up within a poll (BullMQ's delayed set is checked about every second)
    assert all(delay - 0.05 <= gap <= delay + RETRY_PICKUP_S
               for gap, delay in zip(gaps, scheduled, strict=True)), (gaps, scheduled)


async def test_always_failing_booking_is_dead_lettered_then_redriven(lab, lane, settings):
    one = booking()
    backend = lab.backend(lane)
    await backend.faults.set(["payment.fail_rate=1"])
    states = await run_to_end(lab, lane, [one])
    assert states[one.bookingId] is State.DEAD_LETTERED
    status = await backend.status.get(lane, one.bookingId)
    assert status.attempts == settings.max_attempts
    letters = [dl for dl in await backend.dlq_list() if dl.booking_id == one.bookingId]
    assert len(letters) == 1 and letters[0].attempts == settings.max_attempts
    assert "payment failed" in letters[0].reason

    await backend.faults.clear()
    assert await backend.dlq_redrive() >= 1
    with lab.pool(lane) as pool:
        pool.start(1)
        states = await lab.wait_for([one.bookingId], [lane], timeout_s=60)
    assert states[lane][one.bookingId] is State.COMPLETED
    assert [dl for dl in await backend.dlq_list() if dl.booking_id == one.bookingId] == []


async def test_redriving_one_booking_leaves_the_other_letters_in_order(lab, lane):
    """Only the named bookings start over; the others' letters stay, in their order, and a
    later full redrive takes exactly them. On Kafka, whose redrive mark is an offset, a letter
    taken from the middle neither comes back nor is redriven twice."""
    backend = lab.backend(lane)
    bookings = [booking("hotel-redrive", n) for n in range(3)]
    await lab.faults.set(["payment.fail_rate=1"])
    states = await run_to_end(lab, lane, bookings, timeout_s=90)
    assert set(states.values()) == {State.DEAD_LETTERED}
    order = [letter.booking_id for letter in await backend.dlq_list()]
    assert sorted(order) == sorted(b.bookingId for b in bookings)
    first, middle, last = order
    await lab.faults.clear()

    assert await backend.dlq_redrive(booking_ids=[middle, "bk-never-dead-lettered"]) == 1
    assert [letter.booking_id for letter in await backend.dlq_list()] == [first, last]
    assert (await backend.stats()).dlq_size == 2
    assert await backend.dlq_redrive(booking_ids=[middle]) == 0  # its letter is gone
    assert (await lab.status.get(lane, middle)).state is State.QUEUED

    with lab.pool(lane) as pool:
        pool.start(1)
        done = await lab.wait_for([middle], [lane], timeout_s=60)
    assert done[lane][middle] is State.COMPLETED
    assert await lab.status.many(lane, [first, last]) == {first: State.DEAD_LETTERED, last: State.DEAD_LETTERED}

    assert await backend.dlq_redrive() == 2  # the other two, not the middle one again
    assert await backend.dlq_list() == [] and (await backend.stats()).dlq_size == 0
    assert await lab.redis.scard(keys.KAFKA_REDRIVEN) == 0  # Kafka's offset covers them all now


async def test_invalid_jobs_go_straight_to_the_dlq_and_workers_keep_going(lab, lane):
    backend = lab.backend(lane)
    await backend.publish_raw("this is not JSON")
    missing = {"jobId": "job-bad", "type": "booking", "data": {"bookingId": "bk-missing-fields"},
               "timestamp": "2026-01-01T00:00:00Z"}
    await backend.publish_raw(json.dumps(missing))
    good = booking()
    await lab.publish([good], [lane])
    with lab.pool(lane, concurrency=2) as pool:
        pool.start(1)
        # the bad ones too: on Kafka they sit on another partition than the good booking
        states = (await lab.wait_for([good.bookingId, "bk-missing-fields"], [lane], timeout_s=60))[lane]
    assert states[good.bookingId] is State.COMPLETED

    letters = await backend.dlq_list()
    by_reason = {dl.reason: dl for dl in letters}
    not_json = [dl for reason, dl in by_reason.items() if "not JSON" in reason]
    missing_fields = [dl for dl in letters if dl.booking_id == "bk-missing-fields"]
    assert not_json and not_json[0].attempts == 1
    assert missing_fields and missing_fields[0].attempts == 1
    assert "userId" in missing_fields[0].reason and "Field required" in missing_fields[0].reason
    dead = await backend.status.get(lane, "bk-missing-fields")
    assert dead.state is State.DEAD_LETTERED and dead.attempts == 1


async def test_kill_minus_nine_during_payment_charges_exactly_once(lab, lane, settings):
    # Slow enough to land the kill inside the payment step, after the card was charged.
    slow = settings.with_(time_scale=0.5)
    lab.settings = slow
    one = booking()
    backend = lab.backend(lane)
    await lab.publish([one], [lane])
    with lab.pool(lane) as first:
        first.start(1)
        deadline = time.monotonic() + 30
        while await backend.effects.charges_made(one.bookingId) == 0:
            assert time.monotonic() < deadline, "payment never happened"
            await asyncio.sleep(0.02)
        status = await backend.status.get(lane, one.bookingId)
        assert status.detail == "payment started"  # still inside the payment step
        first.kill()
    with lab.pool(lane) as second:
        second.start(1)
        states = await lab.wait_for([one.bookingId], [lane], timeout_s=60)
    assert states[lane][one.bookingId] is State.COMPLETED
    assert await backend.effects.charges_made(one.bookingId) == 1
    assert (await backend.effects.ledger_entry(one.bookingId))["refunded"] is False


async def test_sixty_bookings_for_ten_rooms_across_four_workers(lab, lane):
    hotel = "hotel-scarce"
    await lab.stock({hotel: 10}, [lane])
    bookings = [booking(hotel, n, days_ahead=10) for n in range(60)]  # rooms are per night
    states = await run_to_end(lab, lane, bookings, workers=4, concurrency=4, timeout_s=120)
    outcome = list(states.values())
    assert outcome.count(State.COMPLETED) == 10
    assert outcome.count(State.REJECTED) == 50
    backend = lab.backend(lane)
    assert await backend.effects.rooms_left(hotel) == 0
    for b in bookings:
        entry = await backend.effects.ledger_entry(b.bookingId)
        assert entry["refunded"] is (states[b.bookingId] is State.REJECTED)
        assert await backend.effects.charges_made(b.bookingId) == 1
        # only a guest whose booking completed holds a confirmation (PDF and e-mail)
        held = [p.suffix for p in backend.effects.confirmations_for(b.bookingId)]
        assert held == ([".pdf", ".eml"] if states[b.bookingId] is State.COMPLETED else []), (b.bookingId, held)


@pytest.mark.kafka
async def test_kafka_processes_one_hotels_records_in_offset_order(lab):
    bookings = [booking(f"hotel-{n % 3}", n) for n in range(30)]
    await run_to_end(lab, "kafka", bookings, workers=2, concurrency=3)
    backend = lab.backend("kafka")
    first_start: dict[str, list[tuple[int, float]]] = {}
    for b in bookings:
        status = await backend.status.get("kafka", b.bookingId)
        _topic, _partition, offset = status.job_id.split(":")
        started = min(float(h["at"]) for h in status.history if h["detail"] == "started")
        first_start.setdefault(b.hotelId, []).append((int(offset), started))
    for hotel, runs in first_start.items():
        by_offset = [t for _o, t in sorted(runs)]
        assert by_offset == sorted(by_offset), f"{hotel} processed out of offset order"


@pytest.mark.slow
@pytest.mark.bullmq
@pytest.mark.streams
@pytest.mark.kafka
async def test_three_hundred_bookings_with_flaky_payments_on_every_lane(lab):
    bookings = Workload(seed=3, rooms_per_hotel=1000).bookings(300)
    await lab.stock(Workload(seed=3, rooms_per_hotel=1000).rooms)
    await lab.faults.set(["payment.fail_rate=0.2"])
    await lab.publish(bookings)
    async with lab.workers(count=3, concurrency=4):
        states = await lab.wait_for([b.bookingId for b in bookings], timeout_s=240)
    for lane in LANES:
        backend = lab.backend(lane)
        lost = [b for b, s in states[lane].items() if s is None or s not in
                (State.COMPLETED, State.REJECTED, State.DEAD_LETTERED)]
        assert lost == [], f"{lane}: {len(lost)} bookings lost"
        charges = [await backend.effects.charges_made(b.bookingId) for b in bookings]
        assert max(charges) <= 1, f"{lane}: duplicate charges"
        retried = (await backend.metrics.snapshot([lane]))[lane].counters["retried"]
        assert retried > 0  # the failure rate really bit


async def test_injected_crash_mid_step_is_recovered_by_another_worker(lab, lane):
    one = booking()
    await lab.faults.set(["pdf.crash_rate=1"])
    await lab.publish([one], [lane])
    with lab.pool(lane) as pool:
        pool.start(2)
        states = await lab.wait_for([one.bookingId], [lane], timeout_s=60)
        exit_codes = list(pool.exit_codes().values())
    assert states[lane][one.bookingId] is State.COMPLETED
    assert exit_codes.count(70) == 1  # one worker died mid-step; the other finished the job
    assert await lab.effects[lane].charges_made(one.bookingId) == 1


@pytest.mark.bullmq
async def test_bullmq_rate_limiter_spreads_jobs_over_time(lab, settings):
    lab.settings = settings.with_(bullmq_rate_limit_per_s=4)
    bookings = [booking(n=n) for n in range(12)]
    states = await run_to_end(lab, "bullmq", bookings, workers=2, concurrency=4)
    assert set(states.values()) == {State.COMPLETED}
    backend = lab.backend("bullmq")
    starts = []
    for b in bookings:
        status = await backend.status.get("bullmq", b.bookingId)
        starts.append(min(float(h["at"]) for h in status.history if h["detail"] == "started"))
    # 12 jobs at 4 per second across both workers: the last starts at least 2 s after the first
    assert max(starts) - min(starts) >= 1.9


async def test_a_retry_after_the_documents_exist_replays_them(lab, lane):
    one = booking()
    backend = lab.backend(lane)
    await backend.faults.set(["inventory.fail_times=1"])  # fails after the PDF and e-mail
    states = await run_to_end(lab, lane, [one])
    assert states[one.bookingId] is State.COMPLETED
    assert (await backend.status.get(lane, one.bookingId)).attempts == 2
    counters = (await backend.metrics.snapshot([lane]))[lane].counters
    assert counters["replays_prevented"] >= 3  # charge, PDF, e-mail replayed, not redone
    assert counters["duplicate_effects"] == 0
    assert (backend.effects.confirmations_dir / f"{one.bookingId}.pdf").read_bytes().startswith(b"%PDF")
    assert b"Subject: Your booking" in (backend.effects.outbox_dir / f"{one.bookingId}.eml").read_bytes()
