"""WorkerPool: real worker OS processes per lane — start, scale, stop gracefully, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from labkit.settings import Settings


@dataclass
class WorkerProcess:
    lane: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class WorkerPool:
    """`labkit worker` processes for one lane. Use as a context manager: all stop on exit."""

    def __init__(self, lane: str, *, settings: Settings, concurrency: int = 1) -> None:
        self.lane = lane
        self.settings = settings
        self.concurrency = concurrency
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive]

    @property
    def size(self) -> int:
        return len(self.pids)

    def start(self, count: int = 1) -> list[int]:
        log_dir = self.settings.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.env()}
        started = []
        for _ in range(count):
            log_path = log_dir / f"worker-{self.lane}-{time.time_ns()}.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "labkit", "worker", "--backend", self.lane,
                     "--concurrency", str(self.concurrency)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C in the notebook is not the workers'
                )
            self.workers.append(WorkerProcess(self.lane, process, log_path))
            started.append(process.pid)
        return started

    def scale(self, count: int) -> list[int]:
        """Reach `count` live workers: start new ones or stop the newest gracefully."""
        self._forget_dead()
        if count > self.size:
            self.start(count - self.size)
        else:
            for worker in self.workers[count:]:
                self._terminate(worker)
            self._wait([w for w in self.workers[count:]])
            self._forget_dead()
        return self.pids

    def stop(self, *, timeout_s: float = 60.0) -> None:
        """Graceful: SIGTERM lets each worker finish its in-flight jobs before exiting."""
        for worker in self.workers:
            self._terminate(worker)
        self._wait(self.workers, timeout_s=timeout_s)
        self.workers.clear()

    def kill(self, pid: int | None = None) -> int:
        """kill -9 one worker (the oldest live one by default): no cleanup, no goodbye."""
        targets = [w for w in self.workers if w.alive and (pid is None or w.pid == pid)]
        if not targets:
            raise ValueError(f"no live {self.lane} worker" + (f" with pid {pid}" if pid else ""))
        victim = targets[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        return victim.pid

    def exit_codes(self) -> dict[int, int | None]:
        return {w.pid: w.process.poll() for w in self.workers}

    def logs(self, lines: int = 20) -> str:
        out = []
        for worker in self.workers:
            tail = worker.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {worker.lane} worker {worker.pid} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def _terminate(self, worker: WorkerProcess) -> None:
        if worker.alive:
            worker.process.send_signal(signal.SIGTERM)

    def _wait(self, workers: list[WorkerProcess], *, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()  # graceful stop overran: do not leave it behind
                worker.process.wait(timeout=10)

    def _forget_dead(self) -> None:
        self.workers = [w for w in self.workers if w.alive]


class Workers:
    """Worker pools of several lanes that start together and stop together (in parallel,
    off the event loop: a graceful stop waits for in-flight jobs). Made by `Lab.workers`."""

    def __init__(self, pools: dict[str, WorkerPool], *, count: int = 1) -> None:
        self.pools = pools
        self.count = count

    def __getitem__(self, lane: str) -> WorkerPool:
        return self.pools[lane]

    def __iter__(self):
        return iter(self.pools)

    async def __aenter__(self) -> Self:
        if self.count:
            await asyncio.gather(*(asyncio.to_thread(p.start, self.count) for p in self.pools.values()))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.pools.values()))
