"""Open-loop pacing: when each message SHOULD be sent, and latency measured from then.

A closed-loop sender waits for one reply before the next send, so a stall delays the sends
too and the stalled period contributes one slow sample instead of hundreds: coordinated
omission. Here message i's intended time is fixed up front (`start + i / rate`) and its
latency is counted from that time, so a stall shows up in every message that should have
gone out during it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable


def intended_times(start: float, rate_per_s: float, count: int) -> list[float]:
    """The schedule of a fixed-rate run: evenly spaced, whatever happens while sending."""
    if rate_per_s <= 0:
        raise ValueError("a fixed-rate run needs a positive rate")
    return [start + i / rate_per_s for i in range(count)]


def latency_from_intended(intended_at: float, done_at: float) -> float:
    """End-to-end latency of one message, counted from when it should have been sent."""
    return max(0.0, done_at - intended_at)


async def paced(
    schedule: list[float],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[tuple[int, float]]:
    """Yield (index, intended time) no earlier than each intended time; a sender that fell
    behind catches up without sleeping (the lateness is in the latency, not hidden)."""
    for index, intended_at in enumerate(schedule):
        wait_s = intended_at - clock()
        if wait_s > 0:
            await sleep(wait_s)
        yield index, intended_at


def stalled_service(
    rate_per_s: float, duration_s: float, *, service_s: float, stall_at_s: float, stall_s: float
) -> tuple[list[float], list[float]]:
    """A server answering in `service_s`, frozen for `stall_s` at `stall_at_s`, probed at
    `rate_per_s` for `duration_s`: (latencies a closed-loop client records, latencies from
    the intended send times). The lesson's demonstration of coordinated omission."""
    def answered(sent_at: float) -> float:
        start = stall_at_s + stall_s if stall_at_s <= sent_at < stall_at_s + stall_s else sent_at
        return start + service_s

    closed, now = [], 0.0
    while now < duration_s:  # waits for each reply, so it sends nothing during the stall
        done = answered(now)
        closed.append(done - now)
        now = max(done, now + 1 / rate_per_s)
    schedule = intended_times(0.0, rate_per_s, int(duration_s * rate_per_s))
    return closed, [latency_from_intended(at, answered(at)) for at in schedule]
