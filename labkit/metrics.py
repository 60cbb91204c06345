"""Counters and end-to-end latency histograms, shared by every process through Redis.

Workers are separate OS processes, so an in-process prometheus registry would see only one
of them. Counts live in Redis hashes; `/metrics` turns a snapshot into Prometheus text with
prometheus_client's own metric families.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from redis.asyncio import Redis

from labkit import keys
from labkit.round_trip import coalescer
from labkit.text import as_text as _s

# Seconds from publish to a terminal state; spans time_scale 0 (ms) to seed durations (12 s+).
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120)
# Lua: count a booking that first arrived at a terminal state, and its latency from publish
# (both times epoch seconds as text; no publish time, no latency). The status change calls it
# in the same script (status.py).
_LUA_BUCKETS = ", ".join(f"{{{bound!r}, 'b:{bound}'}}" for bound in BUCKETS_S)  # {bound, field}
COUNT_FINISHED_FN = "local latency_buckets = {" + _LUA_BUCKETS + "}" + """
local function count_finished(counters, latency, state, now, published_at)
  redis.call('HINCRBY', counters, (string.gsub(state, '-', '_')), 1)
  if published_at == '' then return end
  local seconds = math.max(0, tonumber(now) - tonumber(published_at))
  local field = 'b:inf'
  for _, bucket in ipairs(latency_buckets) do
    if seconds <= bucket[1] then field = bucket[2]; break end
  end
  redis.call('HINCRBY', latency, field, 1)
  redis.call('HINCRBYFLOAT', latency, 'sum', tostring(seconds))
  redis.call('HINCRBY', latency, 'count', 1)
end
"""
COUNTERS = (
    "published",
    "started",
    "completed",
    "rejected",
    "dead_lettered",
    "retried",
    "redriven",
    "duplicate_effects",
    "replays_prevented",
)


@dataclass
class LaneMetrics:
    lane: str
    counters: dict[str, int] = field(default_factory=dict)
    buckets: dict[float, int] = field(default_factory=dict)  # cumulative count per bound
    latency_sum_s: float = 0.0
    latency_count: int = 0

    def quantile(self, q: float) -> float | None:
        """Latency at quantile q, interpolated inside the histogram bucket (as Prometheus)."""
        if not self.latency_count:
            return None
        rank = q * self.latency_count
        lower_bound, lower_count = 0.0, 0
        for bound in BUCKETS_S:
            count = self.buckets.get(bound, 0)
            if count >= rank:
                span = count - lower_count
                fraction = (rank - lower_count) / span if span else 1.0
                return lower_bound + (bound - lower_bound) * fraction
            lower_bound, lower_count = bound, count
        return BUCKETS_S[-1]


class Metrics:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._round_trip = coalescer(redis)  # counters ride with the status changes

    async def incr(self, lane: str, counter: str, by: int = 1) -> None:
        await self._round_trip.run(lambda pipe: pipe.hincrby(keys.counters(lane), counter, by))

    async def snapshot(self, lanes: Iterable[str]) -> dict[str, LaneMetrics]:
        lanes = list(lanes)
        pipe = self._redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.hgetall(keys.counters(lane))
            pipe.hgetall(keys.latency(lane))
        replies = await pipe.execute()
        out = {}
        for i, lane in enumerate(lanes):
            counters, latency = replies[2 * i], replies[2 * i + 1]
            out[lane] = _lane_metrics(lane, counters, latency)
        return out


def _lane_metrics(lane: str, counters: dict, latency: dict) -> LaneMetrics:
    text = {_s(k): _s(v) for k, v in latency.items()}
    running, buckets = 0, {}
    for bound in BUCKETS_S:
        running += int(text.get(f"b:{bound}", 0))
        buckets[bound] = running
    return LaneMetrics(
        lane=lane,
        counters={c: 0 for c in COUNTERS} | {_s(k): int(v) for k, v in counters.items()},
        buckets=buckets,
        latency_sum_s=float(text.get("sum", 0)),
        latency_count=int(text.get("count", 0)),
    )


def prometheus_text(snapshot: dict[str, LaneMetrics]) -> bytes:
    """The snapshot in Prometheus' text format, rendered by prometheus_client."""

    class _Collector:
        def collect(self):
            for counter in COUNTERS:
                family = CounterMetricFamily(
                    f"labkit_bookings_{counter}", f"Bookings {counter} per lane", labels=["lane"]
                )
                for lane, m in snapshot.items():
                    family.add_metric([lane], m.counters.get(counter, 0))
                yield family
            histogram = HistogramMetricFamily(
                "labkit_booking_latency_seconds",
                "Seconds from publish to a terminal state",
                labels=["lane"],
            )
            for lane, m in snapshot.items():
                cumulative = [(str(b), m.buckets[b]) for b in BUCKETS_S]
                cumulative.append(("+Inf", m.latency_count))
                histogram.add_metric([lane], cumulative, sum_value=m.latency_sum_s)
            yield histogram

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)
