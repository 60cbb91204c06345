"""Background runs a notebook owns, so widgets act while work flows.

ipykernel handles widget messages only between cells: a cell that awaits a long run ignores
every slider until it ends. So a live lesson starts its work in one cell and returns at once:

    run = live.start(playground.run)      # the cell ends; bookings keep flowing
    slider.observe(lambda c: run.soon(pool.scale_async, c["new"]), names="value")
    ...
    await run.stop()                       # a later cell: cancel, and wait for the teardown

The run is one anyio task group, held open by a task on the kernel's event loop. Everything
the run does — its main coroutine, what widgets ask through `soon` — is a task of that group,
so nothing outlives `stop()`. Widgets bound with `bind` are disabled once the run has ended:
a stopped run never starts worker processes again. Functions given to `at_exit` (e.g. a
pool's `close`) run if the kernel shuts down while the run is still going.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from labkit.tasks import task_group

T = TypeVar("T")
_RUNNING: set[LiveRun[Any]] = set()


class RunStopped(RuntimeError):
    """The run has ended: it takes no more work."""


class LiveRun(Generic[T]):
    """`main(tasks)` running in the background in its own task group; see the module doc."""

    def __init__(self, main: Callable[[TaskGroup], Awaitable[T]]) -> None:
        self._main = main
        self._tasks: TaskGroup | None = None
        self._ready = asyncio.Event()
        self._exit_calls: list[Callable[[], Any]] = []
        self._on_end: list[Callable[[], Any]] = []
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._ended)
        _RUNNING.add(self)

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def _run(self) -> T:
        async with task_group() as tasks:
            self._tasks = tasks
            self._ready.set()
            return await self._main(tasks)

    def soon(self, call: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `call(*args)` as a task of this run (a widget's handler); refused once it ended."""
        if not self.running or self._tasks is None:
            raise RunStopped("this run has stopped; start a new one")
        self._tasks.start_soon(call, *args)

    def bind(self, *widgets: Any) -> None:
        """Disable these widgets when the run ends (now, if it already has)."""
        def disable() -> None:
            for widget in widgets:
                widget.disabled = True
        self._on_end.append(disable)
        if not self.running:
            disable()

    def at_exit(self, call: Callable[[], Any]) -> None:
        """`call()` if the interpreter exits while this run still runs (a kernel restart)."""
        self._exit_calls.append(call)

    async def result(self) -> T:
        """Wait for `main` to return, and return what it returned (or raise what it raised)."""
        return await asyncio.shield(self._task)

    async def stop(self) -> T | None:
        """Cancel the run and wait until its teardown has finished; None if it was cancelled."""
        await self._ready.wait()
        if self.running and self._tasks is not None:
            self._tasks.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait([self._task])
        return None if self._task.cancelled() else self._task.result()

    def _ended(self, _task: asyncio.Task) -> None:
        _RUNNING.discard(self)
        for call in self._on_end:
            call()


def start(main: Callable[[TaskGroup], Awaitable[T]]) -> LiveRun[T]:
    """Start `main(tasks)` in the background and return at once (call it from a cell)."""
    return LiveRun(main)


@atexit.register
def _close_running_runs() -> None:
    """The kernel is going away with runs still open: close what they hold (their pools)."""
    for run in list(_RUNNING):
        for call in run._exit_calls:
            call()
