"""Watch Redis Streams while workers run: which consumer held each entry (from XPENDING).

    async with PendingHolders(lab.redis).sampling() as holders:
        ...  # workers process the stream
    holders.split(entry_ids)  # {"pid 4711": 7, "pid 4712": 5}

An entry is pending for exactly one consumer of the group between delivery and XACK; sampling
often enough catches each one, so the split shows how one group shares the work.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, Self

import anyio

from labkit import names
from labkit.kafka_admin import consumer_label

RETRY_CONSUMER = "retry"  # the consumer name a retry is parked under: not a worker


class PendingHolders:
    def __init__(
        self, redis, *, stream: str = names.STREAM, group: str = names.GROUP,
        interval_s: float = 0.05,
    ) -> None:
        self.redis = redis
        self.stream, self.group = stream, group
        self.interval_s = interval_s
        self.holders: dict[str, str] = {}  # entry id → worker label ("pid 4711")

    def record(self, pending: Iterable[dict[str, Any]]) -> None:
        """Note who holds each entry of one XPENDING reply."""
        for row in pending:
            if row["consumer"] != RETRY_CONSUMER:
                self.holders[row["message_id"]] = consumer_label(row["consumer"])

    def split(self, entry_ids: Iterable[str]) -> dict[str, int]:
        """Per worker, how many of `entry_ids` it was seen holding."""
        return dict(Counter(self.holders[e] for e in entry_ids if e in self.holders))

    async def sample(self) -> None:
        """One XPENDING look (the first 100 pending entries)."""
        self.record(await self.redis.xpending_range(
            self.stream, self.group, min="-", max="+", count=100))

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[Self]:
        """Sample in the background for the duration of the block, and never after it."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._sample_forever)
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    async def _sample_forever(self) -> None:
        while True:
            await self.sample()
            await anyio.sleep(self.interval_s)
