"""The bench's charts in a notebook, redrawn in place after each measured layer."""

from __future__ import annotations

from IPython.display import display

from labkit.bench import report
from labkit.notebook.widgets import static_bundle

FIGURES = (report.throughput_figure, report.latency_figure, report.scaling_figure)


class LiveCharts:
    """`run(..., progress=charts.update)`: each chart is one display, updated as results come."""

    def __init__(self) -> None:
        self._handles = None

    def update(self, what: str, results: dict) -> None:
        bundles = [static_bundle(figure(results)) for figure in FIGURES]
        if self._handles is None:
            self._handles = [display(b, raw=True, display_id=True) for b in bundles]
        else:
            for handle, bundle in zip(self._handles, bundles, strict=True):
                handle.update(bundle, raw=True)
        print(f"measured {what}")
