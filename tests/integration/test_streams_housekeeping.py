"""Redis Streams keeps its log bounded without losing work: only entries every group is done
with are trimmed, parked retries and dead workers' entries are claimed independently of each
other, gone consumers are forgotten and the DLQ has a cap."""

from __future__ import annotations

import asyncio

import pytest

from labkit import names
from labkit.backends.streams import DLQ_MAXLEN, RETRY_CONSUMER, RETRY_DUE_KEY
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.streams]


async def test_a_tiny_trim_setting_never_drops_unread_work(lab):
    workload = Workload(seed=31, rooms_per_hotel=1000)
    bookings = workload.bookings(1000)
    await lab.stock(workload.rooms, ["streams"])
    backend = lab.backend("streams")
    await backend.setup()  # the group exists and has read nothing

    for start in range(0, len(bookings), 100):  # trimming toward 10 after every batch
        await lab.publish(bookings[start:start + 100], ["streams"], maxlen=10)
    assert await lab.redis.xlen(names.STREAM) == 1000

    async with lab.workers(["streams"], count=2, concurrency=8):
        states = await lab.wait_for([b.bookingId for b in bookings], ["streams"], timeout_s=240)
    assert len(states["streams"]) == 1000  # every one reached a terminal state
    assert await backend.trim(10) > 0  # once read and acked, entries may go
    assert await lab.redis.xlen(names.STREAM) < 1000


async def test_a_due_retry_and_a_dead_workers_entry_do_not_wait_behind_parked_retries(lab):
    backend = lab.backend("streams")
    await backend.setup()
    workload = Workload(seed=32, rooms_per_hotel=100)
    bookings = workload.bookings(40)
    await lab.stock(workload.rooms, ["streams"])
    await lab.publish(bookings, ["streams"])
    # A worker read them all and died; it had parked the 30 oldest for a retry an hour away,
    # the 31st for a retry due now; the rest it held when it died. All silent for minutes.
    read = await lab.redis.xreadgroup(names.GROUP, "ghost", {names.STREAM: ">"}, count=40)
    ids = [entry_id for entry_id, _fields in read[0][1]]
    long_ago = 10 * 60_000
    await lab.redis.xclaim(names.STREAM, names.GROUP, RETRY_CONSUMER, 0, ids[:31], idle=long_ago, justid=True)
    await lab.redis.xclaim(names.STREAM, names.GROUP, "ghost", 0, ids[31:], idle=long_ago, justid=True)
    now = await lab.redis.time()
    await lab.redis.zadd(RETRY_DUE_KEY, {i: now[0] + 3600 for i in ids[:30]} | {ids[30]: now[0] - 1})

    stop = asyncio.Event()
    worker = asyncio.create_task(backend.run_worker(concurrency=1, stop=stop))
    try:
        expected = [b.bookingId for b in bookings[30:]]
        states = await lab.wait_for(expected, ["streams"], timeout_s=30)
    finally:
        stop.set()
        await worker
    assert all(s is not None and s.value == "completed" for s in states["streams"].values())
    assert await lab.redis.zcard(RETRY_DUE_KEY) == 30  # the far ones still wait their turn


async def test_gone_consumers_are_forgotten_and_busy_ones_kept(lab):
    backend = lab.backend("streams")
    await backend.setup()
    await lab.publish(Workload(seed=33).bookings(1), ["streams"])
    await lab.redis.xreadgroup(names.GROUP, "holds-one", {names.STREAM: ">"}, count=1)
    await lab.redis.xgroup_createconsumer(names.STREAM, names.GROUP, "gone")  # read nothing
    await asyncio.sleep(0.2)

    assert await backend.forget_gone_consumers(idle_ms=100) == ["gone"]
    consumers = {c["name"] for c in await lab.redis.xinfo_consumers(names.STREAM, names.GROUP)}
    assert consumers == {"holds-one"}


async def test_the_dead_letter_stream_is_capped(lab):
    backend = lab.backend("streams")
    await backend.setup()
    for _ in range(DLQ_MAXLEN // 500 + 2):
        pipe = lab.redis.pipeline(transaction=False)
        for _ in range(500):
            pipe.xadd(names.STREAM_DLQ, {"job": "old letter", "reason": "test", "attempts": 1})
        await pipe.execute()
    await backend.publish_raw("not JSON")
    await asyncio.wait_for(backend.run_worker(burst=True), timeout=60)
    assert await lab.redis.xlen(names.STREAM_DLQ) <= DLQ_MAXLEN + 200  # `~`: whole nodes go
