"""What the dashboard shows, computed once per second however many browsers watch.

Stats come from each backend (depth, lag, DLQ, workers) guarded by the broker probe and a
timeout, so a broker that is down greys out its lane instead of stalling the stream;
throughput and latency come from the shared metrics in Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from labkit import keys
from labkit.api.health import BrokerProbe
from labkit.lab import Lab
from labkit.settings import LANES

STATS_TIMEOUT_S = 3.0
RATE_WINDOW_S = 5.0  # throughput = completions over the last few seconds, not one noisy tick


async def lane_stats(lab: Lab, probe: BrokerProbe, lane: str) -> dict[str, Any]:
    """LaneStats.as_dict(), or the lane name and why its broker did not answer."""
    down = await probe.lane_down(lane)
    if down:
        return {"lane": lane, "error": down}
    try:
        stats = await asyncio.wait_for(lab.backend(lane).stats(), STATS_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - one lane's trouble must not hide the others
        return {"lane": lane, "error": f"{type(exc).__name__}: {exc}"}
    return stats.as_dict()


class Snapshots:
    def __init__(self, lab: Lab, probe: BrokerProbe, *, max_age_s: float = 0.8) -> None:
        self.lab = lab
        self.probe = probe
        self.max_age_s = max_age_s
        self._last: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._last is None or time.time() - self._last["at"] > self.max_age_s:
                self._last = await self._take()
            return self._last

    async def _take(self) -> dict[str, Any]:
        now = time.time()
        stats = await asyncio.gather(*(lane_stats(self.lab, self.probe, lane) for lane in LANES))
        metrics = await self.lab.metrics.snapshot(LANES)
        completed = {lane: metrics[lane].counters.get("completed", 0) for lane in LANES}
        rates = self._rates(now, completed)
        lanes = {}
        for lane, st in zip(LANES, stats, strict=True):
            m = metrics[lane]
            lanes[lane] = {
                "completed": completed[lane],
                "published": m.counters.get("published", 0),
                "throughput": round(rates[lane], 2),
                "p50": _ms(m.quantile(0.5)),
                "p99": _ms(m.quantile(0.99)),
                "depth": st.get("waiting"),
                "lag": st.get("lag"),
                "inFlight": sum(st.get(k) or 0 for k in ("waiting", "active", "retrying")),
                "retries": m.counters.get("retried", 0),
                "dlq": st.get("dlq_size"),
                "workers": st.get("workers"),
                "error": st.get("error"),
            }
        return {"at": now, "lanes": lanes, "recent": await self._recent()}

    def _rates(self, now: float, completed: dict[str, int]) -> dict[str, float]:
        self._samples.append((now, completed))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        t0, first = self._samples[0]
        span = now - t0
        if span <= 0:
            return {lane: 0.0 for lane in completed}
        return {lane: max(0, completed[lane] - first.get(lane, 0)) / span for lane in completed}

    async def _recent(self, limit: int = 12) -> list[dict[str, Any]]:
        # Newest first across lanes: each lane's index is scored by first-seen time.
        newest: dict[str, float] = {}
        for lane in LANES:
            for booking_id, score in await self.lab.redis.zrevrange(keys.index(lane), 0, limit - 1, withscores=True):
                newest[booking_id] = max(score, newest.get(booking_id, 0.0))
        ids = sorted(newest, key=newest.__getitem__, reverse=True)[:limit]
        # Three fields per lane in one round trip; StatusStore.get would also fetch histories.
        pipe = self.lab.redis.pipeline(transaction=False)
        for booking_id in ids:
            for lane in LANES:
                pipe.hmget(keys.status(lane, booking_id), "state", "progress", "attempts")
        replies = iter(await pipe.execute())
        out = []
        for booking_id in ids:
            row: dict[str, Any] = {"bookingId": booking_id, "lanes": {}}
            for lane in LANES:
                state, progress, attempts = next(replies)
                if state:
                    row["lanes"][lane] = {"state": state, "progress": int(progress or 0),
                                          "attempts": int(attempts or 0)}
            out.append(row)
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
