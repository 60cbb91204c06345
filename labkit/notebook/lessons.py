"""Small helpers the notebooks share, so cells stay a few lines long.

- `setup()`: seeds and offline plotly, once per notebook.
- `Workers`: worker pools for several lanes at once, stopped together (and in parallel).
- `pool()` / `kill()`: one lane's WorkerPool from async code, its blocking calls (a graceful
  stop waits for in-flight jobs, kill -9 waits for the process) run in a thread so other
  coroutines — other lanes under `asyncio.gather`, a live board — keep running meanwhile.
- Order checks: when each booking started, per lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

from labkit.settings import LANES


def setup(seed: int = 7) -> None:
    """Fix seeds so this notebook's output is stable, and embed plotly.js for HTML exports."""
    from labkit.notebook.widgets import use_static_plotly

    random.seed(seed)
    use_static_plotly()


class Workers:
    """`async with Workers(lab, ["bullmq", "kafka"], workers=2) as pools:` — each lane's
    WorkerPool; on exit all are stopped gracefully, side by side."""

    def __init__(
        self, lab, lanes: Iterable[str] = LANES, *, workers: int = 1, concurrency: int = 1
    ) -> None:
        self.pools = {lane: lab.pool(lane, concurrency=concurrency) for lane in lanes}
        self.workers = workers

    def __getitem__(self, lane: str):
        return self.pools[lane]

    async def __aenter__(self) -> Self:
        for pool in self.pools.values():
            pool.start(self.workers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.pools.values()))


@contextlib.asynccontextmanager
async def pool(lab, lane: str, *, workers: int = 0, concurrency: int = 1) -> AsyncIterator[Any]:
    """`async with lessons.pool(lab, "kafka", workers=2) as pool:` — like `with lab.pool(...)`,
    but starting and the graceful stop on exit happen off the event loop."""
    workers_pool = lab.pool(lane, concurrency=concurrency)
    try:
        if workers:
            await asyncio.to_thread(workers_pool.start, workers)
        yield workers_pool
    finally:
        await asyncio.to_thread(workers_pool.stop)


async def kill(workers_pool, pid: int | None = None) -> int:
    """kill -9 one worker of `workers_pool` (WorkerPool.kill) without blocking the event loop."""
    return await asyncio.to_thread(workers_pool.kill, pid)


async def wait_for_workers(
    lab,
    lane: str,
    count: int,
    *,
    timeout_s: float = 30.0,
    pids: Iterable[int] | None = None,
) -> int:
    """Until `count` workers of `lane` have checked in (a worker process needs a moment);
    returns how many did. With `pids`, only those processes count (e.g. `pool.pids`), not
    workers of an earlier run that checked in a few seconds ago."""
    deadline = time.monotonic() + timeout_s
    mine = None if pids is None else set(pids)
    while True:
        workers = (await lab.backend(lane).live_workers()).values()
        live = sum(1 for info in workers if mine is None or info.get("pid") in mine)
        if live >= count or time.monotonic() > deadline:
            return live
        await asyncio.sleep(0.2)


# -- order -------------------------------------------------------------------------------------
async def first_starts(lab, lane: str, booking_ids: Sequence[str]) -> dict[str, float]:
    """When each booking's first attempt started on `lane` (epoch seconds)."""
    store = lab.status
    out = {}
    for status in await asyncio.gather(*(store.get(lane, b) for b in booking_ids)):
        if status is None:
            continue
        starts = [float(h["at"]) for h in status.history if h.get("detail") == "started"]
        if starts:
            out[status.booking_id] = starts[0]
    return out


def kafka_offset_order_kept(
    bookings: Sequence[Any], kafka_ids: Sequence[str], starts: dict[str, float]
) -> dict[str, bool]:
    """Per hotel: did its bookings start in the order of their offsets in the partition?"""
    by_hotel: dict[str, list[tuple[int, float]]] = {}
    for booking, job_id in zip(bookings, kafka_ids, strict=True):
        _topic, _partition, offset = job_id.split(":")
        if booking.bookingId in starts:
            by_hotel.setdefault(booking.hotelId, []).append(
                (int(offset), starts[booking.bookingId])
            )
    return {
        hotel: [t for _o, t in sorted(pairs)] == sorted(t for _o, t in pairs)
        for hotel, pairs in by_hotel.items()
    }
