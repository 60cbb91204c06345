"""Coalesce concurrent POSTs into one `publish_many` per lane.

A publish costs one broker round trip whatever its size (Kafka's flush with acks=all is
≈10 ms here; BullMQ addBulk and a Streams pipeline likewise), and the Kafka producer lives
on a single thread. Publishing each request on its own serialises them behind that round
trip; while one batch is in flight, this gathers the next requests and sends them together.
A lone request is never delayed: with nothing in flight it is published at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from labkit.backends import Backend
from labkit.booking import Booking


class LaneBatcher:
    def __init__(self, backend: Backend, *, max_batch: int = 256, timeout_s: float = 10.0) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._pending: list[tuple[Booking, asyncio.Future[str]]] = []
        self._task: asyncio.Task[None] | None = None

    async def publish(self, booking: Booking) -> str:
        """The lane's job id for `booking`, once its batch was accepted by the broker."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((booking, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                ids = await asyncio.wait_for(
                    self.backend.publish_many([booking for booking, _ in batch]), self.timeout_s
                )
            except Exception as exc:  # noqa: BLE001 - every request of the batch learns why
                _settle(batch, error=exc)
            else:
                _settle(batch, ids=ids)

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _settle(batch: list[tuple[Booking, asyncio.Future[Any]]], *, ids: list[str] | None = None,
            error: Exception | None = None) -> None:
    for i, (_, future) in enumerate(batch):
        if future.done():  # its request was cancelled (client went away)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(ids[i])  # type: ignore[index]
