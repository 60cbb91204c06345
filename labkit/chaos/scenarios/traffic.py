"""Faults in the traffic itself: poison messages, a payment outage, a burst for too few rooms,
the same Idempotency-Key posted concurrently."""

from __future__ import annotations

import time
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
    """A clean batch first (the baseline the runner measures p99 on), then a batch of the same
    size with malformed messages and always-failing bookings mixed in."""
    clean = run.workload.bookings(run.bookings, start=run.bookings)
    run.baseline_ids = [b.bookingId for b in clean]
    await run.feed(clean)
    await run.lab.wait_for(run.baseline_ids, run.lanes, timeout_s=POISON_SETTLES_S)
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
    run.note(f"{len(clean)} clean bookings (the p99 baseline), then {len(MALFORMED)} malformed "
             f"messages per lane and {len(poisoned)} bookings that fail every attempt among "
             f"{len(bookings)}; each poison must be dead-lettered once")


async def payment_outage(run: Run) -> None:
    outage_s = max(3.0, run.bookings / 20)
    bookings = run.workload.bookings(run.bookings)
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, bookings)
        await run.lab.faults.set({"payment.fail_rate": 1})
        began = time.time()
        await anyio.sleep(outage_s)
        await run.lab.faults.set({"payment.fail_rate": 0})
    run.fault_over()
    run.figures["outage_began_at"] = began
    jitter = "with jitter" if run.lab.settings.backoff_jitter else "without jitter"
    run.note(f"payment fails 100 % for {outage_s:.0f} s, then recovers; retries {jitter}")


async def retry_figures(run: Run) -> None:
    """After the drain: when each retry really started (its attempt's first status entry), in
    seconds after the outage began; and how many bookings were dead-lettered with attempts left."""
    bookings = run.workload.bookings(run.bookings)
    began = run.figures["outage_began_at"]
    label = "with jitter" if run.lab.settings.backoff_jitter else "without jitter"
    starts: list[float] = []
    early_dead = 0
    for lane in run.lanes:
        for booking in bookings:
            status = await run.lab.status.get(lane, booking.bookingId)
            if status is None:
                continue
            if status.state is State.DEAD_LETTERED and status.attempts < run.lab.settings.max_attempts:
                early_dead += 1
            starts += [at - began for at in retry_starts(status.history)]
    run.figures["retries_at_s"] = {label: sorted(starts)}
    run.figures["peak_retries_per_s"] = {label: peak_rate(starts)}
    run.figures["dead_lettered_with_attempts_left"] = early_dead


def retry_starts(history: list[dict]) -> list[float]:
    """The epoch time each retry (attempt 2, 3, …) began: its first entry in the history."""
    first: dict[int, float] = {}
    for entry in history:
        attempt = int(entry.get("attempt") or 0)
        if entry["state"] == "active" and attempt > 1:
            first.setdefault(attempt, float(entry["at"]))
    return list(first.values())


def peak_rate(times: list[float], window_s: float = 0.5) -> float:
    """The most retries that began in any `window_s`, per second: how hard the storm hits."""
    ordered, most, low = sorted(times), 0, 0
    for high, t in enumerate(ordered):
        while t - ordered[low] > window_s:
            low += 1
        most = max(most, high - low + 1)
    return round(most / window_s, 1)


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
