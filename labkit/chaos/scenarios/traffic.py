"""Faults in the traffic itself: poison messages, a payment outage, a burst for too few rooms,
the same Idempotency-Key posted concurrently."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import anyio
import httpx

from labkit.booking import Booking, make_booking
from labkit.chaos.run import Run, api
from labkit.status import State

MALFORMED = (
    "not json at all",
    "{}",
    '{"jobId": "x", "type": "booking", "data": {}}',
    (  # a well-formed envelope around a booking that checks out before it checks in
        '{"jobId": "x", "type": "booking", "timestamp": "2030-01-01T00:00:00Z", "data": '
        '{"bookingId": "bk-bad", "userId": "u", "hotelId": "h", "checkIn": "2030-01-05", '
        '"checkOut": "2030-01-01", "guests": 1}}'
    ),
    "\x00\xff\xfe binary",
    "[1, 2, 3]",
)
POISON_SHARE = 10  # one booking in ten fails on every attempt
POISON_SETTLES_S = 180.0  # all attempts of every poisoned booking, with backoff, on a busy machine


async def poison(run: Run) -> None:
    bookings = run.workload.bookings(run.bookings)
    poisoned = [b.bookingId for b in bookings[::POISON_SHARE]]
    await run.lab.faults.set({"poison": ",".join(poisoned)})
    before = {lane: len(await run.lab.backend(lane).dlq_list(10_000)) for lane in run.lanes}
    for payload in MALFORMED:
        for lane in run.lanes:
            await run.lab.backend(lane).publish_raw(payload)
    await run.feed(bookings)
    # The poison stays set until every poisoned booking has used up its attempts: lifted
    # sooner, a retry would simply succeed.
    await run.lab.wait_for(poisoned, run.lanes, timeout_s=POISON_SETTLES_S)
    run.fault_over()
    run.figures["expected_dead_letters"] = len(poisoned)
    run.figures["dlq_before"] = before
    run.note(f"{len(MALFORMED)} malformed messages per lane and {len(poisoned)} bookings that "
             "fail every attempt; each must be dead-lettered once")


async def payment_outage(run: Run) -> None:
    outage_s = max(3.0, run.bookings / 20)
    bookings = run.workload.bookings(run.bookings)
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, bookings)
        await run.lab.faults.set({"payment.fail_rate": 1})
        await anyio.sleep(outage_s)
        await run.lab.faults.set({"payment.fail_rate": 0})
    run.fault_over()
    run.note(f"payment fails 100 % for {outage_s:.0f} s, then recovers")
    await _retry_figures(run, bookings)


async def _retry_figures(run: Run, bookings: list[Booking]) -> None:
    """When each retry ran, and when it would have run without jitter (same failures, the
    backoff's full ceiling, as pipeline.backoff_s would give with no random half); and how many
    bookings were dead-lettered with attempts left."""
    settings = run.lab.settings
    with_jitter, without = [], []
    early_dead = 0
    for lane in run.lanes:
        for booking in bookings:
            status = await run.lab.status.get(lane, booking.bookingId)
            if status is None:
                continue
            if status.state is State.DEAD_LETTERED and status.attempts < settings.max_attempts:
                early_dead += 1
            for entry in status.history:
                delay = re.search(r"retry in ([0-9.]+)s", entry.get("detail", ""))
                if entry["state"] == "retrying" and delay:
                    at, attempt = float(entry["at"]), int(entry["attempt"])
                    with_jitter.append(at + float(delay.group(1)))
                    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
                    without.append(at + ceiling)
    start = min(with_jitter + without, default=0.0)
    run.figures["retries_at_s"] = {"with jitter": [t - start for t in with_jitter],
                                   "without jitter": [t - start for t in without]}
    run.figures["dead_lettered_with_attempts_left"] = early_dead


async def burst_inventory(run: Run) -> None:
    """Every booking wants the same night at one hotel: exactly `rooms` may complete."""
    rooms = max(20, run.bookings // 50)
    hotel = "hotel-burst"
    await run.stock({hotel: rooms})
    night = datetime.now(UTC).date() + timedelta(days=30)
    bookings = [
        make_booking({"userId": f"user-{n:04d}", "hotelId": hotel, "checkIn": night,
                      "checkOut": night + timedelta(days=1), "guests": 1},
                     booking_id=f"bk-{run.workload.run_id}-burst-{n:05d}")
        for n in range(run.bookings)
    ]
    await run.feed(bookings, batches=5, pause_s=0.0)
    run.fault_over()
    run.figures["rooms"] = rooms
    run.note(f"{len(bookings)} bookings for {rooms} room-nights (one night, one hotel)")


RACE_POSTS = 50


async def idempotency_race(run: Run) -> None:
    """Each round posts one body RACE_POSTS times at once under one Idempotency-Key; a 409
    (the first request is still publishing) is retried as a client would."""
    rounds = max(2, run.bookings // 25)
    distinct: Counter[int] = Counter()
    async with api(run.lab.settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        for booking in run.workload.bookings(rounds):
            ids: set[str] = set()
            key = f"race-{booking.bookingId}"
            async with anyio.create_task_group() as group:
                for _ in range(RACE_POSTS):
                    group.start_soon(_post_until_answered, run, client, booking, key, ids)
            distinct[len(ids)] += 1
    run.fault_over()
    run.figures["booking_ids_per_key"] = dict(distinct)
    run.note(f"{rounds} keys × {RACE_POSTS} concurrent POSTs; booking ids per key: {dict(distinct)}")


async def _post_until_answered(run: Run, client: httpx.AsyncClient, booking: Booking, key: str,
                               ids: set[str]) -> None:
    while (answer := await run.post(client, booking, idempotency_key=key)).status == 409:
        await anyio.sleep(0.2)
    if answer.booking_id:
        ids.add(answer.booking_id)
