"""A Kafka worker whose batch outlasts max.poll.interval.ms (injected latency, real-time
steps) keeps its membership: it polls, every partition paused, while the batch runs
(issue 9, point 9). Before, the member was evicted mid-batch, its commit refused, and the
record ran again on every rejoin, for ever."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from labkit.backends.kafka import KafkaBackend
from labkit.booking import make_booking
from labkit.status import State

pytestmark = [pytest.mark.redis, pytest.mark.kafka]
MAX_POLL_INTERVAL_MS = 3000
LATENCY_S = 5.0  # one booking's PDF step alone outlasts the poll interval


async def test_a_batch_slower_than_max_poll_interval_runs_once_and_commits(lab, monkeypatch):
    monkeypatch.setattr(KafkaBackend, "_max_poll_interval_ms", lambda self, concurrency: MAX_POLL_INTERVAL_MS)
    check_in = datetime.now(UTC).date() + timedelta(days=16)
    slow = make_booking({"userId": "user-slow", "hotelId": "hotel-slow", "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=1)})
    await lab.faults.set([f"pdf.latency_s={LATENCY_S}"])
    await lab.publish([slow], ["kafka"])
    backend = lab.backend("kafka")
    stop = asyncio.Event()
    worker = asyncio.create_task(backend.run_worker(concurrency=1, stop=stop))
    try:
        states = await lab.wait_for([slow.bookingId], ["kafka"], timeout_s=45)
        assert states["kafka"][slow.bookingId] is State.COMPLETED
        await asyncio.sleep(MAX_POLL_INTERVAL_MS / 1000 + 2)  # a refused commit would show as a second run by now
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=30)
    status = await lab.status.get("kafka", slow.bookingId)
    assert [h["detail"] for h in status.history].count("validate started") == 1, status.history
    lag = (await backend.stats()).lag
    assert lag == 0, lag  # committed: no other member will run it again
