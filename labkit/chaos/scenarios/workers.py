"""Faults on worker processes: kill -9, SIGSTOP past every timeout, a crash right after
the charge (the lost response)."""

from __future__ import annotations

import anyio

from labkit.chaos.brokers import frozen
from labkit.chaos.run import Run

KILL_ROUNDS = 4
SLOW_PAYMENT = {"payment.latency_s": 0.3}  # workers spend their time mid-payment


async def worker_kill(run: Run) -> None:
    await run.lab.faults.set(SLOW_PAYMENT)
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, run.workload.bookings(run.bookings))
        for _ in range(KILL_ROUNDS):
            await anyio.sleep(0.6)
            for lane in run.lanes:
                if run.pools[lane].pids:  # none while every worker is between death and restart
                    await run.pools[lane].kill_async(restart=True)
    run.fault_over()
    run.note(f"{KILL_ROUNDS} rounds of kill -9 (one worker per lane) while publishing; "
             "payment takes 0.3 s longer so most kills land mid-payment")


async def worker_freeze(run: Run) -> None:
    """The frozen worker's claim expires and another worker takes its booking over; when it
    wakes it finishes its stale attempt, which must replay the charge, not make another."""
    await run.lab.faults.set(SLOW_PAYMENT)
    frozen_s = run.lab.settings.stale_after_s * 2 + 1
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, run.workload.bookings(run.bookings))
        await anyio.sleep(0.8)
        for lane in run.lanes:
            group.start_soon(_freeze, run.pools[lane].pids[0], frozen_s)
    run.fault_over()
    run.note(f"one worker per lane SIGSTOPped for {frozen_s:.0f} s "
             f"(claim timeout {run.lab.settings.stale_after_s:.0f} s), then SIGCONT")


async def _freeze(pid: int, seconds: float) -> None:
    async with frozen(pid):
        await anyio.sleep(seconds)


async def lost_response(run: Run) -> None:
    """pdf.crash_rate: the worker dies as the step after payment starts, so the charge is
    made but never recorded as done; the retry meets the charge again by its key."""
    await run.lab.faults.set({"pdf.crash_rate": 0.1})
    await run.feed(run.workload.bookings(run.bookings))
    run.fault_over()
    run.note("10 % of bookings: the worker dies (os._exit) right after the charge")
