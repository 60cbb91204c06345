"""Is each broker answering? Redis PING and a Kafka metadata request, each with a short timeout.

kafka-python waits up to a minute for a broker that is down (bootstrap, then `max_block_ms`
on send), and its clients block a thread meanwhile. So the API asks this probe before it
touches the Kafka lane and fails fast instead. A result is reused for `ttl_s`, so a burst of
POSTs pays for one probe, not one each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from labkit.settings import Settings

# Which broker each lane needs (every lane keeps its status in Redis, Kafka's too).
NEEDS = {"bullmq": ("redis",), "streams": ("redis",), "kafka": ("redis", "kafka")}


@dataclass(frozen=True)
class Check:
    up: bool
    detail: str
    at: float

    def as_dict(self) -> dict[str, object]:
        return {"up": self.up, "detail": self.detail}


class BrokerProbe:
    def __init__(self, settings: Settings, redis: Redis, *, timeout_s: float = 2.0, ttl_s: float = 2.0) -> None:
        self.settings = settings
        self.redis = redis
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._last: dict[str, Check] = {}
        self._locks = {"redis": asyncio.Lock(), "kafka": asyncio.Lock()}

    async def check(self, broker: str, *, fresh: bool = False) -> Check:
        async with self._locks[broker]:  # one probe at a time; waiters reuse its answer
            last = self._last.get(broker)
            if last and not fresh and time.monotonic() - last.at < self.ttl_s:
                return last
            probe = self._redis if broker == "redis" else self._kafka
            try:
                detail = await asyncio.wait_for(probe(), self.timeout_s + 1.0)
                result = Check(True, detail, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - any failure means "down", and says why
                result = Check(False, f"{type(exc).__name__}: {exc}".strip(": "), time.monotonic())
            self._last[broker] = result
            return result

    async def all(self, *, fresh: bool = True) -> dict[str, Check]:
        redis, kafka = await asyncio.gather(self.check("redis", fresh=fresh), self.check("kafka", fresh=fresh))
        return {"redis": redis, "kafka": kafka}

    async def lane_down(self, lane: str) -> str | None:
        """Why `lane` cannot take a booking now, or None when its brokers answer."""
        for broker in NEEDS[lane]:
            result = await self.check(broker)
            if not result.up:
                return f"{broker} is down ({result.detail})"
        return None

    async def _redis(self) -> str:
        await self.redis.ping()
        return f"PING ok ({self.settings.redis_host_port[0]}:{self.settings.redis_host_port[1]})"

    async def _kafka(self) -> str:
        return await asyncio.to_thread(self._kafka_metadata)

    def _kafka_metadata(self) -> str:
        from labkit.kafka_admin import broker_count

        return f"metadata ok: {broker_count(self.settings, timeout_s=self.timeout_s)} broker(s)"
