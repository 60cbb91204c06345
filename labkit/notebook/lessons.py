"""Small helpers the notebooks share, so cells stay a few lines long.

- `setup()`: seeds and offline plotly, once per notebook.
- `Workers`: worker pools for several lanes at once, stopped together (and in parallel).
- `pool()` / `kill()`: one lane's WorkerPool from async code, its blocking calls (a graceful
  stop waits for in-flight jobs, kill -9 waits for the process) run in a thread so other
  coroutines — other lanes under `asyncio.gather`, a live board — keep running meanwhile.
- Kafka look-ups a lesson wants to show: which partition a key lands on, who owns each
  partition, reading records from an offset or a timestamp (replay).
- Order checks: when each booking started, per lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

from labkit import names
from labkit.settings import LANES, Settings


def setup(seed: int = 7) -> None:
    """Fix seeds so this notebook's output is stable, and embed plotly.js for HTML exports."""
    from labkit.notebook.widgets import use_static_plotly

    random.seed(seed)
    use_static_plotly()


class Workers:
    """`async with Workers(lab, ["bullmq", "kafka"], workers=2) as pools:` — each lane's
    WorkerPool; on exit all are stopped gracefully, side by side."""

    def __init__(
        self, lab, lanes: Iterable[str] = LANES, *, workers: int = 1, concurrency: int = 1
    ) -> None:
        self.pools = {lane: lab.pool(lane, concurrency=concurrency) for lane in lanes}
        self.workers = workers

    def __getitem__(self, lane: str):
        return self.pools[lane]

    async def __aenter__(self) -> Self:
        for pool in self.pools.values():
            pool.start(self.workers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.pools.values()))


@contextlib.asynccontextmanager
async def pool(lab, lane: str, *, workers: int = 0, concurrency: int = 1) -> AsyncIterator[Any]:
    """`async with lessons.pool(lab, "kafka", workers=2) as pool:` — like `with lab.pool(...)`,
    but starting and the graceful stop on exit happen off the event loop."""
    workers_pool = lab.pool(lane, concurrency=concurrency)
    try:
        if workers:
            await asyncio.to_thread(workers_pool.start, workers)
        yield workers_pool
    finally:
        await asyncio.to_thread(workers_pool.stop)


async def kill(workers_pool, pid: int | None = None) -> int:
    """kill -9 one worker of `workers_pool` (WorkerPool.kill) without blocking the event loop."""
    return await asyncio.to_thread(workers_pool.kill, pid)


async def wait_for_workers(
    lab,
    lane: str,
    count: int,
    *,
    timeout_s: float = 30.0,
    pids: Iterable[int] | None = None,
) -> int:
    """Until `count` workers of `lane` have checked in (a worker process needs a moment);
    returns how many did. With `pids`, only those processes count (e.g. `pool.pids`), not
    workers of an earlier run that checked in a few seconds ago."""
    deadline = time.monotonic() + timeout_s
    mine = None if pids is None else set(pids)
    while True:
        workers = (await lab.backend(lane).live_workers()).values()
        live = sum(1 for info in workers if mine is None or info.get("pid") in mine)
        if live >= count or time.monotonic() > deadline:
            return live
        await asyncio.sleep(0.2)


# -- Kafka -----------------------------------------------------------------------------------
def kafka_partition_for(key: str, partitions: int = names.KAFKA_PARTITIONS) -> int:
    """The partition Kafka's default partitioner picks: murmur2(key) mod partitions."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _admin(settings: Settings):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**settings.kafka_config(client_id="labkit-lesson"))


def kafka_assignment(
    settings: Settings, group: str = names.GROUP, topic: str = names.TOPIC
) -> dict[str, Any]:
    """Members of the consumer group and the partitions of `topic` each one owns, with lag."""
    from kafka import KafkaConsumer, TopicPartition

    admin = _admin(settings)
    try:
        described = admin.describe_groups([group])
        info = described.get(group, described) if isinstance(described, dict) else described[0]
        committed = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    owner: dict[int, str] = {}
    members = []
    for member in info.get("members", []):
        label = consumer_label(member["client_id"])
        members.append(label)
        assignment = member.get("member_assignment")  # empty while the group rebalances
        for part in (
            assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
        ):
            if part["topic"] == topic:
                owner.update(dict.fromkeys(part["partitions"], label))
    consumer = KafkaConsumer(**settings.kafka_config(group_id=None))
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    rows = []
    for tp in tps:
        done = committed.get(tp)
        done_offset = done.offset if done is not None else 0
        rows.append(
            {
                "partition": tp.partition,
                "consumer": owner.get(tp.partition, "(none)"),
                "committed": done_offset,
                "end": ends[tp],
                "lag": ends[tp] - done_offset,
            }
        )
    return {"state": info.get("group_state"), "members": sorted(members), "rows": rows}


def consumer_label(client_id: str) -> str:
    """Worker ids are `<host>-<pid>-<random>`: show the pid, which WorkerPool.pids lists."""
    parts = client_id.rsplit("-", 2)
    return f"pid {parts[1]}" if len(parts) == 3 and parts[1].isdigit() else client_id


def kafka_records(
    settings: Settings,
    topic: str = names.TOPIC,
    *,
    partition: int | None = None,
    offset: int | None = None,
    since_s: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Read records again without any consumer group: from `offset` (per partition) or from
    the first record at or after epoch time `since_s`, else from the beginning. A replay."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_config(group_id=None, enable_auto_commit=False))
    try:
        parts = [partition] if partition is not None else range(settings.kafka_partitions)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = (
            consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps}) if since_s else {}
        )
        for tp in tps:
            if since_s is not None:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
            elif offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=300).items():
                out += [_record(r) for r in records if r.offset < ends[tp]]
        out.sort(key=lambda r: (r["partition"], r["offset"]))
        return out[:limit]
    finally:
        consumer.close()


def _record(record) -> dict[str, Any]:
    import json

    try:
        booking_id = json.loads(record.value)["data"]["bookingId"]
    except (ValueError, KeyError, TypeError):
        booking_id = None
    return {
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode(),
        "bookingId": booking_id,
        "timestamp": record.timestamp / 1000,
    }


# -- order -------------------------------------------------------------------------------------
async def first_starts(lab, lane: str, booking_ids: Sequence[str]) -> dict[str, float]:
    """When each booking's first attempt started on `lane` (epoch seconds)."""
    store = lab.backend(lane).status
    out = {}
    for status in await asyncio.gather(*(store.get(lane, b) for b in booking_ids)):
        if status is None:
            continue
        starts = [float(h["at"]) for h in status.history if h.get("detail") == "started"]
        if starts:
            out[status.booking_id] = starts[0]
    return out


def kafka_offset_order_kept(
    bookings: Sequence[Any], kafka_ids: Sequence[str], starts: dict[str, float]
) -> dict[str, bool]:
    """Per hotel: did its bookings start in the order of their offsets in the partition?"""
    by_hotel: dict[str, list[tuple[int, float]]] = {}
    for booking, job_id in zip(bookings, kafka_ids, strict=True):
        _topic, _partition, offset = job_id.split(":")
        if booking.bookingId in starts:
            by_hotel.setdefault(booking.hotelId, []).append(
                (int(offset), starts[booking.bookingId])
            )
    return {
        hotel: [t for _o, t in sorted(pairs)] == sorted(t for _o, t in pairs)
        for hotel, pairs in by_hotel.items()
    }
