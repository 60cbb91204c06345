"""Live ipywidgets views for the notebooks, and the loop that keeps them fresh.

`Board(lab, views)` shows the views, then `await board.run_until(ids)` refreshes them while
workers run: lane stats every `interval_s`, status change events as they happen. It works
the same live in JupyterLab and headless under papermill; at the end every view is frozen
into static output (plotly HTML, plain HTML) so an exported notebook shows the real data.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import ipywidgets as w
import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import HTML, display, update_display

from labkit.notebook import charts
from labkit.settings import LANES
from labkit.status import TERMINAL, State
from labkit.tasks import task_group
from labkit.workers import PoolClosed

# this run's bookings (what the lesson published), then the lane as a whole (whoever published)
RUN_FIELDS = ("completed", "in flight", "retrying", "rejected", "dead-lettered")
LAB_FIELDS = ("lab: completed", "DLQ", "lag", "workers")
BOARD_FIELDS = RUN_FIELDS + LAB_FIELDS
RUN_STATES = {"completed": ("completed",), "in flight": ("queued", "active"), "retrying": ("retrying",),
              "rejected": ("rejected",), "dead-lettered": ("dead-lettered",)}
_plotly_ready = False


def use_static_plotly() -> None:
    """Embed plotly.js once (offline) so static figures render in HTML exports."""
    global _plotly_ready
    if not _plotly_ready:
        pio.renderers["notebook"].activate()
        _plotly_ready = True


def static_bundle(fig: go.Figure) -> dict[str, Any]:
    """JupyterLab renders the plotly mimetype; nbconvert's HTML export uses text/html."""
    fig = go.Figure(fig)  # a plain copy of a FigureWidget
    bundle = pio.renderers["notebook"].to_mimebundle(fig.to_plotly_json())
    bundle["application/vnd.plotly.v1+json"] = {**fig.to_plotly_json(), "config": {}}
    return bundle


def show_figure(fig: go.Figure) -> None:
    use_static_plotly()
    display(static_bundle(fig), raw=True)


class LaneBoard:
    """The three lanes side by side: this run's bookings by state (`count_run`, fed by Board
    with the bookings it follows; "—" until then), and beside them the lane's lab-wide totals,
    DLQ size, lag (per technology: `charts.LAG_MEANING`) and live workers (`update`)."""

    def __init__(self, lanes: Sequence[str] = LANES) -> None:
        self.lanes = list(lanes)
        self.values: dict[str, dict[str, Any]] = {lane: dict.fromkeys(BOARD_FIELDS, "—") for lane in self.lanes}
        self.widget = w.HTML(self.html())

    def update(self, t: float, stats: dict[str, Any]) -> None:
        for lane, s in stats.items():
            if lane in self.values:
                self.values[lane].update({
                    "lab: completed": s.completed, "DLQ": s.dlq_size,
                    "lag": "—" if s.lag is None else s.lag, "workers": s.workers,
                })
        self.widget.value = self.html()

    def count_run(self, states: dict[str, dict[str, State | None]]) -> None:
        """This run's bookings per state: `states` maps lane → booking id → state (None: unknown yet)."""
        for lane, by_id in states.items():
            if lane in self.values:
                found = [str(s) for s in by_id.values() if s is not None]
                self.values[lane].update({f: sum(s in RUN_STATES[f] for s in found) for f in RUN_FIELDS})
        self.widget.value = self.html()

    def html(self) -> str:
        head = "".join(f"<th style='padding:2px 12px;color:{charts.LANE_COLORS.get(lane)}'>{lane}</th>"
                       for lane in self.lanes)
        rows = "".join(
            f"<tr><td style='padding:2px 12px'>{f}</td>"
            + "".join(f"<td style='padding:2px 12px;text-align:right'>{self.values[lane][f]}</td>"
                      for lane in self.lanes) + "</tr>"
            for f in BOARD_FIELDS
        )
        return f"<table><tr><th></th>{head}</tr>{rows}</table>"

    def static(self) -> HTML:
        return HTML(self.html())


class ProgressBars:
    """One progress bar per booking and lane, moved by status change events."""

    COLORS: ClassVar[dict[str, str]] = {"completed": "success", "rejected": "warning", "dead-lettered": "danger",
              "retrying": "warning", "active": "info", "queued": ""}

    def __init__(self, booking_ids: Sequence[str], lanes: Sequence[str] = LANES, *, limit: int = 12) -> None:
        self.lanes = list(lanes)
        self.ids = list(booking_ids)[:limit]
        self.state = {(lane, b): ("queued", 0) for lane in self.lanes for b in self.ids}
        self.bars = {key: w.IntProgress(value=0, min=0, max=100, description=key[1][-5:],
                                        layout=w.Layout(width="260px")) for key in self.state}
        columns = [w.VBox([w.HTML(f"<b>{lane}</b>"), *(self.bars[(lane, b)] for b in self.ids)])
                   for lane in self.lanes]
        self.widget = w.HBox(columns)

    def feed(self, event: dict[str, str]) -> None:
        key = (event.get("lane"), event.get("bookingId"))
        if key not in self.state:
            return
        state, progress = event.get("state", "queued"), self.state[key][1]
        if event.get("progress"):
            progress = int(event["progress"])
        if state == "queued":
            progress = 0
        self.state[key] = (state, progress)
        bar = self.bars[key]
        bar.value, bar.bar_style = progress, self.COLORS.get(state, "")

    def static(self) -> HTML:
        cells = []
        for lane in self.lanes:
            rows = "".join(
                f"<div>{b[-5:]} <progress value='{self.state[(lane, b)][1]}' max='100'></progress> "
                f"{self.state[(lane, b)][0]}</div>" for b in self.ids)
            cells.append(f"<td style='vertical-align:top;padding:0 12px'><b>{lane}</b>{rows}</td>")
        return HTML(f"<table><tr>{''.join(cells)}</tr></table>")


@dataclass
class BoardRun:
    """What a board running in the background (`Board.running`) ended with."""

    states: dict[str, dict[str, State | None]] = field(default_factory=dict)


def _all_terminal(states: dict[str, dict[str, State | None]]) -> bool:
    return all(s in TERMINAL for by_id in states.values() for s in by_id.values())


class Board:
    """Shows views and refreshes them while workers run; `run_until` ends in static output.

    Views may implement `update(t, stats)` (lane stats), `feed(event)` (status events) and
    `static()`; charts from `labkit.notebook.charts` are wrapped so their figure is what is shown.
    Status-based charts (StepTimeline, BackoffTimeline) are refreshed from booking history.
    """

    def __init__(self, lab, views: Iterable[Any], *, lanes: Sequence[str] = LANES) -> None:
        self.lab = lab
        self.views = list(views)
        self.lanes = list(lanes)
        self.started = time.time()
        self._since = f"{int(self.started * 1000) - 1}-0"  # events from just before we began
        self._handles: list[Any] = []
        self.samples: list[tuple[float, dict[str, Any]]] = []

    def show(self) -> Board:
        use_static_plotly()
        self._handles = [display(_live_widget(v), display_id=True) for v in self.views]
        return self

    async def run_until(
        self, booking_ids: Iterable[str] | None = None, *, timeout_s: float = 60.0,
        seconds: float | None = None, interval_s: float = 0.5, freeze: bool = True,
    ) -> dict[str, dict[str, State | None]]:
        """Refresh until every booking is terminal on every lane (or `seconds` have passed);
        returns the last states. Raises TimeoutError after `timeout_s` like Lab.wait_for."""
        if not self._handles:
            self.show()
        ids = list(booking_ids or [])
        states: dict[str, dict[str, State | None]] = {}
        done = False
        async with task_group() as tasks:
            tasks.start_soon(self._follow)
            with anyio.move_on_after(seconds if seconds is not None else timeout_s):
                while True:
                    states = await self.refresh(ids)
                    if done := bool(ids) and _all_terminal(states):
                        break
                    await anyio.sleep(interval_s)
            tasks.cancel_scope.cancel()
        await self.refresh(ids, histories=True)
        if freeze:
            self.freeze()
        if ids and seconds is None and not done:
            raise TimeoutError(await self.lab.unfinished(states, timeout_s))
        return states

    @contextlib.asynccontextmanager
    async def running(
        self, booking_ids: Iterable[str] | None = None, **options: Any
    ) -> AsyncIterator[BoardRun]:
        """`async with board.running(ids) as run:` — the board refreshes in the background
        while the block publishes, scales, moves sliders; leaving the block waits until the
        board is done (`run_until`'s options), then `run.states` holds what it returned."""
        run = BoardRun()

        async def board_run() -> None:
            run.states = await self.run_until(booking_ids, **options)

        async with task_group() as tasks:
            tasks.start_soon(board_run)
            yield run

    async def refresh(
        self, booking_ids: Sequence[str] = (), *, histories: bool = False
    ) -> dict[str, dict[str, State | None]]:
        """One refresh of every view; returns the states of `booking_ids` on the board's lanes."""
        t = time.time() - self.started
        stats = await self.lab.stats(self.lanes)
        self.samples.append((t, stats))
        states = await self.lab.states(booking_ids, self.lanes) if booking_ids else {}
        for view in self.views:
            if hasattr(view, "update") and not isinstance(view, _HISTORY_VIEWS):
                view.update(t, stats)
            if states and hasattr(view, "count_run"):
                view.count_run(states)
        history_views = [v for v in self.views if isinstance(v, _HISTORY_VIEWS)]
        if history_views and booking_ids and (histories or len(self.samples) % 4 == 1):
            statuses = await booking_statuses(self.lab, booking_ids, self.lanes)
            for view in history_views:
                view.update(statuses)
        return states

    async def _follow(self) -> None:
        feeders = [v for v in self.views if hasattr(v, "feed")]
        if not feeders:
            return
        store = self.lab.status
        async for _id, event in store.follow(last_id=self._since, block_ms=300):
            for view in feeders:
                view.feed(event)

    def freeze(self) -> None:
        """Replace each live view by static output holding the same data."""
        for view, handle in zip(self.views, self._handles, strict=False):
            figure = getattr(view, "figure", None)
            if figure is not None:
                update_display(static_bundle(figure), display_id=handle.display_id, raw=True)
            else:
                update_display(view.static(), display_id=handle.display_id)


_HISTORY_VIEWS = (charts.StepTimeline, charts.BackoffTimeline)


def _live_widget(view: Any) -> Any:
    return getattr(view, "widget", None) or view.figure


async def booking_statuses(lab, booking_ids: Iterable[str], lanes: Sequence[str] = LANES) -> list[Any]:
    ids = list(booking_ids)
    out = []
    for lane in lanes:
        store = lab.status
        out += [s for s in await asyncio.gather(*(store.get(lane, b) for b in ids)) if s is not None]
    return out


# -- controls ----------------------------------------------------------------------------------
def workers_slider(pool, *, max_workers: int = 6, description: str | None = None) -> w.IntSlider:
    """Drag to start or stop worker processes of `pool` (WorkerPool.scale). The moment the pool
    closes (its cell's `async with lab.workers(...)` ended) the slider is disabled: it never
    spawns unmanaged workers."""
    slider = w.IntSlider(value=pool.size, min=0, max=max_workers,
                         description=description or f"{pool.lane} workers", continuous_update=False)

    def stopped() -> None:
        slider.disabled, slider.description = True, "pool stopped"

    def changed(change: dict[str, Any]) -> None:
        if slider.disabled:
            return
        try:
            pool.scale(change["new"])
        except PoolClosed:
            stopped()

    slider.observe(changed, names="value")
    if hasattr(pool, "on_close"):
        pool.on_close(stopped)
    return slider


# the lesson's controls, by the lab's fault store: `finish` disables them (release_lesson)
_LESSON_WIDGETS: weakref.WeakKeyDictionary[Any, list[w.Widget]] = weakref.WeakKeyDictionary()


def bind_to_lesson(faults, *controls: w.Widget) -> None:
    """Disable `controls` when the lesson that owns `faults` finishes (session.finish)."""
    _LESSON_WIDGETS.setdefault(faults, []).extend(controls)


def release_lesson(faults) -> None:
    """The lesson has finished: every control bound to it is disabled at once."""
    for control in _LESSON_WIDGETS.pop(faults, []):
        control.disabled = True


def failure_slider(faults, *, step: str = "payment", value: float = 0.0) -> w.FloatSlider:
    """Drag to change `<step>.fail_rate` for every running worker (FaultStore.set). Disabled
    once the lesson finishes: it writes nothing after that."""
    slider = w.FloatSlider(value=value, min=0.0, max=1.0, step=0.05, description=f"{step} fails",
                           continuous_update=False, readout_format=".0%")
    slider.tasks = []  # the last writes, so a cell can await them: await asyncio.gather(*slider.tasks)

    def changed(change: dict[str, Any]) -> None:
        if slider.disabled:
            return
        task = asyncio.get_event_loop().create_task(faults.set([f"{step}.fail_rate={change['new']}"]))
        slider.tasks.append(task)

    slider.observe(changed, names="value")
    bind_to_lesson(faults, slider)
    return slider


def table(rows: Sequence[dict[str, Any]], *, columns: Sequence[str] | None = None) -> HTML:
    """A small HTML table of dicts, for DLQ contents, keys, offsets."""
    columns = list(columns or (rows[0].keys() if rows else []))
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left;padding:2px 10px'>{html.escape(_short(r.get(c)))}</td>"
                         for c in columns) + "</tr>" for r in rows)
    return HTML(f"<table><tr>{head}</tr>{body}</table>")


def _short(value: Any, limit: int = 90) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["Board", "BoardRun", "LaneBoard", "ProgressBars", "bind_to_lesson", "booking_statuses",
           "failure_slider", "release_lesson", "show_figure", "static_bundle", "table", "workers_slider"]
