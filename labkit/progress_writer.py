"""A run's progress reports, written in order beside the booking instead of in its way.

Each step reports twice (started, done). Awaited one by one, that is ten Redis round trips
on every booking's critical path: at time_scale 0 most of a booking's time, and under
key-ordered Kafka they add up along a hot hotel's chain of bookings. Here a report queues
and returns; one task writes the queued reports in order, all of them in one script call,
each with the time it was made. The run's verdict waits for them (`flush`), so history and
the final state never come out of order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple


class ProgressReport(NamedTuple):
    progress: int | None
    note: str
    at: float  # when it was reported, not when it was written


Write = Callable[[list[ProgressReport]], Awaitable[None]]


class ProgressWriter:
    def __init__(self, write: Write) -> None:
        self._write = write
        self._queued: list[ProgressReport] = []
        self._task: asyncio.Task | None = None
        self._error: Exception | None = None

    async def report(self, progress: int | None, note: str) -> None:
        """The pipeline's `Report`: queues and returns. A write that failed fails the next
        report, as an awaited write would have failed the step."""
        if self._error is not None:
            raise self._error
        self._queued.append(ProgressReport(progress, note, time.time()))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def settled(self) -> None:
        """Until every queued report is written or given up."""
        if self._task is not None:
            await self._task

    async def flush(self) -> None:
        """Until every queued report is written; raises a write's failure."""
        await self.settled()
        if self._error is not None:
            raise self._error

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - kept for the run to raise
                self._error = exc
                self._queued.clear()
                return
