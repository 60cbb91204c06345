"""A latency histogram in the HDR spirit: log-spaced buckets, a bounded relative error.

A value lands in the bucket `floor(log(v / floor) / log(1 + precision))`; any value in a
bucket is within `precision` of the bucket's upper edge, which is what a percentile reports
(as HdrHistogram reports the "highest equivalent value"). Memory stays a few hundred ints
for microseconds to minutes, and two histograms merge by adding counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

PERCENTILES = (50.0, 99.0, 99.9)


class LatencyHistogram:
    def __init__(self, *, floor_s: float = 1e-6, precision: float = 0.01) -> None:
        self.floor_s = floor_s  # anything faster is recorded as this
        self.precision = precision  # relative error of a reported value
        self._log_step = math.log1p(precision)
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max_s = 0.0
        self.min_s = math.inf

    def record(self, seconds: float) -> None:
        seconds = max(seconds, self.floor_s)
        self._buckets[int(math.log(seconds / self.floor_s) / self._log_step)] += 1
        self.count += 1
        self.max_s = max(self.max_s, seconds)
        self.min_s = min(self.min_s, seconds)

    def record_all(self, values: Iterable[float]) -> LatencyHistogram:
        for value in values:
            self.record(value)
        return self

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        if (other.floor_s, other.precision) != (self.floor_s, self.precision):
            raise ValueError("only histograms with the same floor and precision merge")
        self._buckets.update(other._buckets)
        self.count += other.count
        self.max_s = max(self.max_s, other.max_s)
        self.min_s = min(self.min_s, other.min_s)
        return self

    def percentile(self, p: float) -> float:
        """The smallest bucket edge at or below which p % of the values lie (never above max)."""
        if not self.count:
            raise ValueError("an empty histogram has no percentiles")
        rank = max(1, math.ceil(p * self.count / 100 - 1e-9))  # 99.9 % of 1000 is 999, not 999.0…1
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self._upper_edge(index), self.max_s)
        return self.max_s

    def summary(self) -> dict[str, float]:
        """p50/p99/p99.9/max in milliseconds, plus the count: what a report shows."""
        out = {f"p{p:g}_ms": self.percentile(p) * 1000 for p in PERCENTILES}
        return out | {"max_ms": self.max_s * 1000, "count": self.count}

    def _upper_edge(self, index: int) -> float:
        return self.floor_s * math.exp((index + 1) * self._log_step)
