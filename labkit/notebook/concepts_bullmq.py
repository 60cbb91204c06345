"""BullMQ concepts, each shown on a scratch queue of its own (never the lab's `bookings`):
priority order, rate limiting, delayed jobs, the failed set with `Job.retry`, and progress
events through `QueueEvents`. Each function runs a real Worker in this process and returns
what happened, for a lesson to show and assert.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bullmq import Job, Queue, QueueEvents, Worker

from labkit import names
from labkit.kafka_admin import consumer_label
from labkit.settings import Settings
from labkit.text import as_text as _text

Processor = Callable[[Job, str], Awaitable[Any]]


@contextlib.asynccontextmanager
async def scratch_queue(settings: Settings, concept: str) -> AsyncIterator[Queue]:
    """A queue with a unique name, obliterated (every key gone) afterwards."""
    queue = Queue(f"lesson-{concept}-{uuid.uuid4().hex[:6]}", {"connection": settings.redis_url})
    try:
        yield queue
    finally:
        await queue.obliterate(force=True)
        await queue.close()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, queue: Queue, processor: Processor, **options: Any
) -> AsyncIterator[Worker]:
    worker = Worker(queue.name, processor, {"connection": settings.redis_url, "drainDelay": 1, **options})
    try:
        yield worker
    finally:
        await worker.close()


async def _until(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not await _value(condition()):
            await asyncio.sleep(0.05)


async def _value(result: Awaitable[bool] | bool) -> bool:
    return await result if isinstance(result, Awaitable) else result


# -- priority ----------------------------------------------------------------------------------
async def priority_order(settings: Settings, *, plain: int = 3, timeout_s: float = 20.0) -> dict[str, Any]:
    """Plain jobs, then a low (5) and a high (1) priority job, added before any worker runs.
    BullMQ's moveToActive pops the `wait` list first and the `prioritized` set only when
    `wait` is empty, so the order taken is: plain jobs in arrival order, then high, then low."""
    async with scratch_queue(settings, "priority") as queue:
        added = [f"plain-{n}" for n in range(plain)]
        await queue.addBulk([{"name": "job", "data": {}, "opts": {"jobId": j}} for j in added])
        for job_id, priority in (("low", 5), ("high", 1)):
            await queue.add("job", {}, {"jobId": job_id, "priority": priority})
            added.append(job_id)
        states = {j: await queue.getJobState(j) for j in added}
        taken: list[str] = []

        async def take(job: Job, _token: str) -> None:
            taken.append(job.id)

        async with running_worker(settings, queue, take, concurrency=1):
            await _until(lambda: len(taken) == len(added), timeout_s)
    return {"added": added, "states_before": states, "taken": taken}


# -- rate limiting -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimitRun:
    max_jobs: int
    duration_s: float
    starts: list[float]  # seconds since the first job started

    def per_window(self) -> list[int]:
        """Jobs started in each `duration` window counted from the first start."""
        counts = [0] * (int(self.starts[-1] // self.duration_s) + 1)
        for t in self.starts:
            counts[int(t // self.duration_s)] += 1
        return counts

    def busiest(self, window_s: float) -> int:
        """The most starts seen in any interval of `window_s` seconds."""
        return max(sum(t <= s < t + window_s for s in self.starts) for t in self.starts)

    def fastest_allowed_s(self) -> float:
        """The least time `len(starts)` jobs need under the limit: one window per full batch."""
        return (-(-len(self.starts) // self.max_jobs) - 1) * self.duration_s


async def rate_limited(
    settings: Settings, *, jobs: int = 6, max_jobs: int = 2, duration_ms: int = 400, timeout_s: float = 20.0
) -> RateLimitRun:
    """A worker with concurrency `jobs` but a limiter of `max_jobs` per `duration_ms`: BullMQ
    keeps the limiter in Redis, so it holds across every worker of the queue."""
    async with scratch_queue(settings, "ratelimit") as queue:
        await queue.addBulk([{"name": "job", "data": {}, "opts": {"jobId": f"j{n}"}} for n in range(jobs)])
        starts: list[float] = []

        async def note_start(_job: Job, _token: str) -> None:
            starts.append(time.monotonic())

        limiter = {"max": max_jobs, "duration": duration_ms}
        async with running_worker(settings, queue, note_start, concurrency=jobs, limiter=limiter):
            await _until(lambda: len(starts) == jobs, timeout_s)
    starts.sort()
    return RateLimitRun(max_jobs, duration_ms / 1000, [round(t - starts[0], 3) for t in starts])


# -- delay -------------------------------------------------------------------------------------
async def delayed_start(settings: Settings, *, delay_ms: int = 500, timeout_s: float = 20.0) -> dict[str, Any]:
    """A job added with `delay` sits in the `delayed` set and starts no earlier than its delay,
    even with an idle worker waiting."""
    async with scratch_queue(settings, "delay") as queue:
        started_ms: list[float] = []

        async def note_start(_job: Job, _token: str) -> None:
            started_ms.append(time.time() * 1000)

        async with running_worker(settings, queue, note_start):
            job = await queue.add("job", {}, {"delay": delay_ms})
            state = await queue.getJobState(job.id)
            await _until(lambda: bool(started_ms), timeout_s)
    return {"delay_ms": delay_ms, "state_after_add": state, "waited_ms": round(started_ms[0] - job.timestamp)}


# -- failed set and Job.retry -----------------------------------------------------------------
async def failed_then_retried(settings: Settings, *, timeout_s: float = 20.0) -> dict[str, Any]:
    """A job with one attempt whose processor raises lands in BullMQ's own `failed` set, with
    its reason; `Job.retry()` moves it back to `wait` and the next run completes it."""
    async with scratch_queue(settings, "failed") as queue:
        runs: list[str] = []

        async def fail_first(job: Job, _token: str) -> str:
            runs.append(job.id)
            if len(runs) == 1:
                raise RuntimeError("card declined")
            return "paid"

        async with running_worker(settings, queue, fail_first):
            job = await queue.add("job", {}, {"attempts": 1})
            await _until(lambda: _state_is(queue, job.id, "failed"), timeout_s)
            failed = await Job.fromId(queue, job.id)
            failed_count = (await queue.getJobCounts("failed"))["failed"]
            # the job hash keeps the reason (this bullmq's Job.fromId does not load it)
            reason = await queue.client.hget(f"bull:{queue.name}:{job.id}", "failedReason")
            await failed.retry()
            await _until(lambda: _state_is(queue, job.id, "completed"), timeout_s)
        return {"failed_count": failed_count, "failed_reason": _text(reason),
                "runs": len(runs), "state_after_retry": await queue.getJobState(job.id)}


async def _state_is(queue: Queue, job_id: str, state: str) -> bool:
    return await queue.getJobState(job_id) == state


# -- progress events ---------------------------------------------------------------------------
async def progress_events(
    settings: Settings, *, steps: tuple[int, ...] = (25, 50, 75, 100), timeout_s: float = 20.0
) -> dict[str, Any]:
    """A worker reports progress with `job.updateProgress`; a `QueueEvents` listener anywhere
    (here: the same process) receives each one from the queue's event stream."""
    async with scratch_queue(settings, "progress") as queue:
        # from the stream's start: the queue is new, so every event is ours, none missed
        events = QueueEvents(queue.name, {"connection": settings.redis_url, "lastEventId": "0"})
        heard: list[Any] = []
        events.on("progress", lambda args, _id: heard.append(args["data"]))

        async def report(job: Job, _token: str) -> None:
            for value in steps:
                await job.updateProgress(value)

        try:
            async with running_worker(settings, queue, report):
                await queue.add("job", {})
                await _until(lambda: len(heard) >= len(steps), timeout_s)
        finally:
            await events.close()
    return {"reported": list(steps), "heard": heard}


# -- competing workers -------------------------------------------------------------------------
async def takers(redis, job_ids: list[str], queue: str = names.QUEUE) -> dict[str, int]:
    """Which worker took each job: BullMQ writes the worker's name into the job hash (`pb`,
    processedBy) when it moves the job to active; the lab names workers `<host>-<pid>-<id>`."""
    names_seen = [_text(await redis.hget(f"bull:{queue}:{job_id}", "pb")) for job_id in job_ids]
    return dict(Counter(consumer_label(n) for n in names_seen if n))
