"""The interface every technology fills in: public template methods over private hooks.

The shared part — parse the envelope, run the pipeline, decide retry vs dead letter, settle
the verdict with its status, metrics and log line — lives here once. A backend only moves
messages: `_publish`, `_run`, `_idle`, the settle hooks `_ack`/`_retry`/`_dead_letter`,
`_dlq_list`, `_redrive`, `_transport_stats`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, ClassVar

from redis.asyncio import Redis

from labkit import keys
from labkit.booking import Booking, Envelope, InvalidJob, parse_envelope
from labkit.effects import Effects
from labkit.faults import Faults, FaultStore, RetryPolicy
from labkit.metrics import Metrics
from labkit.pipeline import Outcome, PermanentError, Pipeline, backoff_s
from labkit.progress_writer import ProgressReport, ProgressWriter
from labkit.settings import Settings
from labkit.status import State, StatusStore
from labkit.tasks import task_group
from labkit.text import as_text as _s

log = logging.getLogger(__name__)
WORKER_SEEN_S = 5.0  # a worker that has not checked in for this long no longer counts
IDLE_CHECK_S = 0.5  # how often a burst worker asks whether anything is left to do
REDRIVE_LOCK_S = 120.0  # a redrive of 1,000 letters takes seconds; a crashed one frees the lane by then
DLQ_SEARCH_LIMIT = 20_000  # letters looked through for the bookings a selective redrive names
BASE64_PREFIX = "base64:"  # marks a letter's payload that was not UTF-8 text


class Action(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Verdict:
    """What the transport must do with a message after one attempt."""

    action: Action
    booking_id: str | None = None
    final: State = State.COMPLETED  # ACK only: completed or rejected
    delay_s: float = 0.0
    reason: str = ""
    booking: Booking | None = None  # a dead letter of a valid booking is compensated

    @classmethod
    def dead(cls, booking_id: str | None, reason: str, booking: Booking | None = None) -> Verdict:
        return cls(Action.DEAD_LETTER, booking_id, reason=reason, booking=booking)


@dataclass
class DeadLetter:
    id: str  # the technology's own id of the dead-lettered message
    booking_id: str | None
    reason: str
    attempts: int
    payload: str  # the message as it arrived; `base64:`… when it was not UTF-8
    failed_at: float | None = None
    key: str = ""  # the partition key it carried (Kafka), so a redrive keeps per-hotel order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LaneStats:
    lane: str
    waiting: int = 0
    active: int = 0
    retrying: int = 0
    completed: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    dlq_size: int = 0
    lag: int | None = None
    workers: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(ABC):
    lane: ClassVar[str]

    def __init__(
        self, *, settings: Settings, redis: Redis, status: StatusStore, metrics: Metrics,
        faults: FaultStore, effects: Effects,
    ) -> None:
        # The shared stores belong to the Lab that made this backend; it only uses them.
        self.settings = settings
        self.redis = redis
        self.status = status
        self.metrics = metrics
        self.faults = faults
        self.effects = effects
        self.pipeline = Pipeline(effects=self.effects, faults=self.faults, time_scale=settings.time_scale)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    # -- publishing ------------------------------------------------------------------------
    async def publish(self, booking: Booking, **options: Any) -> str:
        return (await self.publish_many([booking], **options))[0]

    async def publish_many(self, bookings: Sequence[Booking], **options: Any) -> list[str]:
        """Publish the bookings this lane has not seen; one job id per booking, in order.

        A booking the lane already knows (a re-run cell, an API retry) keeps its status and
        is not sent again: its id is the one its status names."""
        unique: dict[str, Booking] = {}
        for booking in bookings:  # a booking listed twice is published once
            unique.setdefault(booking.bookingId, booking)
        envelopes = [Envelope.wrap(b) for b in unique.values()]
        # queued before the message exists, so a fast worker never overtakes the status
        new = await self.status.claim_new(
            self.lane, [(env.data.bookingId, env.jobId, env.published_at) for env in envelopes]
        )
        fresh = [env for env in envelopes if env.data.bookingId in new]
        job_ids = await self._publish_fresh(fresh, **options) if fresh else {}
        known = [env.data.bookingId for env in envelopes if env.data.bookingId not in new]
        job_ids |= await self.status.job_ids(self.lane, known) if known else {}
        return [job_ids[b.bookingId] for b in bookings]

    async def _publish_fresh(self, envelopes: list[Envelope], **options: Any) -> dict[str, str]:
        """Send bookings just claimed as queued; their job ids by booking id."""
        try:
            ids = await self._publish(
                [(env.jobId, env.data.hotelId, env.to_json()) for env in envelopes], **options
            )
        except Exception:
            # The broker refused: a retry must publish them. (A cancelled publish keeps its
            # claim: the send may still land, and a retry then answers the job id.)
            await self.status.release(self.lane, [env.data.bookingId for env in envelopes])
            raise
        job_ids = {env.data.bookingId: job_id for env, job_id in zip(envelopes, ids, strict=True)}
        await asyncio.gather(self.status.name_job_ids(self.lane, job_ids),  # one round trip
                             self.metrics.incr(self.lane, "published", len(envelopes)))
        return job_ids

    async def publish_raw(self, payload: str, *, key: str = "raw") -> str:
        """Publish bytes that may not be a valid job at all: for poison-message lessons."""
        return (await self._publish([(f"raw-{uuid.uuid4().hex[:8]}", key, payload)]))[0]

    # -- processing ------------------------------------------------------------------------
    async def consume(self, message: Any, payload: Any, *, attempt: int, job_id: str = "") -> Verdict:
        """Process one delivered message and settle it: what every `_run` calls."""
        started = time.monotonic()
        verdict = await self.process(payload, attempt=attempt, job_id=job_id)
        await self._settle(message, verdict, attempt, started=started)
        return verdict

    async def process(self, payload: Any, *, attempt: int, job_id: str = "") -> Verdict:
        """One attempt at one message, whichever technology delivered it: whatever arrived,
        the answer is a verdict, never an exception."""
        try:
            envelope = parse_envelope(_json_text(payload))
        except InvalidJob as exc:
            return Verdict.dead(booking_id_of(payload), f"invalid job: {exc}")
        booking = envelope.data
        booking_id = booking.bookingId
        settled = await self.status.state(self.lane, booking_id)
        if settled in {State.DEAD_LETTERED, State.REJECTED}:
            # A late copy (at-least-once: a redelivery, a retry another copy already used up)
            # of a booking that ended without its charge: running it would charge and confirm
            # what was refunded. A redrive sets it back to queued first, so it still runs.
            return Verdict(Action.ACK, booking_id, final=settled)

        try:
            outcome = await self._run_pipeline(booking, attempt=attempt, job_id=job_id)
        except PermanentError as exc:
            return Verdict.dead(booking_id, f"permanent: {exc}", booking)
        except Exception as exc:  # noqa: BLE001 - any other failure is worth a retry
            reason = f"{type(exc).__name__}: {exc}"
            policy = await self.retry_policy()
            if attempt >= policy.max_attempts:
                return Verdict.dead(booking_id, f"{reason} (gave up after {attempt} attempts)", booking)
            delay_s = self.retry_delay_s(attempt, salt=booking_id, policy=policy)
            return Verdict(Action.RETRY, booking_id, delay_s=delay_s, reason=reason)
        final = State.COMPLETED if outcome is Outcome.CONFIRMED else State.REJECTED
        return Verdict(Action.ACK, booking_id, final=final)

    async def _run_pipeline(self, booking: Booking, *, attempt: int, job_id: str) -> Outcome:
        """The pipeline, its progress reports written beside it; all of them have landed
        when this returns or raises, so the verdict's status comes after them."""
        writer = ProgressWriter(partial(self._write_progress, booking.bookingId, attempt, job_id))
        started = asyncio.ensure_future(self.metrics.incr(self.lane, "started"))  # beside the run too
        try:
            outcome = await self.pipeline.run(booking, attempt=attempt, report=writer.report,
                                              reported=writer.settled)
        except BaseException:
            await asyncio.gather(writer.settled(), started, return_exceptions=True)
            raise
        await asyncio.gather(writer.flush(), started)
        return outcome

    async def _write_progress(self, booking_id: str, attempt: int, job_id: str,
                              reports: list[ProgressReport]) -> None:
        await self.status.record_progress(self.lane, booking_id, reports, attempt=attempt, job_id=job_id)
        if done := [r.progress for r in reports if r.progress is not None]:
            await self._on_progress(done[-1])

    async def _settle(self, message: Any, verdict: Verdict, attempt: int, *, started: float) -> None:
        """The one place a verdict becomes transport action, status, metrics and a log line.

        What a crash in between can recover is written first: a success's status before
        its ack (a redelivery re-runs idempotently and cannot reopen a finished booking), a
        dead letter before its compensation and status (the letter is what a redrive
        reopens it from).
        """
        booking_id = verdict.booking_id
        match verdict.action:
            case Action.ACK:
                await self._finish(booking_id, verdict.final, attempt)
                await self._ack(message)
                outcome = f"→ {self.lane} {booking_id} {verdict.final.value}"
            case Action.RETRY:
                detail = f"{verdict.reason}; retry in {verdict.delay_s:.2f}s"
                await self.status.transition(
                    self.lane, booking_id, State.RETRYING, attempt=attempt, detail=detail
                )
                await self.metrics.incr(self.lane, "retried")
                await self._retry(message, verdict.delay_s, attempt)
                outcome = f"✗ {self.lane} {booking_id} retry in {verdict.delay_s:.2f}s: {verdict.reason}"
            case Action.DEAD_LETTER:
                if await self._dead_letter(message, verdict.reason, attempt) is False:
                    # another worker took the message over meanwhile: it settles it, once
                    log.info("%s %s: not ours any more; its new owner settles it", self.lane, booking_id)
                    return
                if verdict.booking is not None:  # refund, free its nights, withdraw documents
                    await self.pipeline.compensate(verdict.booking, verdict.reason)
                await self._finish(booking_id, State.DEAD_LETTERED, attempt, detail=verdict.reason)
                outcome = f"☠ {self.lane} {booking_id} dead-lettered: {verdict.reason}"
        log.info("%6.2fs %s (attempt %d)", time.monotonic() - started, outcome, attempt)

    async def _finish(self, booking_id: str | None, final: State, attempt: int, *, detail: str = "") -> None:
        counter = final.value.replace("-", "_")
        if not booking_id:  # an unreadable message has no status to move, only a count
            await self.metrics.incr(self.lane, counter)
            return
        # counted, with its latency, by the same script, on its first arrival only
        await self.status.transition(self.lane, booking_id, final, attempt=attempt, detail=detail)

    async def retry_policy(self) -> RetryPolicy:
        """The live policy a lesson set (every worker follows it), else this worker's settings."""
        return (await self.faults.current()).retry_policy(self.settings)

    def retry_delay_s(self, attempt: int, *, salt: str, policy: RetryPolicy | None = None) -> float:
        # Seeded by booking and attempt: the same lesson shows the same backoff timeline.
        policy = policy or Faults().retry_policy(self.settings)
        rng = random.Random(f"{salt}:{attempt}")
        return backoff_s(
            attempt, base_s=policy.backoff_base_s, max_s=policy.backoff_max_s, rng=rng,
            jitter=self.settings.backoff_jitter,
        )

    async def _on_progress(self, progress: int) -> None:
        """Hook: a technology with native progress (BullMQ) mirrors it there."""

    # -- workers ---------------------------------------------------------------------------
    async def run_worker(
        self, *, concurrency: int = 1, stop: asyncio.Event | None = None, burst: bool = False
    ) -> None:
        """Process until `stop` is set; in burst mode it is set once nothing is left to do."""
        stop = stop or asyncio.Event()
        await self.setup()
        try:
            async with task_group() as helpers:  # none outlives this worker
                helpers.start_soon(self._check_in, concurrency)
                if burst:
                    helpers.start_soon(self._stop_when_idle, stop)
                await self._run(concurrency=concurrency, stop=stop)
                helpers.cancel_scope.cancel()
        finally:
            await self.redis.hdel(keys.workers(self.lane), self.worker_id)

    async def _stop_when_idle(self, stop: asyncio.Event) -> None:
        while not await self._idle():
            await asyncio.sleep(IDLE_CHECK_S)
        stop.set()  # `_run` stops as it would on SIGTERM: in-flight work finishes first

    async def _check_in(self, concurrency: int) -> None:
        info = {"pid": os.getpid(), "concurrency": concurrency, "started": time.time()}
        while True:
            info["seen"] = time.time()
            try:
                await self.redis.hset(keys.workers(self.lane), self.worker_id, json.dumps(info))
            except Exception:  # a Redis blip must not end the check-in loop
                log.warning("worker check-in failed; retrying", exc_info=True)
            await asyncio.sleep(1.0)

    async def live_workers(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(keys.workers(self.lane))
        now = time.time()
        out = {}
        for worker_id, text in raw.items():
            info = json.loads(text)
            if now - info["seen"] <= WORKER_SEEN_S:
                out[_s(worker_id)] = info
        return out

    # -- dead letters and stats --------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return await self._dlq_list(limit)

    async def dlq_redrive(self, limit: int = 1000, *, booking_ids: Collection[str] | None = None) -> int:
        """Send dead letters back to the work queue; their bookings start over as queued.
        `booking_ids`: only those bookings' letters (a lesson redrives its own, never the
        learner's); the others stay in the DLQ, in their order.

        One redrive per lane at a time: two at once would both read, and republish, the
        same letters (the second one finds them gone)."""
        async with self.redis.lock(keys.redrive_lock(self.lane), timeout=REDRIVE_LOCK_S, blocking_timeout=REDRIVE_LOCK_S):
            if booking_ids is None:
                letters = await self._dlq_list(limit)
            else:
                wanted = set(booking_ids)
                letters = [l for l in await self._dlq_list(DLQ_SEARCH_LIMIT) if l.booking_id in wanted][:limit]
            return await self._start_over(letters)

    async def _start_over(self, letters: list[DeadLetter]) -> int:
        for letter in letters:
            if letter.booking_id:
                await self.status.transition(
                    self.lane, letter.booking_id, State.QUEUED, redrive=True, progress=0,
                    attempt=0, detail="redriven from the dead-letter queue",
                )
                await self.pipeline.prepare_redrive(letter.booking_id)  # it may pay anew
        moved = await self._redrive(letters)
        await self.metrics.incr(self.lane, "redriven", moved)
        return moved

    async def stats(self) -> LaneStats:
        counts = await self.status.counts(self.lane)
        stats = LaneStats(
            lane=self.lane,
            waiting=counts["queued"],
            active=counts["active"],
            retrying=counts["retrying"],
            completed=counts["completed"],
            rejected=counts["rejected"],
            dead_lettered=counts["dead-lettered"],
            workers=len(await self.live_workers()),
        )
        await self._transport_stats(stats)
        return stats

    # -- hooks -------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Create groups/queues the technology needs; safe to call again."""

    async def close(self) -> None:
        """Release client connections (the shared Redis client belongs to the caller)."""

    @abstractmethod
    async def _publish(self, messages: list[tuple[str, str, str]], **options: Any) -> list[str]:
        """Publish (job id, partition key, envelope JSON) triples; return the technology's ids."""

    @abstractmethod
    async def _run(self, *, concurrency: int, stop: asyncio.Event) -> None:
        """Deliver messages to `consume` until `stop` is set, then finish what is in flight."""

    @abstractmethod
    async def _idle(self) -> bool:
        """Burst mode: nothing is waiting, running or due for a retry on this worker."""

    @abstractmethod
    async def _ack(self, message: Any) -> None:
        """The message succeeded: remove it from the work queue."""

    @abstractmethod
    async def _retry(self, message: Any, delay_s: float, attempt: int) -> None:
        """Deliver the message again, as attempt + 1, no sooner than `delay_s` from now."""

    @abstractmethod
    async def _dead_letter(self, message: Any, reason: str, attempt: int) -> bool | None:
        """Move the message to the dead-letter queue with its raw payload and `reason`;
        False when the worker no longer owns the message (nothing written: its owner settles it)."""

    @abstractmethod
    async def _dlq_list(self, limit: int) -> list[DeadLetter]: ...

    @abstractmethod
    async def _redrive(self, letters: list[DeadLetter]) -> int: ...

    @abstractmethod
    async def _transport_stats(self, stats: LaneStats) -> None:
        """Fill in what only the technology knows: its own depth, lag and DLQ size."""


def booking_id_of(payload: Any) -> str | None:
    """Best effort: name the booking of an invalid job, so its status shows why it died."""
    try:
        data = payload if isinstance(payload, dict) else json.loads(payload)
        booking_id = data["data"]["bookingId"]
        return booking_id if isinstance(booking_id, str) and 0 < len(booking_id) <= 64 else None
    except Exception:  # noqa: BLE001 - anything unreadable simply has no booking id
        return None


def preserved(raw: bytes | str) -> str:
    """A payload as a letter can carry it: the text itself, or `base64:…` when not UTF-8."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return BASE64_PREFIX + base64.b64encode(raw).decode()


def _json_text(payload: Any) -> str | dict:
    """What `parse_envelope` reads, from whatever a transport delivered: an object stays, bytes
    must be UTF-8, and any other JSON value (`42`, `null`, a list) is re-encoded so the
    envelope check names it."""
    if isinstance(payload, dict | str):
        return payload
    if isinstance(payload, bytes):
        try:
            return payload.decode()
        except UnicodeDecodeError as exc:
            raise InvalidJob(f"job is not UTF-8 text: {exc}") from None
    return json.dumps(payload)
