"""Plotly views of the three lanes, fed plain data so they are easy to test.

Each chart owns a figure (a live `FigureWidget` when anywidget is installed, else a plain
`Figure`) and one `update(...)` method that takes snapshots or booking statuses. Nothing here
talks to a broker: `labkit.notebook.widgets.Board` does the fetching and calls these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.pipeline import STEPS
from labkit.settings import LANES

LANE_COLORS = {"bullmq": "#d6336c", "streams": "#1c7ed6", "kafka": "#2b8a3e"}
STEP_COLORS = dict(
    zip(
        (s.name for s in STEPS),
        ("#868e96", "#f59f00", "#7048e8", "#15aabf", "#37b24d"),
        strict=True,
    )
)

# Lag is not one quantity: each technology reports its own (LaneStats.lag), so the chart names it.
LAG_MEANING = {
    "bullmq": "jobs waiting (wait + prioritized)",
    "streams": "entries not yet delivered to the group (XINFO GROUPS lag)",
    "kafka": "end offset − committed offset (summed over partitions)",
}


def live(fig: go.Figure) -> go.Figure:
    """A `FigureWidget` copy that redraws in place in JupyterLab; the figure itself without
    anywidget (headless runs and tests still get the same data)."""
    try:
        return go.FigureWidget(fig)
    except ImportError:
        return fig


def finished(stats) -> int:
    return stats.completed + stats.rejected + stats.dead_lettered


class ThroughputChart:
    """Finished bookings per second (top) and lag (bottom), one line per lane. Lag is each
    technology's own measure (LAG_MEANING); bookings waiting for a retry are not in it."""

    def __init__(self, lanes: Sequence[str] = LANES, *, title: str = "Throughput and lag") -> None:
        self.lanes = list(lanes)
        fig = make_subplots(
            rows=2,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.08,
            subplot_titles=("finished / s", "lag, as each technology defines it (hover a line)"),
        )
        for row, kind in ((1, "rate"), (2, "lag")):
            for lane in self.lanes:
                fig.add_scatter(
                    x=[],
                    y=[],
                    mode="lines+markers",
                    name=lane,
                    legendgroup=lane,
                    hovertemplate=f"{lane}: %{{y}} " + (LAG_MEANING.get(lane, "") if kind == "lag" else "per s")
                    + "<extra></extra>",
                    showlegend=row == 1,
                    line={"color": LANE_COLORS.get(lane)},
                    row=row,
                    col=1,
                    meta=kind,
                )
        fig.update_layout(
            title=title, height=420, margin={"t": 60, "b": 30}, xaxis2={"title": "seconds"}
        )
        self.figure = live(fig)
        self.t: list[float] = []
        self.rate: dict[str, list[float]] = {lane: [] for lane in self.lanes}
        self.lag: dict[str, list[int]] = {lane: [] for lane in self.lanes}
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, t: float, stats: Mapping[str, Any]) -> None:
        """Add one sample: `stats` maps lane → LaneStats at elapsed time `t` seconds."""
        self.t.append(round(t, 2))
        for lane in self.lanes:
            s = stats.get(lane)
            done = finished(s) if s else 0
            prev_t, prev_done = self._last.get(lane, (t, done))
            dt = t - prev_t
            self.rate[lane].append(round((done - prev_done) / dt, 2) if dt > 0 else 0.0)
            self.lag[lane].append(int(s.lag or 0) if s else 0)
            self._last[lane] = (t, done)
        with _batch(self.figure):
            for trace in self.figure.data:
                values = self.rate if trace.meta == "rate" else self.lag
                trace.x = list(self.t)
                trace.y = list(values[trace.name])

    def peak_rate(self, lane: str) -> float:
        return max(self.rate[lane], default=0.0)


class StepTimeline:
    """One row per booking and lane, a coloured bar per pipeline step (from its history)."""

    def __init__(self, *, title: str = "Step timeline (seconds since the first publish)") -> None:
        fig = go.Figure()
        for step in STEPS:
            fig.add_bar(
                x=[],
                y=[],
                base=[],
                orientation="h",
                name=step.name,
                marker_color=STEP_COLORS[step.name],
            )
        fig.update_layout(
            title=title,
            barmode="overlay",
            height=360,
            margin={"t": 50},
            yaxis={"autorange": "reversed"},
            xaxis={"title": "seconds"},
        )
        self.figure = live(fig)
        self.segments: list[dict[str, Any]] = []

    def update(self, statuses: Iterable[Any]) -> None:
        statuses = [s for s in statuses if s is not None]
        t0 = min((float(h["at"]) for s in statuses for h in s.history), default=0.0)
        self.segments = [seg for s in statuses for seg in step_segments(s, t0)]
        with _batch(self.figure):
            for trace in self.figure.data:
                mine = [seg for seg in self.segments if seg["step"] == trace.name]
                trace.y = [seg["row"] for seg in mine]
                trace.base = [seg["start"] for seg in mine]
                trace.x = [seg["duration"] for seg in mine]
        self.figure.layout.height = max(300, 24 * len({seg["row"] for seg in self.segments}) + 120)


def step_segments(status: Any, t0: float = 0.0) -> list[dict[str, Any]]:
    """Each step's start and duration for one booking, from history notes '<step> started'."""
    history = status.history
    row = f"{status.lane} {status.booking_id[-5:]}"
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(history):
        detail = entry.get("detail", "")
        step = detail.removesuffix(" started")
        if detail.endswith(" started") and step in STEP_COLORS:
            end = float(history[i + 1]["at"]) if i + 1 < len(history) else float(entry["at"])
            # the step runs until the next note that starts something else or ends the attempt
            for later in history[i + 1 :]:
                end = float(later["at"])
                if later.get("detail", "").endswith(" started") or later["state"] != "active":
                    break
            start = float(entry["at"]) - t0
            out.append(
                {
                    "row": row,
                    "step": step,
                    "start": round(start, 4),
                    "duration": round(max(end - t0 - start, 0.001), 4),
                    "attempt": entry.get("attempt", ""),
                }
            )
    return out


class BackoffTimeline:
    """When each attempt of a retried booking started, and where it failed."""

    def __init__(self, *, title: str = "Attempts of retried bookings (● start, ✕ failure)") -> None:
        fig = go.Figure()
        fig.add_scatter(
            x=[],
            y=[],
            mode="markers+lines",
            name="attempt started",
            marker={"size": 10, "symbol": "circle"},
        )
        fig.add_scatter(
            x=[],
            y=[],
            mode="markers",
            name="failed → backoff",
            marker={"size": 11, "symbol": "x", "color": "#e03131"},
        )
        fig.update_layout(title=title, height=340, margin={"t": 50}, xaxis={"title": "seconds"})
        self.figure = live(fig)
        self.attempts: dict[str, list[float]] = {}
        self.retries: dict[str, list[dict[str, float | None]]] = {}

    def update(self, statuses: Iterable[Any]) -> None:
        statuses = [s for s in statuses if s is not None and s.attempts > 1]
        t0 = min((float(h["at"]) for s in statuses for h in s.history), default=0.0)
        starts_x, starts_y, fail_x, fail_y = [], [], [], []
        self.attempts, self.retries = {}, {}
        for s in statuses:
            row = f"{s.lane} {s.booking_id[-5:]}"
            starts = [
                round(float(h["at"]) - t0, 3) for h in s.history if h.get("detail") == "started"
            ]
            fails = [round(float(h["at"]) - t0, 3) for h in s.history if h["state"] == "retrying"]
            self.attempts[row] = starts
            self.retries[row] = retry_waits(s.history)
            starts_x += [*starts, None]
            starts_y += [row] * len(starts) + [None]
            fail_x += fails
            fail_y += [row] * len(fails)
        with _batch(self.figure):
            self.figure.data[0].x, self.figure.data[0].y = starts_x, starts_y
            self.figure.data[1].x, self.figure.data[1].y = fail_x, fail_y

    def gaps(self, row: str) -> list[float]:
        """Seconds between consecutive attempt starts: they grow with exponential backoff."""
        starts = self.attempts.get(row, [])
        return [round(b - a, 3) for a, b in pairwise(starts)]

    def scheduled(self, row: str) -> list[float]:
        """The backoff delay chosen after each failed attempt ("retry in X.XXs")."""
        return [r["scheduled_s"] for r in self.retries.get(row, []) if r["scheduled_s"] is not None]


_RETRY_IN = re.compile(r"retry in ([0-9]+(?:\.[0-9]+)?)s")


def retry_waits(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float | None]]:
    """Per failed attempt in a booking's history: when it failed, the backoff delay it was
    given (from the note "...; retry in X.XXs") and how long it really waited until the next
    attempt started (None if none started yet)."""
    out: list[dict[str, float | None]] = []
    for i, entry in enumerate(history):
        if entry.get("state") != "retrying":
            continue
        found = _RETRY_IN.search(entry.get("detail", ""))
        failed_at = float(entry["at"])
        next_start = next(
            (float(h["at"]) for h in history[i + 1 :] if h.get("detail") == "started"), None
        )
        out.append(
            {
                "failed_at": failed_at,
                "scheduled_s": float(found.group(1)) if found else None,
                "waited_s": None if next_start is None else round(next_start - failed_at, 3),
            }
        )
    return out


class PartitionTable:
    """Kafka: which consumer owns each partition of `bookings`, and its committed lag."""

    COLUMNS = ("partition", "consumer", "committed", "end", "lag")

    def __init__(
        self, *, title: str = "Kafka partitions of `bookings` in group booking-workers"
    ) -> None:
        fig = go.Figure(
            go.Table(
                header={"values": list(self.COLUMNS)}, cells={"values": [[] for _ in self.COLUMNS]}
            )
        )
        fig.update_layout(title=title, height=320, margin={"t": 50, "b": 10})
        self.figure = live(fig)
        self.rows: list[dict[str, Any]] = []

    def update(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        columns = [
            [r.get(c, "") if r.get(c) is not None else "—" for r in self.rows] for c in self.COLUMNS
        ]
        with _batch(self.figure):
            self.figure.data[0].cells.values = columns

    def idle_consumers(self, members: Iterable[str]) -> list[str]:
        owners = {r["consumer"] for r in self.rows}
        return sorted(m for m in members if m not in owners)


def _batch(fig: go.Figure):
    import contextlib

    return fig.batch_update() if isinstance(fig, go.FigureWidget) else contextlib.nullcontext()
