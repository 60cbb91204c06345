"""Lesson 12's playground: bookings flow on every lane for as long as you like, and sliders
change the rate, the workers and the faults while they flow.

    play = Playground(lab, workload)
    display(play.controls())       # rate, workers per lane, faults, poison, Stop, the board
    play.start()                   # returns at once: a live.LiveRun in the background
    ...                            # drag sliders (or set slider.value from a cell)
    summary = await play.stop()    # stop publishing, let this run's bookings finish, tear down

Everything runs as tasks of one `live.LiveRun`: the open-loop publisher, the board refresh and
every widget's handler. Stopping closes the worker pools and hands the learner's own faults
back (FaultStore.begin_lesson/end_lesson); the widgets are then disabled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import ipywidgets as w
from anyio.abc import TaskGroup

from labkit.faults import CACHE_S
from labkit.notebook import live
from labkit.notebook.lessons import retry_policy, wait_for_workers
from labkit.notebook.widgets import LaneBoard, booking_statuses
from labkit.settings import LANES
from labkit.status import TERMINAL

FAULT_STEPS = ("payment", "pdf")
FAULT_KNOBS = {"fail_rate": 1.0, "latency_s": 2.0, "crash_rate": 0.2}  # knob → slider maximum
TALLY_STATES = ("queued", "active", "retrying", "completed", "rejected", "dead-lettered")
TICK_S = 0.25  # the publisher's and the board's beat


@dataclass(frozen=True)
class Change:
    """A control the learner (or the notebook) moved, and when (epoch seconds)."""

    at: float
    control: str
    value: Any


class Playground:
    def __init__(
        self, lab, workload, *, lanes: Sequence[str] = LANES, rate: float = 4.0, workers: int = 1,
        max_workers: int = 4, concurrency: int = 4, drain_timeout_s: float = 90.0,
        stop_after_s: float | None = None, owns_lab: bool = False,
    ) -> None:
        """`stop_after_s`: stop by itself after that long (None: only Stop does); `owns_lab`:
        close `lab` when the run ends (a playground that outlives its lesson's `finish`)."""
        self.lab, self.workload, self.lanes = lab, workload, list(lanes)
        self.rate, self.workers, self.max_workers = rate, workers, max_workers
        self.concurrency, self.drain_timeout_s = concurrency, drain_timeout_s
        self.stop_after_s, self.owns_lab = stop_after_s, owns_lab
        self.published = 0  # bookings the open loop has sent (the poisons aside)
        self.accepted: list[str] = []  # this run's bookings every lane took
        self.poisoned: list[str] = []  # poison bookings published (each also in `accepted`)
        self._poison_clicks: list[str] = []  # every poison asked for; those not yet in
        # `poisoned` are on their way, and Stop's drain waits for them
        self.changes: list[Change] = []
        self.pools: dict[str, Any] = {}
        self.run: live.LiveRun[dict[str, Any]] | None = None
        self._stopping = anyio.Event()
        self.board = LaneBoard(self.lanes)
        self.tally = w.HTML()
        self.sliders = self._sliders()
        self.poison_button = w.Button(description="poison", button_style="warning",
                                      tooltip="publish a booking that fails on every attempt")
        self.stop_button = w.Button(description="Stop", button_style="danger")

    # -- widgets -----------------------------------------------------------------------------
    def _sliders(self) -> dict[str, w.Widget]:
        sliders: dict[str, w.Widget] = {"rate": w.FloatSlider(
            value=self.rate, min=0.0, max=30.0, step=0.5, description="bookings/s", continuous_update=False)}
        for lane in self.lanes:
            sliders[f"{lane}.workers"] = w.IntSlider(
                value=self.workers, min=0, max=self.max_workers, description=f"{lane} workers",
                continuous_update=False)
        for step in FAULT_STEPS:
            for knob, top in FAULT_KNOBS.items():
                sliders[f"{step}.{knob}"] = w.FloatSlider(
                    value=0.0, min=0.0, max=top, step=top / 20, description=f"{step} {knob}",
                    continuous_update=False, style={"description_width": "initial"})
        return sliders

    def controls(self) -> w.VBox:
        """Every control and the board; handlers act through the run once it has started."""
        for name, slider in self.sliders.items():
            slider.observe(lambda change, name=name: self._moved(name, change["new"]), names="value")
        self.poison_button.on_click(lambda _b: self._act("poison", self.poison))
        self.stop_button.on_click(lambda _b: self._stopping.set())
        sliders = list(self.sliders.values())
        return w.VBox([
            w.HBox([sliders[0], self.poison_button, self.stop_button]),
            w.HBox(sliders[1:1 + len(self.lanes)]),
            *(w.HBox(sliders[i:i + len(FAULT_KNOBS)])
              for i in range(1 + len(self.lanes), len(sliders), len(FAULT_KNOBS))),
            w.HBox([self.board.widget, self.tally]),
        ])

    def _moved(self, name: str, value: Any) -> None:
        if name == "rate":
            self.rate = value
            self.changes.append(Change(time.time(), name, value))
        elif name.endswith(".workers"):
            self._act(name, self.pools[name.split(".")[0]].scale_async, value)
        else:
            self._act(name, self.lab.faults.set, [f"{name}={value}"])

    def _act(self, name: str, call, *args: Any) -> None:
        if self.run is None:
            raise live.RunStopped("start the playground first: play.start()")
        self.run.soon(call, *args)
        self.changes.append(Change(time.time(), name, args[0] if args else True))

    # -- the run -------------------------------------------------------------------------------
    def start(self) -> live.LiveRun[dict[str, Any]]:
        self.run = live.start(self._main)
        self.run.bind(*self.sliders.values(), self.poison_button, self.stop_button)
        return self.run

    async def stop(self) -> dict[str, Any]:
        """What the Stop button does, then wait for the teardown: the run's summary."""
        self._stopping.set()
        assert self.run is not None, "the playground never started"
        return await self.run.result()

    async def workers_live(self, lane: str, count: int, *, timeout_s: float = 30.0) -> int:
        """Once the lane's pool has `count` processes, how many of them checked in."""
        with anyio.move_on_after(timeout_s):
            while self.pools[lane].size != count:
                await anyio.sleep(0.1)
        return await wait_for_workers(self.lab, lane, count, pids=self.pools[lane].pids, timeout_s=timeout_s)

    async def wait_for_retries(self, change: Change, reason: str, *, timeout_s: float) -> int:
        """Retries naming `reason` since `change`, once there is one (0 after `timeout_s`): on a
        busy lab this run's bookings may wait behind a backlog before they reach the step."""
        retries = 0
        with anyio.move_on_after(timeout_s):
            while not (retries := retries_after(await booking_statuses(self.lab, self.accepted), change, reason)):
                await anyio.sleep(TICK_S)
        return retries

    async def _main(self, tasks: TaskGroup) -> dict[str, Any]:
        await self.lab.faults.begin_lesson(retry_policy(self.lab.settings))  # a left-over worker follows it too
        try:
            async with self.lab.workers(self.lanes, count=self.workers, concurrency=self.concurrency) as pools:
                self.pools = dict(pools.pools)
                for pool in self.pools.values():
                    self.run.at_exit(pool.close)
                async with anyio.create_task_group() as flowing:
                    flowing.start_soon(self._publish)
                    flowing.start_soon(self._refresh)
                    with anyio.move_on_after(self.stop_after_s if self.stop_after_s else float("inf")):
                        await self._stopping.wait()
                    flowing.cancel_scope.cancel()
                with anyio.move_on_after(self.drain_timeout_s):
                    while self._poisoning or not _all_terminal(await self.lab.states(self.accepted, self.lanes)):
                        await self._show()
                        await anyio.sleep(TICK_S)
                return await self._show()
        finally:
            with anyio.CancelScope(shield=True):
                await self.lab.faults.end_lesson()
                if self.owns_lab:
                    await self.lab.close()

    async def _publish(self) -> None:
        """Open loop: bookings are due at `rate` per second whatever the workers manage."""
        due, last = 0.0, time.monotonic()
        while True:
            now = time.monotonic()
            due, last = due + self.rate * (now - last), now
            if (count := int(due)) > 0:
                bookings = self.workload.bookings(count, start=self.published)
                self.published += count
                await self._send(bookings)
                due -= count
            await anyio.sleep(TICK_S)

    async def _send(self, bookings: Sequence[Any]) -> None:
        await self.lab.publish(bookings, self.lanes)
        self.accepted += [b.bookingId for b in bookings]

    async def poison(self) -> str:
        """One booking that fails at validation on every attempt, until the DLQ takes it.
        A Stop pressed meanwhile still waits for it: the drain counts it from the click."""
        booking = self.workload.bookings(1, start=10**6 + len(self._poison_clicks))[0]
        self._poison_clicks.append(booking.bookingId)
        await self.lab.faults.set({"poison": ",".join(self._poison_clicks)})
        await anyio.sleep(2 * CACHE_S)  # every worker's cached faults now name it
        await self._send([booking])
        self.poisoned.append(booking.bookingId)
        return booking.bookingId

    @property
    def _poisoning(self) -> bool:
        return len(self._poison_clicks) > len(self.poisoned)

    async def _refresh(self) -> None:
        while True:
            await self._show()
            await anyio.sleep(TICK_S * 2)

    async def _show(self) -> dict[str, Any]:
        """Refresh the board (lane totals) and the tally (this run only); return the tally."""
        self.board.update(0.0, await self.lab.stats(self.lanes))
        counts = tally(await self.lab.states(self.accepted, self.lanes))
        self.tally.value = tally_html(counts, accepted=len(self.accepted))
        return {"accepted": len(self.accepted), "poisoned": list(self.poisoned), "by_lane": counts}


def _all_terminal(states: dict[str, dict[str, Any]]) -> bool:
    return all(s in TERMINAL for by_id in states.values() for s in by_id.values())


def tally(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per lane, how many of this run's bookings are in each state (None: not seen yet)."""
    return {lane: {s: n for s, n in Counter(str(s) if s else "queued" for s in by_id.values()).items()}
            for lane, by_id in states.items()}


def tally_html(counts: dict[str, dict[str, int]], *, accepted: int) -> str:
    head = "".join(f"<th style='padding:2px 10px'>{lane}</th>" for lane in counts)
    rows = "".join(
        f"<tr><td style='padding:2px 10px'>{state}</td>"
        + "".join(f"<td style='padding:2px 10px;text-align:right'>{by.get(state, 0)}</td>" for by in counts.values())
        + "</tr>" for state in TALLY_STATES)
    return f"<b>this run: {accepted} bookings</b><table><tr><th></th>{head}</tr>{rows}</table>"


def retries_after(statuses, change: Change, reason: str) -> int:
    """Retries whose note names `reason` that happened after `change`."""
    return sum(1 for s in statuses for h in s.history
               if h["state"] == "retrying" and reason in h["detail"] and float(h["at"]) >= change.at)


def dead_letterings(statuses, booking_id: str) -> dict[str, int]:
    """Per lane, how many times `booking_id` reached the DLQ (once is right)."""
    return {s.lane: sum(h["state"] == "dead-lettered" for h in s.history)
            for s in statuses if s.booking_id == booking_id}
