"""Per-lane gauges for `/metrics`: what each lane holds right now, as its broker reports it.

Counters and the latency histogram come from the shared Redis metrics (labkit.metrics);
these gauges come from each backend's live stats, so a lane whose broker is down simply has
no samples (its `labkit_lane_up` gauge is 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

# gauge name → (help text, how to read it from LaneStats.as_dict())
GAUGES = {
    "waiting": ("Bookings queued and not yet picked up", lambda s: s["waiting"]),
    "in_flight": ("Bookings being processed or waiting for a retry", lambda s: s["active"] + s["retrying"]),
    "lag": ("The technology's own lag: BullMQ wait list, Streams group lag, Kafka end - committed offset",
            lambda s: s["lag"]),
    "dlq_size": ("Letters in the lane's dead-letter queue", lambda s: s["dlq_size"]),
    "workers": ("Live worker processes that checked in", lambda s: s["workers"]),
}


class _LaneGauges:
    def __init__(self, stats: Iterable[Mapping[str, Any]]) -> None:
        self.stats = list(stats)

    def collect(self):
        up = GaugeMetricFamily("labkit_lane_up", "1 when the lane's broker answered", labels=["lane"])
        for s in self.stats:
            up.add_metric([s["lane"]], 0 if s.get("error") else 1)
        yield up
        for name, (help_text, read) in GAUGES.items():
            family = GaugeMetricFamily(f"labkit_lane_{name}", help_text, labels=["lane"])
            for s in self.stats:
                value = None if s.get("error") else read(s)
                if value is not None:
                    family.add_metric([s["lane"]], value)
            yield family


def gauges_text(stats: Iterable[Mapping[str, Any]]) -> bytes:
    """Prometheus text for the per-lane gauges (LaneStats dicts, or `{"lane", "error"}`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LaneGauges(stats))
    return generate_latest(registry)
