"""Per-lane booking status: state, progress, attempts, history, and change events.

All of it lives in Redis, so the API, the dashboard, notebooks and every worker process see
one truth. Each change is one Lua script: state, per-state counts, history, the event
stream, and a finished booking's counter and latency never disagree.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

from redis.asyncio import Redis

from labkit import keys
from labkit.metrics import COUNT_FINISHED_FN
from labkit.round_trip import coalescer
from labkit.text import as_text as _text


class State(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    RETRYING = "retrying"
    COMPLETED = "completed"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead-lettered"


TERMINAL = frozenset({State.COMPLETED, State.REJECTED, State.DEAD_LETTERED})

# One booking's change, shared by the single-booking script and the publishers' batch claim.
# k = {status, history, state counts, events, index}; a = {lane, bookingId, state, progress,
# attempt, now, detail, jobId, publishedAt, events maxlen, redrive, retention seconds}.
# Returns {old state, published_at, first arrival at a terminal (0/1), applied (0/1)}.
_TRANSITION_FN = """
local function transition(k, a)
  local old = redis.call('HGET', k[1], 'state')
  local now = a[6]
  local entry = cjson.encode({state=a[3], progress=a[4], attempt=a[5], at=now, detail=a[7]})
  local function record()
    redis.call('RPUSH', k[2], entry)
    redis.call('LTRIM', k[2], -200, -1)
    redis.call('XADD', k[4], 'MAXLEN', '~', a[10], '*', 'lane', a[1], 'bookingId', a[2],
      'state', a[3], 'progress', a[4], 'attempt', a[5], 'at', now, 'detail', a[7])
  end
  -- Publishing a known booking again must not reopen it (nor run it twice): only an
  -- explicit redrive puts a booking that has a status back to queued.
  if a[3] == 'queued' and old and a[11] ~= '1' then
    return {old, redis.call('HGET', k[1], 'published_at') or '', 0, 0}
  end
  -- A late, duplicate run of a finished booking (at-least-once) shows in its history but
  -- never moves it back.
  if a[3] ~= 'queued' and redis.call('HEXISTS', k[1], 'finished_at') == 1 then
    record()
    return {old or '', redis.call('HGET', k[1], 'published_at') or '', 0, 0}
  end
  if a[9] ~= '' then redis.call('HSETNX', k[1], 'published_at', a[9]) end
  redis.call('HSETNX', k[1], 'created_at', now)
  local fields = {'state', a[3], 'updated_at', now, 'lane', a[1], 'bookingId', a[2]}
  if a[4] ~= '' then table.insert(fields, 'progress'); table.insert(fields, a[4]) end
  if a[5] ~= '' then table.insert(fields, 'attempts'); table.insert(fields, a[5]) end
  if a[7] ~= '' then table.insert(fields, 'detail'); table.insert(fields, a[7]) end
  if a[8] ~= '' then table.insert(fields, 'jobId'); table.insert(fields, a[8]) end
  redis.call('HSET', k[1], unpack(fields))
  -- finished_at marks the first arrival at a terminal state, so a redelivered, already
  -- finished booking is not counted twice; a redrive (back to queued) opens it again.
  local first = 0
  if a[3] == 'queued' then
    redis.call('HDEL', k[1], 'finished_at')
    redis.call('PERSIST', k[1])
    redis.call('PERSIST', k[2])
  end
  local terminal = a[3] == 'completed' or a[3] == 'rejected' or a[3] == 'dead-lettered'
  if terminal then first = redis.call('HSETNX', k[1], 'finished_at', now) end
  if old ~= a[3] then
    if old then redis.call('HINCRBY', k[3], old, -1) end
    redis.call('HINCRBY', k[3], a[3], 1)
  end
  record()
  redis.call('ZADD', k[5], 'NX', redis.call('HGET', k[1], 'created_at'), a[2])
  -- A finished booking is kept for the retention period, then forgotten; the index of
  -- recent bookings forgets those created longer ago than that.
  if terminal then
    redis.call('EXPIRE', k[1], a[12])
    redis.call('EXPIRE', k[2], a[12])
    redis.call('ZREMRANGEBYSCORE', k[5], '-inf', '(' .. (tonumber(now) - tonumber(a[12])))
  end
  return {old or '', redis.call('HGET', k[1], 'published_at') or '', first, 1}
end
"""

# The single-booking change; KEYS 6 and 7 are the lane's counters and latency histogram,
# counted in the same call when the booking first arrives at a terminal state, so a worker
# that dies between the two can never leave a finished booking uncounted.
_TRANSITION = _TRANSITION_FN + COUNT_FINISHED_FN + """
local changed = transition(KEYS, ARGV)
if changed[3] == 1 then count_finished(KEYS[6], KEYS[7], ARGV[3], ARGV[6], changed[2]) end
return changed
"""

# A run's progress reports, in order, in one call. KEYS as the single-booking script; ARGV =
# the first report's 12 arguments, then (progress, detail, at) of each further report.
_PROGRESS = _TRANSITION_FN + """
local a = {unpack(ARGV, 1, 12)}
transition(KEYS, a)
for i = 13, #ARGV, 3 do
  a[4], a[7], a[6] = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  transition(KEYS, a)
end
"""

# KEYS = {state counts, events, index, then status and history per booking};
# ARGV = {lane, now, events maxlen, then bookingId, jobId, publishedAt per booking}.
_CLAIM_NEW = _TRANSITION_FN + """
local new = {}
for i = 0, (#ARGV - 3) / 3 - 1 do
  local id = ARGV[4 + 3 * i]
  local k = {KEYS[4 + 2 * i], KEYS[5 + 2 * i], KEYS[1], KEYS[2], KEYS[3]}
  local a = {ARGV[1], id, 'queued', '0', '0', ARGV[2], 'published', ARGV[5 + 3 * i],
    ARGV[6 + 3 * i], ARGV[3], '', '0'}
  if transition(k, a)[4] == 1 then table.insert(new, id) end
end
return new
"""


# KEYS = {state counts, index, then status and history per booking}; ARGV = booking ids.
# Forget a claim whose message never reached the broker: only while it is still queued.
_RELEASE = """
for i, id in ipairs(ARGV) do
  local status, history = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if redis.call('HGET', status, 'state') == 'queued' then
    redis.call('DEL', status, history)
    redis.call('HINCRBY', KEYS[1], 'queued', -1)
    redis.call('ZREM', KEYS[2], id)
  end
end
"""


@dataclass
class BookingStatus:
    lane: str
    booking_id: str
    state: State
    progress: int = 0
    attempts: int = 0
    job_id: str = ""
    detail: str = ""
    published_at: float | None = None
    updated_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "bookingId": self.booking_id,
            "state": self.state.value,
            "progress": self.progress,
            "attempts": self.attempts,
            "jobId": self.job_id,
            "detail": self.detail,
            "publishedAt": self.published_at,
            "updatedAt": self.updated_at,
            "history": self.history,
        }


@dataclass(frozen=True)
class Change:
    """What `transition` changed (a first arrival at a terminal state is counted by the script)."""

    old: State | None
    new: State
    first_terminal: bool = False
    applied: bool = True  # False: refused (a known booking queued again) or a late duplicate


class StatusStore:
    def __init__(self, redis: Redis, *, retention_s: float = keys.DEFAULT_RETENTION_S) -> None:
        self._redis = redis
        self.retention_s = retention_s  # how long a finished booking's status is kept
        self._script = redis.register_script(_TRANSITION)
        self._round_trip = coalescer(redis)
        self._progress = redis.register_script(_PROGRESS)
        self._claim_new = redis.register_script(_CLAIM_NEW)
        self._release = redis.register_script(_RELEASE)

    async def transition(
        self, lane: str, booking_id: str, state: State, *, redrive: bool = False, **fields: Any
    ) -> Change:
        """Move a booking to `state`; fields: progress, attempt, detail, job_id, published_at.
        Its first arrival at a terminal state is counted in the lane's metrics too.

        `queued` is refused for a booking that already has a status unless `redrive=True`:
        the dead-letter queue's redrive is the one way to start a booking over."""
        old, _published, first, applied = await self._round_trip.script(
            self._script,
            keys=[*_script_keys(lane, booking_id), keys.counters(lane), keys.latency(lane)],
            args=_script_args(lane, booking_id, state, redrive=redrive,
                              retention_s=self.retention_s, **fields),
        )
        old_text = _text(old)
        return Change(
            old=State(old_text) if old_text else None,
            new=state,
            first_terminal=bool(int(first)),
            applied=bool(int(applied)),
        )

    async def record_progress(self, lane: str, booking_id: str, reports: list[tuple[int | None, str, float]],
                              *, attempt: int, job_id: str = "") -> None:
        """Apply a run's (progress, note, at) reports in order, as `active` transitions, in
        one script call: what `ProgressWriter` sends."""
        (progress, note, at), *more = reports
        args = _script_args(lane, booking_id, State.ACTIVE, progress=progress, attempt=attempt, detail=note,
                            job_id=job_id, retention_s=self.retention_s, at=at)
        for progress, note, at in more:
            args += ["" if progress is None else str(progress), note[:500], repr(at)]
        await self._round_trip.script(self._progress, keys=_script_keys(lane, booking_id), args=args)

    async def state(self, lane: str, booking_id: str) -> State | None:
        """Just one booking's state, in the shared round trip."""
        return (await self.many(lane, [booking_id]))[booking_id]

    async def claim_new(
        self, lane: str, entries: Iterable[tuple[str, str, float]]
    ) -> set[str]:
        """Queue the bookings this lane has never seen, in one round trip; returns their ids.

        `entries` are (booking id, job id, published_at). A booking that already has a status
        keeps it: the publisher sends only the returned ids, so a re-publish neither reopens
        a finished booking nor runs it twice."""
        entries = list(entries)
        if not entries:
            return set()
        booking_keys = [k for booking_id, _, _ in entries
                        for k in (keys.status(lane, booking_id), keys.history(lane, booking_id))]
        new = await self._claim_new(
            keys=[keys.state_counts(lane), keys.EVENTS_STREAM, keys.index(lane), *booking_keys],
            args=[lane, repr(time.time()), keys.EVENTS_MAXLEN,
                  *(v for b, job_id, at in entries for v in (b, job_id, repr(at)))],
        )
        return {_text(b) for b in new}

    async def release(self, lane: str, booking_ids: Iterable[str]) -> None:
        """Undo `claim_new` for bookings whose publish failed, so a retry publishes them
        again instead of finding them queued with no message behind them."""
        ids = list(booking_ids)
        booking_keys = [k for b in ids for k in (keys.status(lane, b), keys.history(lane, b))]
        await self._release(keys=[keys.state_counts(lane), keys.index(lane), *booking_keys], args=ids)

    async def job_ids(self, lane: str, booking_ids: Iterable[str]) -> dict[str, str]:
        """The job id each booking's status names (the technology's own id once published)."""
        ids = list(booking_ids)
        pipe = self._redis.pipeline(transaction=False)
        for booking_id in ids:
            pipe.hget(keys.status(lane, booking_id), "jobId")
        return {b: _text(j) for b, j in zip(ids, await pipe.execute(), strict=True)}

    async def name_job_ids(self, lane: str, job_ids: dict[str, str]) -> None:
        """Record the technology's id of each just-published booking: what a re-publish of
        it answers (a worker writes the same id when it starts the job)."""
        await self._round_trip.run_all(  # in the shared round trip: the publish's counter goes with them
            partial(_name_job_id, keys.status(lane, booking_id), job_id) for booking_id, job_id in job_ids.items())

    async def get(self, lane: str, booking_id: str) -> BookingStatus | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.status(lane, booking_id))
        pipe.lrange(keys.history(lane, booking_id), 0, -1)
        raw, history = await pipe.execute()
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        return BookingStatus(
            lane=lane,
            booking_id=booking_id,
            state=State(data["state"]),
            progress=int(data.get("progress", 0)),
            attempts=int(data.get("attempts", 0)),
            job_id=data.get("jobId", ""),
            detail=data.get("detail", ""),
            published_at=_float(data.get("published_at")),
            updated_at=_float(data.get("updated_at")),
            history=[json.loads(h) for h in history],
        )

    async def many(self, lane: str, booking_ids: Iterable[str]) -> dict[str, State | None]:
        """Just the states, in the shared round trip: for waiting on hundreds of bookings, and
        for a worker's check of one before it runs it."""
        ids = list(booking_ids)
        states = await self._round_trip.run_all(partial(_state_of, keys.status(lane, b)) for b in ids)
        return {b: State(_text(s)) if s else None for b, s in zip(ids, states, strict=True)}

    async def counts(self, lane: str) -> dict[str, int]:
        raw = await self._redis.hgetall(keys.state_counts(lane))
        out = {s.value: 0 for s in State}
        out.update({_text(k): int(v) for k, v in raw.items()})
        return out

    async def follow(
        self, *, last_id: str = "$", block_ms: int = 1000
    ) -> AsyncIterator[tuple[str, dict[str, str]]]:
        """Yield (event id, fields) as changes happen; pass `last_id='0'` to replay."""
        while True:
            reply = await self._redis.xread({keys.EVENTS_STREAM: last_id}, block=block_ms, count=500)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = _text(entry_id)
                    yield last_id, {_text(k): _text(v) for k, v in fields.items()}


def _state_of(status_key: str, pipe: Any) -> Any:
    return pipe.hget(status_key, "state")


def _name_job_id(status_key: str, job_id: str, pipe: Any) -> Any:
    return pipe.hset(status_key, "jobId", job_id)


def _script_keys(lane: str, booking_id: str) -> list[str]:
    return [
        keys.status(lane, booking_id),
        keys.history(lane, booking_id),
        keys.state_counts(lane),
        keys.EVENTS_STREAM,
        keys.index(lane),
    ]


def _script_args(
    lane: str,
    booking_id: str,
    state: State,
    *,
    progress: int | None = None,
    attempt: int | None = None,
    detail: str = "",
    job_id: str = "",
    published_at: float | None = None,
    redrive: bool = False,
    retention_s: float,
    at: float | None = None,
) -> list[Any]:
    return [
        lane,
        booking_id,
        state.value,
        "" if progress is None else str(progress),
        "" if attempt is None else str(attempt),
        repr(time.time() if at is None else at),
        detail[:500],
        job_id,
        "" if published_at is None else repr(published_at),
        keys.EVENTS_MAXLEN,
        "1" if redrive else "",
        int(retention_s),
    ]


def _float(value: str | None) -> float | None:
    return float(value) if value else None
