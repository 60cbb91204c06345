"""On Kafka a retry (or a dead letter) and the consumed record's offset commit go in one
transaction (issue 9). A worker that dies after producing the retry and before committing
leaves neither behind: no retry any reader of the lab sees, the record uncommitted, and the
next worker runs it once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition

from labkit import names
from labkit.backends import kafka as kafka_backend
from labkit.booking import make_booking
from labkit.lab import Lab
from labkit.status import State

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


class Crash(BaseException):
    """The process dying: nothing after it runs, no `except Exception` sees it."""


# How the failing attempt is routed: the faults that make it so, and the topics it goes to.
ROUTES = {
    "retry": (["payment.fail_rate=1"], names.RETRY_TOPICS),
    "dead-letter": (["payment.fail_rate=1", "retry.max_attempts=1"], (names.TOPIC_DLQ,)),
}


def routed(settings, topics, booking_id: str, isolation_level: str) -> int:
    """Records of `booking_id` in `topics`, as a reader at `isolation_level` sees them."""
    reader = KafkaConsumer(**settings.kafka_config(isolation_level=isolation_level, enable_auto_commit=False))
    try:
        parts = [TopicPartition(t, p) for t in topics for p in reader.partitions_for_topic(t) or ()]
        reader.assign(parts)
        reader.seek_to_beginning()
        ends, found = reader.end_offsets(parts), 0
        deadline = time.monotonic() + 20
        while any(reader.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                found += sum(booking_id.encode() in (r.value or b"") for r in records)
        return found
    finally:
        reader.close()


@pytest.mark.parametrize("route", ROUTES)
async def test_a_worker_dying_between_route_and_commit_leaves_nothing_routed(lab, settings, monkeypatch, route):
    """Before, a retry or a letter was produced, then the offset committed: a crash in between
    left a retry (or letter) AND an uncommitted record, which ran and was routed again."""
    faults, topics = ROUTES[route]
    check_in = datetime.now(UTC).date() + timedelta(days=15)
    one = make_booking({"userId": "user-txn", "hotelId": "hotel-txn", "checkIn": check_in,
                        "checkOut": check_in + timedelta(days=1)})
    await lab.faults.set(faults)
    await lab.publish([one], ["kafka"])

    routers = []

    def die(router) -> None:
        routers.append(router)
        raise Crash(f"killed after the {route} was produced, before its transaction committed")

    monkeypatch.setattr(kafka_backend, "_commit_transaction", die)
    with pytest.raises(Crash):
        await asyncio.wait_for(lab.backend("kafka").run_worker(concurrency=1, burst=True), timeout=60)
    monkeypatch.undo()

    # The retry (letter) was produced: a read_uncommitted reader sees it...
    assert await asyncio.to_thread(routed, settings, topics, one.bookingId, "read_uncommitted") == 1
    # ...but nobody who reads committed data does, and the broker aborts it: the dead worker's
    # transaction times out (we abort it now rather than wait ROUTE_TIMEOUT_MS)
    assert await asyncio.to_thread(routed, settings, topics, one.bookingId, "read_committed") == 0
    await asyncio.to_thread(routers[0].abort_transaction)
    routers[0].close(timeout=1)

    await lab.faults.clear()
    async with Lab(settings) as fresh:  # the next worker process
        await asyncio.wait_for(fresh.backend("kafka").run_worker(concurrency=1, burst=True), timeout=60)
    status = await lab.status.get("kafka", one.bookingId)
    assert status.state is State.COMPLETED, status
    starts = [h for h in status.history if h["detail"] == "validate started"]
    assert len(starts) == 2  # the dead worker's attempt, then the redelivery: run once more
    assert await asyncio.to_thread(routed, settings, topics, one.bookingId, "read_committed") == 0
    assert await lab.backend("kafka").dlq_list() == []
