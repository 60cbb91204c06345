"""`labkit worker`: one worker process for a lane. `python -m labkit worker …`, the command a
pool spawns, imports only this module: on 2 cores the rest of the CLI (bench, chaos, infra)
would cost each new worker about a second before it takes its first job."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
import typer
from kafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError

from labkit.backends.kafka_dispatch import Ordering
from labkit.cli_common import Backend, console, friendly
from labkit.lab import Lab
from labkit.processes import Backoff
from labkit.settings import Settings
from labkit.workers import PARENT_PID_ENV

log = logging.getLogger("labkit.worker")

# A worker outlives these: the broker is away (restarting, a lesson's outage), not broken.
BROKER_GONE = (RedisConnectionError, OSError, KafkaError)

app = typer.Typer(help="Booking Queue Lab", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Booking Queue Lab (the worker command only; `labkit --help` lists the rest)"""


@app.command()
@friendly
async def worker(
    backend: Backend,
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 1,
    burst: Annotated[bool, typer.Option(help="exit once nothing is left to do")] = False,
    ordering: Annotated[Ordering | None, typer.Option(
        help="kafka: what stays in order while records run side by side (default: LABKIT_KAFKA_ORDERING, else key)",
    )] = None,
) -> None:
    """Run one worker process for a lane. SIGTERM finishes in-flight jobs, then exits. When
    Redis or Kafka goes away it says so once and reconnects with backoff instead of exiting."""
    # One INFO line per job from the lab (a story in the worker's log); clients stay quiet.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("labkit").setLevel(os.environ.get("LABKIT_LOG_LEVEL", "INFO").upper())
    lane = backend.value
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    settings = Settings.from_env()
    if ordering is not None:
        settings = settings.with_(kafka_ordering=ordering.value)

    async def run_once() -> None:
        async with Lab(settings) as lab:  # a fresh Lab per try: no client left over from the outage
            await lab.backend(lane).run_worker(concurrency=concurrency, stop=stop, burst=burst)

    in_order = f" ordering={settings.kafka_ordering}" if lane == "kafka" else ""
    console.print(f"[green]▶[/green] {lane} worker pid={os.getpid()} concurrency={concurrency}{in_order}")
    async with anyio.create_task_group() as tg:
        if os.environ.get(PARENT_PID_ENV):
            tg.start_soon(stop_when_orphaned, int(os.environ[PARENT_PID_ENV]), stop)
        await run_through_outages(run_once, stop=stop, lane=lane)
        tg.cancel_scope.cancel()
    console.print(f"[blue]■[/blue] {lane} worker stopped")


async def stop_when_orphaned(parent_pid: int, stop: asyncio.Event, *, every_s: float = 1.0) -> None:
    """A pool's worker stops gracefully once the process that started it is gone (a notebook
    kernel killed outright runs no cleanup); workers started by hand set no parent."""
    while os.getppid() == parent_pid:
        await anyio.sleep(every_s)
    log.warning("worker pid=%s: its pool's process %s is gone; stopping", os.getpid(), parent_pid)
    stop.set()


async def run_through_outages(
    run: Callable[[], Awaitable[None]], *, stop: asyncio.Event, lane: str
) -> None:
    """Run `run` until it returns or `stop` is set; a lost broker connection is retried after
    a growing pause, with one WARNING line per outage (not one per try)."""
    backoff = Backoff()
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run()
            return
        except BROKER_GONE as exc:
            pause = backoff.pause_after(time.monotonic() - started)
            if pause == backoff.first_s:  # the first failure of this outage
                log.warning("%s worker pid=%s lost its broker (%s: %s); reconnecting with "
                            "backoff up to %.0f s", lane, os.getpid(), type(exc).__name__, exc,
                            backoff.max_s)
            with anyio.move_on_after(pause):
                await stop.wait()
