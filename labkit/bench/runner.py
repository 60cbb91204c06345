"""One bench run: per lane the ceiling and the three layers, then the scaling curve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from labkit.bench.ceiling import kafka_ceiling, redis_ceiling
from labkit.bench.clients import RAW_LAYERS
from labkit.bench.layers import PIPELINE, RAW, TRANSPORT, LabLayer, Layer
from labkit.bench.machine import describe
from labkit.bench.measure import fixed_rate, repeated_max_rate
from labkit.bench.scaling import scaling_curve
from labkit.bench.stats import Repeated, ratio
from labkit.connections import redis_client
from labkit.settings import LANES, Settings

# The fixed rate: half the lab pipeline's max rate. That max is closed-loop with batched
# publishes; the open loop publishes one message per call, dearer for the lab, so a lab layer
# may run near its limit there (its latency then shows a queue: README, "The benchmark").
LATENCY_SHARE = 0.5


@dataclass(frozen=True)
class BenchConfig:
    lanes: tuple[str, ...] = LANES
    count: int = 2000  # messages per measured phase
    warmup: int = 200
    repeats: int = 3
    batch: int = 100  # messages per publish call, in every layer
    concurrency: int = 16  # messages in flight per consumer, in every layer
    latency_count: int = 400
    latency_rate: float | None = None  # msgs/s; None: LATENCY_SHARE × the lab pipeline's rate
    ceiling_count: int = 50_000
    scaling_workers: tuple[int, ...] = (1, 2, 4, 8)
    scaling_lanes: tuple[str, ...] | None = None  # None: every lane of the run
    scaling_bookings: int = 160
    scaling_time_scale: float = 0.01  # a booking's steps sleep 0.12 s: I/O-bound
    timeout_s: float = 600.0

    @classmethod
    def quick(cls, **changes) -> BenchConfig:
        """CI size: every layer and lane, small phases, a short scaling curve."""
        return replace(cls(count=200, warmup=30, repeats=3, latency_count=40, ceiling_count=5000,
                           scaling_workers=(1, 2), scaling_bookings=24, timeout_s=180.0), **changes)


@dataclass
class LaneResult:
    lane: str
    ceiling: dict = field(default_factory=dict)
    layers: dict[str, dict] = field(default_factory=dict)
    scaling: list[dict] = field(default_factory=list)
    _throughput: dict[str, Repeated] = field(default_factory=dict, repr=False)

    def ratios(self) -> dict[str, float | None]:
        t = self._throughput
        return {
            "transport_vs_raw": ratio(t.get(TRANSPORT), t.get(RAW)),
            "pipeline_vs_raw": ratio(t.get(PIPELINE), t.get(RAW)),
            "raw_vs_ceiling": (t[RAW].median / self.ceiling["per_s"]
                               if RAW in t and self.ceiling.get("per_s") else None),
        }

    def as_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return out | {"ratios": self.ratios()}


Progress = Callable[[str, dict], None]  # (what was measured, the results so far)


async def run(settings: Settings, config: BenchConfig, *, progress: Progress | None = None) -> dict:
    say = progress or (lambda _what, _results: None)
    redis = redis_client(settings)
    try:
        machine = await describe(redis)
    finally:
        await redis.aclose()
    lanes: dict[str, LaneResult] = {}

    def results() -> dict:
        return {"machine": machine, "config": asdict(config),
                "lanes": {lane: r.as_dict() for lane, r in lanes.items()}}

    for lane in config.lanes:
        lane_result = lanes[lane] = LaneResult(lane)
        lane_result.ceiling = (await _ceiling(settings, lane, config.ceiling_count)).as_dict()
        say(f"{lane} ceiling", results())
        rate = config.latency_rate
        for layer in _layers(settings, lane, config):
            async with layer:
                throughput = await repeated_max_rate(
                    layer, config.count, batch=config.batch, warmup=config.warmup,
                    repeats=config.repeats, timeout_s=config.timeout_s)
                rate = rate or max(1.0, LATENCY_SHARE * throughput.median)
                latency = await fixed_rate(layer, rate, config.latency_count, timeout_s=config.timeout_s)
            lane_result._throughput[layer.layer] = throughput
            lane_result.layers[layer.layer] = {
                "client": layer.client, "throughput": throughput.as_dict(),
                "latency": latency.summary() | {"rate_per_s": rate},
            }
            say(f"{lane} {layer.layer}", results())
        if lane in (config.scaling_lanes or config.lanes):
            lane_result.scaling = [p.as_dict() for p in await scaling_curve(
                settings, lane, workers=config.scaling_workers, bookings=config.scaling_bookings,
                time_scale=config.scaling_time_scale, timeout_s=config.timeout_s)]
            say(f"{lane} scaling", results())
    return results()


def _layers(settings: Settings, lane: str, config: BenchConfig) -> list[Layer]:
    """The lab pipeline first: its rate sets the fixed rate every layer's latency is taken at."""
    c = config.concurrency
    return [LabLayer(lane, settings, concurrency=c, full_pipeline=True),
            LabLayer(lane, settings, concurrency=c, full_pipeline=False),
            RAW_LAYERS[lane](lane, settings, concurrency=c)]


async def _ceiling(settings: Settings, lane: str, count: int):
    measure = kafka_ceiling if lane == "kafka" else redis_ceiling
    return await asyncio.to_thread(measure, settings, count)
