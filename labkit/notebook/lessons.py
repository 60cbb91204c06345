"""Small helpers the notebooks share, so cells stay a few lines long.

- `lesson_faults`: the lesson's own faults for one block; the learner's come back after it.
- `wait_for_workers`: until worker processes have checked in.
- Outcomes: how many bookings ended in a state, that all ended in allowed states, the progress
  checkpoints a booking went through.
- Order checks: when each booking started, per lane.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio

from labkit.faults import RETRY_POLICY
from labkit.notebook.widgets import booking_statuses
from labkit.status import BookingStatus, State

States = Mapping[str, Mapping[str, State | None]]  # lane → booking id → state, as Lab.wait_for


def retry_policy(settings) -> list[str]:
    """The lesson's retry policy (`retry.max_attempts=3` …) as live settings: every worker
    follows it, one you left running with settings of its own too."""
    return [f"retry.{name}={getattr(settings, name)}" for name in RETRY_POLICY]


@contextlib.asynccontextmanager
async def lesson_faults(lab, assignments: Sequence[str] = ()) -> AsyncIterator[None]:
    """`async with lesson_faults(lab, ["payment.fail_rate=0.3"]):` — only these faults inside
    (none by default), and the lesson's retry policy; your own fault settings are set aside
    meanwhile and come back after."""
    await lab.faults.begin_lesson([*retry_policy(lab.settings), *assignments])
    try:
        yield
    finally:
        await lab.faults.end_lesson()


async def wait_for_workers(
    lab, lane: str, count: int, *, timeout_s: float = 30.0, pids: Iterable[int] | None = None
) -> int:
    """Until `count` workers of `lane` have checked in (a worker process needs a moment);
    returns how many did. With `pids`, only those processes count (e.g. `pool.pids`), not
    workers of an earlier run that checked in a few seconds ago."""
    mine = None if pids is None else set(pids)
    live = 0
    with anyio.move_on_after(timeout_s):
        while (live := await _live_workers(lab, lane, mine)) < count:
            await anyio.sleep(0.2)
    return live


async def _live_workers(lab, lane: str, pids: set[int] | None) -> int:
    workers = (await lab.backend(lane).live_workers()).values()
    return sum(1 for info in workers if pids is None or info.get("pid") in pids)


# -- outcomes ----------------------------------------------------------------------------------
def count_in(states: States, state: str) -> dict[str, int]:
    """Per lane, how many bookings are in `state`."""
    return {lane: sum(s == state for s in by_id.values()) for lane, by_id in states.items()}


def assert_all_in(states: States, *allowed: str) -> None:
    """Every booking on every lane ended in one of `allowed`; the error lists those that did
    not (None: no status at all)."""
    off = [(lane, b, s) for lane, by_id in states.items() for b, s in by_id.items()
           if s is None or s not in allowed]
    assert not off, f"{len(off)} bookings not in {allowed}: {off[:5]}"


def checkpoints(status: BookingStatus) -> list[int]:
    """The progress values a booking went through, each once in a row (notes repeat them)."""
    seen = [int(h["progress"]) for h in status.history if h["progress"] != ""]
    return [p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1]]


def retries_of(
    statuses: Iterable[BookingStatus], reason: str, *, since: float
) -> list[dict[str, Any]]:
    """Each retry whose note contains `reason`: lane, booking, attempt, and when it happened
    relative to `since` (negative: before it)."""
    return [
        {"lane": s.lane, "booking": s.booking_id, "attempt": h["attempt"],
         "after_change_s": round(float(h["at"]) - since, 2)}
        for s in statuses for h in s.history
        if h["state"] == "retrying" and reason in h["detail"]
    ]


# -- order -------------------------------------------------------------------------------------
async def first_starts(lab, lane: str, booking_ids: Sequence[str]) -> dict[str, float]:
    """When each booking's first attempt started on `lane` (epoch seconds)."""
    out = {}
    for status in await booking_statuses(lab, booking_ids, [lane]):
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


# -- metrics -----------------------------------------------------------------------------------
def booking_counters(prometheus_text: str) -> dict[str, dict[str, float]]:
    """Per lane, the `labkit_bookings_<name>_total` counters of a /metrics page: {name: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(prometheus_text):
        if family.type == "counter" and family.name.startswith("labkit_bookings_"):
            name = family.name.removeprefix("labkit_bookings_")
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out.setdefault(sample.labels["lane"], {})[name] = sample.value
    return out


async def peak_in_flight(lab, lane: str, bookings: Sequence[Any], *, concurrency: int,
                         timeout_s: float, poll_s: float = 0.05) -> int:
    """Run `bookings` on `lane` with one worker process of `concurrency`: the most of them
    active at once, sampled from their statuses (only these bookings, whoever else runs)."""
    ids = [b.bookingId for b in bookings]
    peak = 0
    async with lesson_faults(lab), lab.workers([lane], count=1, concurrency=concurrency) as pools:
        # ours must be taking jobs before they exist, or a worker you left running takes them all
        await wait_for_workers(lab, lane, 1, pids=pools[lane].pids, timeout_s=timeout_s)
        await lab.publish(bookings, [lane])
        with anyio.fail_after(timeout_s):
            while True:
                states = (await lab.states(ids, [lane]))[lane]
                peak = max(peak, sum(s == State.ACTIVE for s in states.values()))
                if all(s in (State.COMPLETED, State.REJECTED, State.DEAD_LETTERED) for s in states.values()):
                    return peak
                await anyio.sleep(poll_s)
