"""BullMQ (the Python port, on Redis): queue `bookings`, job name `booking`.

BullMQ brings its own job lifecycle: attempts with backoff (`delayed` between tries), locks
renewed by an asyncio task, a stalled-job checker that returns a dead worker's jobs to the
queue, and a `failed` set. The lab adds what BullMQ leaves to you: a jittered backoff
strategy and a dead-letter queue `bookings-dlq` beside the failed set.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from typing import Any
from urllib.parse import urlparse

from bullmq import Job, Queue, UnrecoverableError, Worker

from labkit import keys, names
from labkit.backends.base import Action, Backend, DeadLetter, LaneStats, Verdict, booking_id_of
from labkit.status import TERMINAL

log = logging.getLogger(__name__)
BACKOFF_TYPE = "jittered-exponential"
LAB_FAILURE = "dead-lettered by the lab: "  # marks failures the lab itself routed to the DLQ
FAILED_KEEP = 10_000  # BullMQ keeps the newest failed jobs only; their letters stay in the DLQ
SWEEP_EVERY_S = 5.0  # how often a worker looks for jobs BullMQ failed by itself
_current_job: contextvars.ContextVar[Job] = contextvars.ContextVar("bullmq_job")


class RetryLater(Exception):
    """Raised to BullMQ so it retries; carries the lab's own jittered delay."""

    def __init__(self, reason: str, delay_ms: int) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


class _TolerantWorker(Worker):
    """bullmq parses a job's stored data before any processor sees it. Data that is not JSON
    (written by redis-cli, or edited in bull-board) raised there, left the job and the next
    one stuck in `active`, and wedged the lane. Here such a job reaches the processor with
    its text as data, and the lab dead-letters it like any other poison."""

    async def nextJobFromJobData(self, job_data=None, job_id=None, limit_until=0, delay_until=0, token=None):
        try:
            return await super().nextJobFromJobData(job_data, job_id, limit_until, delay_until, token)
        except ValueError:  # json.JSONDecodeError; only a job's data or opts can raise it
            if not job_data:
                raise
            return await super().nextJobFromJobData(
                _as_text_data(job_data), job_id, limit_until, delay_until, token
            )


def _as_text_data(raw: dict) -> dict:
    """A job hash whose data is kept as a JSON string of its text, and unreadable opts dropped."""
    fixed = dict(raw)
    try:
        json.loads(fixed.get("data", "{}"))
    except ValueError:
        fixed["data"] = json.dumps(str(fixed["data"]))
    try:
        json.loads(fixed.get("opts", "{}"))
    except ValueError:
        fixed["opts"] = "{}"
    return fixed


def _connection(redis_url: str) -> dict[str, Any]:
    """bullmq's client decodes every reply as UTF-8; bytes that are not (written by any
    client) would raise before the lab could dead-letter them. Replaced, they cannot."""
    url = urlparse(redis_url)
    return {
        "host": url.hostname or "127.0.0.1", "port": url.port or 6379,
        "db": int(url.path.strip("/") or 0), "username": url.username, "password": url.password,
        "ssl": url.scheme == "rediss", "encoding_errors": "replace",
    }  # fmt: skip


def _backoff_strategy(attempts_made: int, backoff_type: str, err: Exception, job: Job) -> int:
    # BullMQ's built-in backoffs have no jitter; the delay the lab chose travels in the error.
    return getattr(err, "delay_ms", 1000)


class BullMQBackend(Backend):
    lane = "bullmq"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str = names.QUEUE) -> Queue:
        # Created lazily: bullmq objects must be made inside a running event loop.
        if name not in self._queues:
            self._queues[name] = Queue(name, {"connection": _connection(self.settings.redis_url)})
        return self._queues[name]

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()

    def job_options(self, job_id: str, **options: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "jobId": job_id,  # BullMQ ignores a second add with the same id: idempotent enqueue
            "attempts": self.settings.max_attempts,
            "backoff": {"type": BACKOFF_TYPE, "delay": int(self.settings.backoff_base_s * 1000)},
            "removeOnComplete": {"count": 50_000},
            "removeOnFail": {"count": FAILED_KEEP},
        }
        for name in ("priority", "delay", "lifo"):
            if options.get(name) is not None:
                opts[name] = options[name]
        return opts

    async def _publish(self, messages: list[tuple[str, str, str]], **options: Any) -> list[str]:
        jobs = [
            {"name": names.BULLMQ_JOB_NAME, "data": _data(payload), "opts": self.job_options(job_id, **options)}
            for job_id, _key, payload in messages
        ]
        added = await self.queue().addBulk(jobs)
        return [job.id for job in added]

    # -- consuming -------------------------------------------------------------------------
    async def _run(self, *, concurrency: int, stop: asyncio.Event) -> None:
        stale_ms = int(self.settings.stale_after_s * 1000)
        limiter = {}
        if self.settings.bullmq_rate_limit_per_s:
            # Shared by every worker on the queue: BullMQ keeps the limiter in Redis.
            limiter = {"limiter": {"max": self.settings.bullmq_rate_limit_per_s, "duration": 1000}}
        worker = _TolerantWorker(
            names.QUEUE,
            self._process_job,
            {
                **limiter,
                "connection": _connection(self.settings.redis_url),
                "concurrency": concurrency,
                "lockDuration": stale_ms,
                "stalledInterval": max(500, stale_ms // 2),
                # a crash is not the booking's fault: let stalls recover as often as attempts
                "maxStalledCount": self.settings.max_attempts,
                "drainDelay": 1,
                "name": self.worker_id,
                "settings": {"backoffStrategy": _backoff_strategy},
            },
        )
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=SWEEP_EVERY_S)
                except TimeoutError:
                    try:
                        await self._sweep_failed()
                    except Exception:  # e.g. a job BullMQ cannot parse: the worker goes on
                        log.warning("sweeping the failed set failed; trying again later", exc_info=True)
        finally:
            await worker.close()  # waits for in-flight jobs: a graceful stop loses nothing

    async def _idle(self) -> bool:
        counts = await self.queue().getJobCounts("wait", "active", "delayed", "prioritized", "paused")
        if any(counts.values()):
            return False
        await self._sweep_failed()  # what BullMQ failed by itself gets its letter before we go
        return True

    async def _process_job(self, job: Job, token: str) -> str:
        _current_job.set(job)
        verdict = await self.consume(job, job.data, attempt=job.attemptsMade + 1, job_id=job.id)
        # BullMQ settles a job by how its processor ends: return, RetryLater or Unrecoverable.
        if verdict.action is Action.RETRY:
            raise RetryLater(verdict.reason, int(verdict.delay_s * 1000))
        if verdict.action is Action.DEAD_LETTER:
            raise UnrecoverableError(f"{LAB_FAILURE}{verdict.reason}")  # failed set, no more tries
        return "done"

    async def _ack(self, job: Job) -> None:
        """BullMQ completes the job when `_process_job` returns."""

    async def _retry(self, job: Job, delay_s: float, attempt: int) -> None:
        """BullMQ schedules the retry when `_process_job` raises RetryLater."""

    async def _dead_letter(self, job: Job, reason: str, attempt: int) -> None:
        await self.queue(names.BULLMQ_DLQ).add(
            names.BULLMQ_JOB_NAME,
            {"job": job.data, "reason": reason, "attempts": attempt, "source": job.id},
            # one letter per failed job, however often this runs
            {"jobId": f"dlq-{job.id}", "removeOnComplete": True},
        )

    async def _sweep_failed(self) -> None:
        """Jobs BullMQ failed by itself — stalled more often than maxStalledCount, or a
        processor error outside the pipeline — still get a dead letter and a final status."""
        # the lab's own dead-letter path already handled its failures
        failed = [(job, booking_id_of(job.data)) for job in await self._failed_jobs(200)
                  if not str(job.failedReason).startswith(LAB_FAILURE)]
        states = await self.status.many(self.lane, [b for _job, b in failed if b])
        for job, booking_id in failed:
            # A booking the lab never saw, or settled already, needs nothing. A job with no
            # booking at all (data from bull-board or redis-cli: `42`, `null`) gets its letter.
            if booking_id and (states[booking_id] is None or states[booking_id] in TERMINAL):
                continue
            if not await self.redis.set(keys.bullmq_swept(job.id), 1, nx=True, ex=int(self.settings.retention_s)):
                continue  # swept before (and maybe redriven since): once is enough
            verdict = Verdict.dead(booking_id, f"failed by BullMQ: {job.failedReason}")
            await self._settle(job, verdict, job.attemptsMade, started=time.monotonic())

    async def _failed_jobs(self, count: int) -> list[Job]:
        """The newest failed jobs. Not `Queue.getFailed`: it parses all of them at once, and
        one whose data is not JSON would hide every other from the sweeper."""
        queue = self.queue()
        ids = await queue.client.zrevrange(queue.keys["failed"], 0, count - 1)
        pipe = queue.client.pipeline(transaction=False)  # one round trip for every hash
        for job_id in ids:
            pipe.hgetall(queue.toKey(job_id))
        raws = await pipe.execute() if ids else []
        # an empty hash: the job was removed while we read the set
        return [Job.fromJSON(queue, _as_text_data(raw), job_id) for job_id, raw in zip(ids, raws, strict=True) if raw]

    async def _on_progress(self, progress: int) -> None:
        job = _current_job.get(None)
        if job is not None:
            await job.updateProgress(progress)

    # -- dead letters and stats --------------------------------------------------------------
    async def _dlq_list(self, limit: int) -> list[DeadLetter]:
        jobs = await self.queue(names.BULLMQ_DLQ).getWaiting(0, limit - 1)
        return [_letter(job) for job in jobs if job is not None]

    async def _redrive(self, letters: list[DeadLetter]) -> int:
        dlq = self.queue(names.BULLMQ_DLQ)
        for letter in letters:
            data = _data(letter.payload)
            job_id = f"{data.get('jobId', 'raw') if isinstance(data, dict) else 'raw'}-redrive-{letter.id}"
            await self.queue().add(names.BULLMQ_JOB_NAME, data, self.job_options(job_id))
            await dlq.remove(letter.id)
        return len(letters)

    async def _transport_stats(self, stats: LaneStats) -> None:
        counts = await self.queue().getJobCounts(
            "wait", "active", "delayed", "prioritized", "completed", "failed"
        )
        dlq = await self.queue(names.BULLMQ_DLQ).getJobCounts("wait")
        stats.dlq_size = dlq["wait"]
        stats.lag = counts["wait"] + counts["prioritized"]
        stats.detail = {"bullmq_counts": counts}


def _data(payload: str) -> Any:
    """The envelope as BullMQ job data (an object); an unparsable payload stays a string."""
    try:
        return json.loads(payload)
    except (json.JSONDecodeError, TypeError):
        return payload


def _letter(job: Job) -> DeadLetter:
    data = job.data if isinstance(job.data, dict) else {}
    original = data.get("job")
    payload = original if isinstance(original, str) else json.dumps(original)
    return DeadLetter(
        id=str(job.id),
        booking_id=booking_id_of(original),
        reason=str(data.get("reason", "")),
        attempts=int(data.get("attempts", 0)),
        payload=payload,
        failed_at=job.timestamp / 1000 if job.timestamp else None,
    )
