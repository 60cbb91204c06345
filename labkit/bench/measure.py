"""The two OpenMessaging-style measurements of a layer: max-rate throughput, and end-to-end
latency at a fixed rate counted from each message's intended send time."""

from __future__ import annotations

import asyncio
import time

from labkit.bench.histogram import LatencyHistogram
from labkit.bench.layers import Layer
from labkit.bench.pacing import intended_times, latency_from_intended, paced
from labkit.bench.stats import Repeated

POLL_S = 0.02


class Lost(RuntimeError):
    """Messages sent in a phase never finished: a result without them would be a lie."""


async def max_rate(layer: Layer, count: int, *, batch: int, timeout_s: float) -> float:
    """Closed loop: publish `count` messages in batches as fast as the layer takes them, while
    it consumes; messages per second from the first send to the last one handled."""
    base = await layer.completed()
    ids = layer.new_ids(count)
    started = time.perf_counter()
    for i in range(0, count, batch):
        await layer.publish(ids[i:i + batch])
    await _until(lambda: _handled(layer, base, count), timeout_s, layer, count)
    return count / (time.perf_counter() - started)


async def repeated_max_rate(
    layer: Layer, count: int, *, batch: int, warmup: int, repeats: int, timeout_s: float
) -> Repeated:
    """A warm-up phase (connections, JIT-less caches, consumer-group joins) is thrown away;
    then `repeats` measured phases."""
    await max_rate(layer, warmup, batch=batch, timeout_s=timeout_s)
    return Repeated(tuple([await max_rate(layer, count, batch=batch, timeout_s=timeout_s)
                           for _ in range(repeats)]))


async def fixed_rate(layer: Layer, rate_per_s: float, count: int, *, timeout_s: float) -> LatencyHistogram:
    """Open loop: message i is due at start + i / rate whatever happened before it; its
    latency runs from then to when the layer finished it (coordinated omission avoided)."""
    ids = layer.new_ids(count)
    async with layer.tracking(ids):
        schedule = intended_times(time.time() + 0.1, rate_per_s, count)
        async for index, _intended_at in paced(schedule):
            await layer.publish([ids[index]])
        await _until(lambda: _all_tracked(layer, ids), timeout_s, layer, count)
    return LatencyHistogram().record_all(
        latency_from_intended(intended_at, layer.done_at.pop(message_id))
        for message_id, intended_at in zip(ids, schedule, strict=True))


async def _handled(layer: Layer, base: int, count: int) -> bool:
    return await layer.completed() - base >= count


async def _all_tracked(layer: Layer, ids: list[str]) -> bool:
    return all(i in layer.done_at for i in ids)


async def _until(check, timeout_s: float, layer: Layer, count: int) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise Lost(f"{layer.lane} {layer.layer}: not all of {count} messages finished "
                   f"within {timeout_s:.0f} s") from None
