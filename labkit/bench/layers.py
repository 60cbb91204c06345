"""A layer is one way of moving messages through a lane: the raw client, or the lab.

Every layer offers the same three calls, so the measurements (`measure.py`) are written
once: `publish(ids)` sends messages, `completed()` counts those fully handled since the
layer started, and `done_at` holds when each tracked message finished (for latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Self

from labkit.booking import Booking
from labkit.lab import Lab
from labkit.pipeline import Outcome, Pipeline
from labkit.settings import Settings
from labkit.status import TERMINAL
from labkit.workload import Workload

RAW = "raw client"
TRANSPORT = "lab transport"
PIPELINE = "lab pipeline"


class Layer(ABC):
    layer: str
    client: str  # what does the work: a client library, or the lab

    def __init__(self, lane: str, settings: Settings, *, concurrency: int) -> None:
        self.lane = lane
        self.settings = settings
        self.concurrency = concurrency  # messages in flight per consumer: the same for every layer
        self.done_at: dict[str, float] = {}  # message id → when it finished, for tracked ids
        self.tracked: set[str] = set()
        self._numbers = itertools.count()

    def new_ids(self, count: int) -> list[str]:
        """Ids for `count` new messages, never sent before."""
        return [f"m{next(self._numbers)}" for _ in range(count)]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @abstractmethod
    async def start(self) -> None:
        """Connect, create what the run needs and start consuming."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, ids: list[str]) -> None:
        """Send one message per id, in one batch (the batching every layer shares)."""

    @abstractmethod
    async def completed(self) -> int:
        """Messages fully handled since `start` (a monotone count)."""

    @contextlib.asynccontextmanager
    async def tracking(self, ids: list[str]) -> AsyncIterator[None]:
        """Record `done_at` for these ids while inside."""
        self.tracked = set(ids)
        try:
            yield
        finally:
            self.tracked = set()

    def finished(self, message_id: str, at: float) -> None:
        if message_id in self.tracked:
            self.done_at[message_id] = at


class NoOpPipeline(Pipeline):
    """The lab transport's pipeline: every booking is confirmed at once, with no effects."""

    async def run(self, booking: Booking, *, attempt: int, report, reported=None) -> Outcome:
        return Outcome.CONFIRMED


class LabLayer(Layer):
    """The lab's own producer (`publish_many`) and worker (`run_worker`), in this process."""

    client = "labkit"

    def __init__(self, lane: str, settings: Settings, *, concurrency: int, full_pipeline: bool) -> None:
        super().__init__(lane, settings.with_(time_scale=0.0), concurrency=concurrency)
        self.full_pipeline = full_pipeline
        self.layer = PIPELINE if full_pipeline else TRANSPORT
        self._workload = Workload(seed=8, rooms_per_hotel=1_000_000)  # a room for every booking
        self._cursor = itertools.count()
        self._bookings: dict[str, Booking] = {}

    async def start(self) -> None:
        self.lab = Lab(self.settings)
        await self.lab.stock(self._workload.rooms, [self.lane])
        self.backend = self.lab.backend(self.lane)
        if not self.full_pipeline:
            old = self.backend.pipeline
            self.backend.pipeline = NoOpPipeline(effects=old.effects, faults=old.faults, time_scale=0.0)
        self._base = await self._terminal_count()
        self._stop = asyncio.Event()
        self._worker = asyncio.create_task(
            self.backend.run_worker(concurrency=self.concurrency, stop=self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await self._worker
        await self.lab.close()

    def new_ids(self, count: int) -> list[str]:
        """Fresh bookings (a known booking is never run twice): their ids."""
        bookings = self._workload.bookings(count, start=next(self._cursor) * 1_000_000)
        self._bookings.update((b.bookingId, b) for b in bookings)
        return [b.bookingId for b in bookings]

    async def publish(self, ids: list[str]) -> None:
        await self.backend.publish_many([self._bookings.pop(i) for i in ids])

    async def completed(self) -> int:
        return await self._terminal_count() - self._base

    async def _terminal_count(self) -> int:
        counts = await self.lab.status.counts(self.lane)
        return sum(counts[state.value] for state in TERMINAL)

    @contextlib.asynccontextmanager
    async def tracking(self, ids: list[str]) -> AsyncIterator[None]:
        """The status events say when each booking reached a terminal state."""
        async with super().tracking(ids):
            follower = asyncio.create_task(self._follow())
            await asyncio.sleep(0.2)  # its first XREAD pins "$" before anything is sent
            try:
                yield
            finally:
                follower.cancel()

    async def _follow(self) -> None:
        async for _event_id, event in self.lab.status.follow(block_ms=200):
            if event.get("lane") == self.lane and event.get("state") in TERMINAL:
                self.finished(event["bookingId"], float(event["at"]))
