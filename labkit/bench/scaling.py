"""The scaling curve: bookings/s with 1, 2, 4, 8 worker processes, steps I/O-bound.

With `time_scale` > 0 each step sleeps, as a call to a payment provider would wait: more
processes overlap more waiting, so the curve climbs until the lane's own limit (partitions,
per-hotel order) or the machine's cores, which the lab's own CPU per booking uses up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import asdict, dataclass

from labkit import kafka_admin
from labkit.lab import Lab
from labkit.settings import Settings
from labkit.workload import Workload

START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Point:
    lane: str
    workers: int
    bookings: int
    per_s: float

    def as_dict(self) -> dict:
        return asdict(self)


async def scaling_curve(
    settings: Settings, lane: str, *, workers: tuple[int, ...], bookings: int, time_scale: float,
    concurrency: int = 1, timeout_s: float = 600.0,
) -> list[Point]:
    """One point per worker count: start that many processes, wait until all check in, then
    time `bookings` fresh bookings from publish to terminal."""
    settings = settings.with_(time_scale=time_scale)
    workload = Workload(seed=12, rooms_per_hotel=1_000_000)
    points = []
    async with Lab(settings) as lab:
        await lab.stock(workload.rooms, [lane])
        for index, count in enumerate(workers):
            batch = workload.bookings(bookings, start=index * bookings)
            with lab.pool(lane, concurrency=concurrency) as pool:
                pool.start(count)
                await _checked_in(lab, lane, count)
                started = time.perf_counter()
                await lab.publish(batch, [lane])
                await lab.wait_for([b.bookingId for b in batch], [lane], timeout_s=timeout_s, poll_s=0.1)
                points.append(Point(lane, count, bookings, bookings / (time.perf_counter() - started)))
    return points


def non_decreasing_until(points: list[dict], cores: int, *, tolerance: float = 0.1) -> bool:
    """Each point (`Point.as_dict()`) up to `cores` workers moves at least (1 - tolerance) ×
    the one before: what an I/O-bound curve does on any machine; beyond the cores the lab's
    own CPU per booking may bend it down, so those points are not judged."""
    within = [p for p in sorted(points, key=lambda p: p["workers"]) if p["workers"] <= max(cores, 1)]
    return all(b["per_s"] >= a["per_s"] * (1 - tolerance) for a, b in itertools.pairwise(within))


async def _checked_in(lab: Lab, lane: str, count: int) -> None:
    """Process start-up is not throughput; a Kafka consumer also needs its group joined."""
    backend = lab.backend(lane)
    async with asyncio.timeout(START_TIMEOUT_S):
        while len(await backend.live_workers()) < count:
            await asyncio.sleep(0.2)
    if lane == "kafka":
        await kafka_admin.wait_for_stable_group(lab.settings, members=count)
