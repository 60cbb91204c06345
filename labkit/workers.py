"""WorkerPool: real worker OS processes per lane — start, scale, stop gracefully, kill -9 —
supervised: a worker that dies without being asked to is started again after a pause that
grows while it keeps dying (0.5 s doubling to 10 s), and the restart is counted in Redis.

Every blocking call has an `..._async` twin that runs it in a worker thread, so a graceful
stop (which waits for in-flight jobs) never blocks the event loop."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import redis

from labkit import keys, processes
from labkit.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0  # a graceful stop waits this long for in-flight jobs, then kill -9
WATCH_EVERY_S = 0.2

PARENT_PID_ENV = "LABKIT_POOL_PID"  # a pool worker stops when this process is gone


class PoolClosed(RuntimeError):
    """The pool's `with` block has ended: it starts no more worker processes."""


@dataclass(eq=False)
class Worker:
    """One worker process and what its supervisor needs to know about it."""

    child: processes.Child
    backoff: processes.Backoff = field(default_factory=processes.Backoff)
    started: float = field(default_factory=time.monotonic)
    supervised: bool = True  # False once the pool stops or kills it on purpose


@dataclass(frozen=True)
class Restart:
    """A dead worker's replacement, due at `due` (monotonic), keeping its slot's backoff."""

    due: float
    backoff: processes.Backoff


class WorkerPool:
    """`labkit worker` processes for one lane. Use as a context manager: all stop on exit and
    the pool refuses to start more (a widget bound to it can no longer spawn anything)."""

    def __init__(self, lane: str, *, settings: Settings, concurrency: int = 1) -> None:
        self.lane = lane
        self.settings = settings
        self.concurrency = concurrency
        self.restarts = 0  # workers this pool started again after they died
        self._workers: list[Worker] = []  # running, or dead and not yet noticed
        self._exited: list[Worker] = []
        self._due: list[Restart] = []
        self._closed = False
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._counter = RestartCounter(settings, lane)
        self._on_close: list[Callable[[], Any]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.child.pid for w in self._workers if w.child.alive]

    @property
    def size(self) -> int:
        return len(self.pids)

    # -- blocking calls ------------------------------------------------------------------------
    def start(self, count: int = 1) -> list[int]:
        with self._lock:
            self._refuse_if_closed()
            started = [self._spawn(processes.Backoff()).child.pid for _ in range(count)]
            self._watch()
        return started

    def scale(self, count: int) -> list[int]:
        """Reach `count` workers: start new ones, or drop pending restarts and then stop the
        newest gracefully."""
        with self._lock:
            self._refuse_if_closed()
            live = [w for w in self._workers if w.supervised and w.child.alive]
            extra = len(live) + len(self._due) - count
            if extra < 0:
                self.start(-extra)
                return self.pids
            dropped = min(extra, len(self._due))
            del self._due[len(self._due) - dropped:]
            leaving = live[len(live) - (extra - dropped):] if extra > dropped else []
            for worker in leaving:
                worker.supervised = False
        processes.stop([w.child for w in leaving], timeout_s=STOP_TIMEOUT_S)
        return self.pids

    def kill(self, pid: int | None = None, *, restart: bool = False) -> int:
        """kill -9 one worker (the oldest live one by default): no cleanup, no goodbye. It stays
        dead unless `restart=True`, which lets the supervisor start it again like any crash."""
        with self._lock:
            targets = [w for w in self._workers if w.child.alive and pid in (None, w.child.pid)]
            if not targets:
                raise ValueError(f"no live {self.lane} worker" + (f" with pid {pid}" if pid else ""))
            victim = targets[0]
            victim.supervised = restart
        victim.child.kill()
        return victim.child.pid

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Graceful: SIGTERM lets each worker finish its in-flight jobs before exiting."""
        with self._lock:
            self._due.clear()
            for worker in self._workers:
                worker.supervised = False
            leaving = [w.child for w in self._workers]
        processes.stop(leaving, timeout_s=timeout_s)
        self._notice_exits()

    def on_close(self, call: Callable[[], Any]) -> None:
        """`call()` the moment the pool closes (now, if it has): a widget bound to it disables itself."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._on_close.append(call)
        if closed:
            call()

    def close(self) -> None:
        """Stop every worker and start no more; the supervisor ends with the pool."""
        with self._lock:
            self._closed = True
            watcher = self._watcher
            calls, self._on_close = self._on_close, []
        for call in calls:
            call()
        self.stop()
        if watcher is not None:
            watcher.join()
        self._counter.flush()

    def exit_codes(self) -> dict[int, int | None]:
        """Exit code of every worker this pool started (None while it runs)."""
        with self._lock:
            return {w.child.pid: w.child.exit_code for w in [*self._exited, *self._workers]}

    def logs(self, lines: int = 20) -> str:
        with self._lock:
            workers = [*self._exited, *self._workers]
        return "\n".join(
            f"--- {self.lane} worker {w.child.pid} ---\n" + "\n".join(w.child.tail(lines))
            for w in workers
        )

    # -- the same, off the event loop ---------------------------------------------------------
    async def start_async(self, count: int = 1) -> list[int]:
        return await _in_thread(self.start, count)

    async def scale_async(self, count: int) -> list[int]:
        return await _in_thread(self.scale, count)

    async def kill_async(self, pid: int | None = None, *, restart: bool = False) -> int:
        return await _in_thread(self.kill, pid, restart=restart)

    async def stop_async(self, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
        await _in_thread(self.stop, timeout_s=timeout_s)

    async def close_async(self) -> None:
        await _in_thread(self.close)

    # -- supervision ---------------------------------------------------------------------------
    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise PoolClosed(
                f"this {self.lane} worker pool has been closed (its `with` block ended); "
                "open a new one with `lab.workers(...)`"
            )

    def _spawn(self, backoff: processes.Backoff) -> Worker:
        child = processes.spawn(
            [sys.executable, "-m", "labkit", "worker", "--backend", self.lane,
             "--concurrency", str(self.concurrency)],
            log_path=self.settings.home / "logs" / f"worker-{self.lane}-{time.time_ns()}.log",
            # the worker stops by itself if this process dies without stopping the pool
            env={**os.environ, **self.settings.env(), PARENT_PID_ENV: str(os.getpid())},
        )
        worker = Worker(child, backoff)
        self._workers.append(worker)
        return worker

    def _watch(self) -> None:
        """Make sure a supervisor thread runs (called with the lock held)."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._supervise, name=f"{self.lane}-pool-supervisor", daemon=True
            )
            self._watcher.start()

    def _supervise(self) -> None:
        processes.wait_until(self._supervise_once, timeout_s=math.inf, interval_s=WATCH_EVERY_S)

    def _supervise_once(self) -> bool:
        """Notice deaths, start the restarts that are due; True once nothing is left to
        watch (the supervisor thread then ends)."""
        self._notice_exits()
        with self._lock:
            now = time.monotonic()
            for restart in [r for r in self._due if r.due <= now]:
                self._due.remove(restart)
                self._spawn(restart.backoff)
                self.restarts += 1
                self._counter.add()
            done = not self._workers and not self._due
            if done:
                self._watcher = None
        self._counter.flush()
        return done

    def _notice_exits(self) -> None:
        with self._lock:
            for worker in [w for w in self._workers if not w.child.alive]:
                self._workers.remove(worker)
                self._exited.append(worker)
                if worker.supervised and not self._closed:
                    pause = worker.backoff.pause_after(time.monotonic() - worker.started)
                    log.warning("%s worker %s exited with %s; restarting in %.1f s", self.lane,
                                worker.child.pid, worker.child.exit_code, pause)
                    self._due.append(Restart(time.monotonic() + pause, worker.backoff))


class RestartCounter:
    """The lane's restart count in Redis (for `labkit stats`); while Redis is away, restarts
    wait here and are added once it answers again."""

    def __init__(self, settings: Settings, lane: str) -> None:
        self.key = keys.worker_restarts(lane)
        self.url = settings.redis_url
        self.unreported = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.unreported += 1

    def flush(self) -> None:
        with self._lock:
            if not self.unreported:
                return
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1) as r:
                    r.incrby(self.key, self.unreported)
            except (redis.RedisError, OSError):
                return  # Redis is down: keep them for the next flush
            self.unreported = 0


async def _in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


class Workers:
    """Worker pools of several lanes that start together and stop together (side by side,
    off the event loop). Made by `Lab.workers`; `workers["kafka"]` is that lane's pool."""

    def __init__(self, pools: dict[str, WorkerPool], *, count: int = 1) -> None:
        self.pools = pools
        self.count = count

    def __getitem__(self, lane: str) -> WorkerPool:
        return self.pools[lane]

    def __iter__(self):
        return iter(self.pools)

    async def __aenter__(self) -> Self:
        if self.count:
            try:
                await self._each(lambda pool: pool.start_async(self.count))
            except BaseException:
                await self.__aexit__()
                raise
        return self

    async def __aexit__(self, *exc) -> None:
        with anyio.CancelScope(shield=True):  # even when cancelled: leave no process behind
            await self._each(WorkerPool.close_async)

    async def stop(self) -> None:
        """Stop every worker gracefully; the pools can start new ones afterwards."""
        await self._each(WorkerPool.stop_async)

    async def _each(self, call: Callable[[WorkerPool], Awaitable[Any]]) -> None:
        async with anyio.create_task_group() as group:
            for pool in self.pools.values():
                group.start_soon(call, pool)
