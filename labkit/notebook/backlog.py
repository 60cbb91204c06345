"""A used lab, before a lesson runs: bookings the learner left queued, workers they left running.

A lesson's bookings would queue behind a left-over backlog and time out, so `drain` first
processes it (never deletes it) with extra workers, steps taking no time, no faults; the
learner's bookings end as they would have, only sooner. `other_workers` counts the worker
processes the lesson did not start, so a lesson can tell them apart from its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from labkit.notebook.lessons import lesson_faults
from labkit.settings import LANES

BACKLOG_LEFT = 20  # a lesson does not wait for the last few (e.g. one held by a slow worker)
DRAIN_TIME_SCALE = 0.0  # steps take no time: only the brokers' round trips remain
DRAIN_WORKERS = 2
DRAIN_CONCURRENCY = 16
STALL_S = 15.0  # no progress this long: stop draining, the rest is stuck (not ours to fix)


async def backlog(lab, lanes: Sequence[str] = LANES) -> dict[str, int]:
    """Per lane: bookings queued or waiting for a retry, whoever published them."""
    stats = await lab.stats(lanes)
    return {lane: s.waiting + s.retrying for lane, s in stats.items()}


async def drain(lab, *, timeout_s: float = 180.0) -> dict[str, int]:
    """Process the left-over backlog of every lane that has one; returns what was there."""
    from labkit.lab import Lab

    found = {lane: n for lane, n in (await backlog(lab)).items() if n > BACKLOG_LEFT}
    if not found:
        return {}
    print(f"Your lab holds bookings queued earlier ({found}): processing them first, at time ×"
          f" {DRAIN_TIME_SCALE} without faults (nothing is deleted; your faults come back after).")
    fast = lab.settings.with_(time_scale=DRAIN_TIME_SCALE)
    async with Lab(fast) as fast_lab, lesson_faults(fast_lab), fast_lab.workers(
        list(found), count=DRAIN_WORKERS, concurrency=DRAIN_CONCURRENCY
    ):
        left = await _until_drained(fast_lab, list(found), timeout_s)
    print(f"  left queued: {left}")
    return found


async def _until_drained(lab, lanes: list[str], timeout_s: float) -> dict[str, int]:
    left = await backlog(lab, lanes)
    progress_at = time.monotonic()
    with anyio.move_on_after(timeout_s):
        while any(n > BACKLOG_LEFT for n in left.values()):
            if time.monotonic() - progress_at > STALL_S:
                break
            await anyio.sleep(1.0)
            now = await backlog(lab, lanes)
            if sum(now.values()) < sum(left.values()):
                progress_at = time.monotonic()
            left = now
    return left


async def other_workers(lab, lane: str, mine: Sequence[int] = ()) -> list[int]:
    """Pids of live workers on `lane` that are not in `mine` (e.g. ones the learner left)."""
    live = (await lab.backend(lane).live_workers()).values()
    return sorted({info["pid"] for info in live} - set(mine))
