"""Redis Streams: one entry, one owner. Two workers that both saw a retry come due must not
both run it (then both dead-letter a poison booking: two letters for one booking), and a
worker that lost an entry to another must not settle it any more."""

from __future__ import annotations

import asyncio

import pytest

from labkit import names
from labkit.backends.streams import RETRY_DUE_KEY
from labkit.lab import Lab
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.streams]


async def parked_for_retry(lab, backend) -> str:
    """One booking, read by `backend` and parked for a retry that is due now; its entry id."""
    workload = Workload(seed=41)
    await lab.stock(workload.rooms, ["streams"])
    await backend.setup()
    await lab.publish(workload.bookings(1), ["streams"])
    [(entry, attempt)] = await backend._read_new(1)
    await backend._retry(entry, 0.0, attempt)
    return entry.id


async def test_a_due_retry_two_workers_saw_is_claimed_by_one(lab):
    a = lab.backend("streams")
    async with Lab(lab.settings) as other:
        b = other.backend("streams")
        entry_id = await parked_for_retry(lab, a)
        await asyncio.sleep(0.2)
        seen_by_b = await b._due_retries(1)  # B sees it due...
        assert [entry.id for entry, _attempt in await a._claim_due(1)] == [entry_id]  # ...A takes it
        await asyncio.sleep(0.3)  # A works on it (its heartbeat is 0.5 s away); B goes on with what it saw

        async def stale_view(count: int):
            return seen_by_b

        b._due_retries = stale_view
        assert await b._claim_due(1) == []
        owner = await lab.redis.xpending_range(names.STREAM, names.GROUP, min=entry_id, max=entry_id, count=1)
        assert owner[0]["consumer"] == a.worker_id and owner[0]["times_delivered"] == 2


async def test_a_worker_that_lost_its_entry_writes_no_letter(lab):
    a = lab.backend("streams")
    async with Lab(lab.settings) as other:
        b = other.backend("streams")
        entry_id = await parked_for_retry(lab, a)
        [(entry, attempt)] = await a._claim_due(1)
        # A stalls past the stale time; B presumes it dead and takes the entry over
        await lab.redis.xclaim(names.STREAM, names.GROUP, b.worker_id, 0, [entry_id])
        assert await a._dead_letter(entry, "poison", attempt) is False
        assert await lab.redis.xlen(names.STREAM_DLQ) == 0
        assert await b._dead_letter(entry, "poison", attempt + 1) is not False  # the owner settles it
        assert await lab.redis.xlen(names.STREAM_DLQ) == 1
        assert not await lab.redis.zscore(RETRY_DUE_KEY, entry_id)
