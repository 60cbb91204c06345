"""The lab as notebooks, the API, the CLI and tests use it.

A Lab owns the shared stores — `status`, `metrics`, `faults` and each lane's `effects`
(payment ledger, inventory, documents) — and hands them to the backends it opens. Callers
read a store through the Lab, never through a backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Self

import anyio

from labkit import keys
from labkit.backends import Backend, LaneStats, lanes_of, open_backend
from labkit.booking import Booking
from labkit.connections import redis_client
from labkit.effects import Effects
from labkit.faults import FaultStore
from labkit.metrics import Metrics
from labkit.settings import LANES, Settings
from labkit.status import TERMINAL, State, StatusStore
from labkit.workers import WorkerPool, Workers


class Lab:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.redis = redis_client(self.settings)
        self.status = StatusStore(self.redis, retention_s=self.settings.retention_s)
        self.metrics = Metrics(self.redis)
        self.faults = FaultStore(self.redis)
        self.effects = {
            lane: Effects(
                redis=self.redis, lane=lane, home=self.settings.home, metrics=self.metrics,
                idempotency=self.settings.idempotency, retention_s=self.settings.retention_s,
            )
            for lane in LANES
        }
        self._backends: dict[str, Backend] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def backend(self, lane: str) -> Backend:
        if lane not in self._backends:
            self._backends[lane] = open_backend(
                lane, settings=self.settings, redis=self.redis, status=self.status,
                metrics=self.metrics, faults=self.faults, effects=self.effects[lane],
            )
        return self._backends[lane]

    def pool(self, lane: str, *, concurrency: int = 1) -> WorkerPool:
        """One lane's worker processes, managed by hand (start/scale/kill/stop)."""
        return WorkerPool(lane, settings=self.settings, concurrency=concurrency)

    def workers(
        self, lanes: str | Iterable[str] = "all", *, count: int = 1, concurrency: int = 1
    ) -> Workers:
        """`async with lab.workers(["bullmq", "kafka"], count=2) as pools:` — `count` worker
        processes per lane; `pools["kafka"]` is that lane's WorkerPool. All stop gracefully on
        exit, side by side, and the pools then refuse to start more. From async code use the
        pools' `..._async` calls (`await pools["kafka"].kill_async()`), which keep the event
        loop free while a graceful stop waits for in-flight jobs."""
        return Workers(
            {lane: self.pool(lane, concurrency=concurrency) for lane in _lanes(lanes)}, count=count
        )

    async def stock(self, hotel_rooms: dict[str, int], lanes: str | Iterable[str] = "all") -> None:
        """Set each lane's room counts: every lane has its own inventory."""
        for lane in _lanes(lanes):
            await self.effects[lane].stock(hotel_rooms)

    async def publish(
        self, bookings: Sequence[Booking], lanes: str | Iterable[str] = "all", **options
    ) -> dict[str, list[str]]:
        """Fan the same bookings out to each lane; returns each technology's own job ids."""
        return {
            lane: await self.backend(lane).publish_many(bookings, **options)
            for lane in _lanes(lanes)
        }

    async def states(self, booking_ids: Iterable[str], lanes: str | Iterable[str] = "all"):
        ids = list(booking_ids)
        return {lane: await self.status.many(lane, ids) for lane in _lanes(lanes)}

    async def wait_for(
        self,
        booking_ids: Iterable[str],
        lanes: str | Iterable[str] = "all",
        *,
        timeout_s: float = 60.0,
        until: frozenset[State] = TERMINAL,
        poll_s: float = 0.2,
    ) -> dict[str, dict[str, State | None]]:
        """Wait until every booking is in one of `until` on every lane; TimeoutError says
        which are not."""
        ids = list(booking_ids)
        states: dict[str, dict[str, State | None]] = {}
        try:
            with anyio.fail_after(timeout_s):
                while True:
                    states = await self.states(ids, lanes)
                    if all(s in until for by_id in states.values() for s in by_id.values()):
                        return states
                    await anyio.sleep(poll_s)
        except TimeoutError:
            states = states or await self.states(ids, lanes)  # timed out before the first look
            raise TimeoutError(await self.unfinished(states, timeout_s, until=until)) from None

    async def unfinished(
        self, states: dict[str, dict[str, State | None]], timeout_s: float, *,
        until: frozenset[State] = TERMINAL, shown: int = 3,
    ) -> str:
        """A timeout message: how many bookings per lane are not in `until`, and the last steps
        of a few of them (where they got to)."""
        waiting = {lane: sorted(b for b, s in by_id.items() if s not in until) for lane, by_id in states.items()}
        summary = ", ".join(f"{lane}: {len(ids)}" for lane, ids in waiting.items() if ids)
        lines = [f"not finished after {timeout_s:.0f}s — {summary}"]
        for lane, ids in waiting.items():
            for booking_id in ids[:shown]:
                status = await self.status.get(lane, booking_id)
                steps = "; ".join(f"{h['state']} {h['detail']}" for h in status.history[-4:]) if status else "no status"
                lines.append(f"  {lane} {booking_id}: {steps}")
        return "\n".join(lines)

    async def stats(self, lanes: str | Iterable[str] = "all") -> dict[str, LaneStats]:
        return {lane: await self.backend(lane).stats() for lane in _lanes(lanes)}

    async def worker_restarts(self, lanes: str | Iterable[str] = "all") -> dict[str, int]:
        """Per lane: worker processes a pool started again after they died."""
        return {lane: int(await self.redis.get(keys.worker_restarts(lane)) or 0)
                for lane in _lanes(lanes)}

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
        await self.redis.aclose()


def _lanes(lanes: str | Iterable[str]) -> list[str]:
    return lanes_of(lanes) if isinstance(lanes, str) else lanes_of(",".join(lanes))
