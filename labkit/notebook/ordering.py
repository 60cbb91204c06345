"""The Kafka worker's ordering setting (`LABKIT_KAFKA_ORDERING`: partition | key | unordered),
shown on a scratch topic of one partition so that no worker of yours takes part: the lab
worker's own dispatcher runs the records, each an I/O-bound step (a sleep standing in for a
payment provider). What it returns is measured from the runs themselves: how many ran at
once, whether each hotel's records ran one at a time in offset order, and how long it took.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from labkit.backends.kafka_dispatch import Dispatcher, Ordering
from labkit.notebook.concepts_kafka import _consumer, _produce, scratch_topic
from labkit.settings import Settings

ORDERINGS = tuple(o.value for o in Ordering)


@dataclass(frozen=True)
class Run:
    key: str
    offset: int
    started: float
    ended: float


def peak_at_once(runs: list[Run]) -> int:
    """The most runs in progress at one moment (an end at the same instant as a start first)."""
    events = sorted([(r.started, 1) for r in runs] + [(r.ended, -1) for r in runs], key=lambda e: (e[0], e[1]))
    return max(itertools.accumulate(change for _, change in events), default=0)


def one_at_a_time_in_order(runs: list[Run]) -> bool:
    """Each started after the one before it ended, in offset order."""
    by_start = sorted(runs, key=lambda r: r.started)
    return all(a.offset < b.offset and a.ended <= b.started for a, b in itertools.pairwise(by_start))


async def run_ordering(settings: Settings, ordering: str, *, hotels: int = 4, per_hotel: int = 4,
                       concurrency: int = 8, step_s: float = 0.1, timeout_s: float = 60.0) -> dict[str, Any]:
    """`hotels` × `per_hotel` records (interleaved, one partition) through the worker's
    dispatcher with `ordering` and `concurrency` slots."""
    keys = [f"hotel-{h}" for _ in range(per_hotel) for h in range(hotels)]
    runs: list[Run] = []

    async def step(record) -> None:
        started = time.monotonic()
        await asyncio.sleep(step_s)
        runs.append(Run(record.key.decode(), record.offset, started, time.monotonic()))

    dispatcher = Dispatcher(step, concurrency=concurrency, ordering=Ordering(ordering), due_at=lambda _r: 0.0)
    with scratch_topic(settings, f"ordering-{ordering}") as topic:
        await asyncio.to_thread(_produce, settings, topic, [f"booking-{n}" for n in range(len(keys))], keys)
        reader = _consumer(settings)
        tp = TopicPartition(topic, 0)
        try:
            reader.assign([tp])
            deadline = time.monotonic() + timeout_s
            received = 0
            while received < len(keys) or not dispatcher.idle:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ordering}: {len(runs)} of {len(keys)} records ran in {timeout_s:.0f}s")
                batch = await asyncio.to_thread(reader.poll, timeout_ms=100)
                for records in batch.values():
                    dispatcher.submit(tp, records)
                    received += len(records)
                await asyncio.sleep(0.02)
        finally:
            dispatcher.cancel()
            reader.close()
    per_hotel_runs: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        per_hotel_runs[run.key].append(run)
    elapsed_s = max(r.ended for r in runs) - min(r.started for r in runs)
    return {
        "ordering": ordering, "records": len(runs), "peak_at_once": peak_at_once(runs),
        "hotels_in_order": sum(one_at_a_time_in_order(r) for r in per_hotel_runs.values()),
        "hotels": len(per_hotel_runs), "partition_in_order": one_at_a_time_in_order(runs),
        "elapsed_s": round(elapsed_s, 2), "records_per_s": round(len(runs) / elapsed_s, 1),
        "committable": dispatcher.progress[tp].committable(),
    }


async def compare(settings: Settings, orderings: tuple[str, ...] = ORDERINGS, **options: Any) -> list[dict[str, Any]]:
    """One row per ordering, run one after the other on the same records."""
    return [await run_ordering(settings, ordering, **options) for ordering in orderings]
