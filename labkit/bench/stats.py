"""Repeated measurements: the median of the runs, with their spread shown beside it."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Repeated:
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the runs lie within 10 % of their median."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"median": self.median, "spread": self.spread}


def ratio(part: Repeated | None, whole: Repeated | None) -> float | None:
    """part / whole of two medians, or None when either was not measured."""
    if part is None or whole is None or not whole.median:
        return None
    return part.median / whole.median
