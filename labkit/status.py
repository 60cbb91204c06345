"""Per-lane booking status: state, progress, attempts, history, and change events.

All of it lives in Redis, so the API, the dashboard, notebooks and every worker process see
one truth. Each change is one Lua script: state, per-state counts, history and the event
stream never disagree.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from labkit import keys
from labkit.text import as_text as _text


class State(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    RETRYING = "retrying"
    COMPLETED = "completed"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead-lettered"


TERMINAL = frozenset({State.COMPLETED, State.REJECTED, State.DEAD_LETTERED})

_TRANSITION = """
local old = redis.call('HGET', KEYS[1], 'state')
local now = ARGV[6]
local entry = cjson.encode({state=ARGV[3], progress=ARGV[4], attempt=ARGV[5], at=now, detail=ARGV[7]})
local function record()
  redis.call('RPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], -200, -1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', 'lane', ARGV[1], 'bookingId', ARGV[2],
    'state', ARGV[3], 'progress', ARGV[4], 'attempt', ARGV[5], 'at', now, 'detail', ARGV[7])
end
-- A late, duplicate run of a finished booking (at-least-once) shows in its history but
-- never moves it back: only a redrive (queued) reopens it.
if ARGV[3] ~= 'queued' and redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  record()
  return {old or '', redis.call('HGET', KEYS[1], 'published_at') or '', 0}
end
if ARGV[9] ~= '' then redis.call('HSETNX', KEYS[1], 'published_at', ARGV[9]) end
redis.call('HSETNX', KEYS[1], 'created_at', now)
local fields = {'state', ARGV[3], 'updated_at', now, 'lane', ARGV[1], 'bookingId', ARGV[2]}
if ARGV[4] ~= '' then table.insert(fields, 'progress'); table.insert(fields, ARGV[4]) end
if ARGV[5] ~= '' then table.insert(fields, 'attempts'); table.insert(fields, ARGV[5]) end
if ARGV[7] ~= '' then table.insert(fields, 'detail'); table.insert(fields, ARGV[7]) end
if ARGV[8] ~= '' then table.insert(fields, 'jobId'); table.insert(fields, ARGV[8]) end
redis.call('HSET', KEYS[1], unpack(fields))
-- finished_at marks the first arrival at a terminal state, so a redelivered, already
-- finished booking is not counted twice; a redrive (back to queued) opens it again.
local first = 0
if ARGV[3] == 'queued' then redis.call('HDEL', KEYS[1], 'finished_at') end
if ARGV[3] == 'completed' or ARGV[3] == 'rejected' or ARGV[3] == 'dead-lettered' then
  first = redis.call('HSETNX', KEYS[1], 'finished_at', now)
end
if old ~= ARGV[3] then
  if old then redis.call('HINCRBY', KEYS[3], old, -1) end
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
end
record()
redis.call('ZADD', KEYS[5], 'NX', redis.call('HGET', KEYS[1], 'created_at'), ARGV[2])
return {old or '', redis.call('HGET', KEYS[1], 'published_at') or '', first}
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
    """What `transition` changed: the caller records metrics on first arrival at a terminal."""

    old: State | None
    new: State
    published_at: float | None
    first_terminal: bool = False


class StatusStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_TRANSITION)

    async def transition(
        self, lane: str, booking_id: str, state: State, **fields: Any
    ) -> Change:
        """Move a booking to `state`; fields: progress, attempt, detail, job_id, published_at."""
        old, published, first = await self._script(
            keys=_script_keys(lane, booking_id), args=_script_args(lane, booking_id, state, **fields)
        )
        old_text = _text(old)
        return Change(
            old=State(old_text) if old_text else None,
            new=state,
            published_at=float(_text(published)) if published else None,
            first_terminal=bool(int(first)),
        )

    async def queue_transition(self, pipe, lane: str, booking_id: str, **fields: Any) -> None:
        """The `queued` transition, added to a caller's pipeline to publish many at once."""
        await self._script(
            keys=_script_keys(lane, booking_id),
            args=_script_args(lane, booking_id, State.QUEUED, progress=0, attempt=0,
                              detail="published", **fields),
            client=pipe,
        )

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
        """Just the states, in one round trip: for waiting on hundreds of bookings."""
        ids = list(booking_ids)
        pipe = self._redis.pipeline(transaction=False)
        for booking_id in ids:
            pipe.hget(keys.status(lane, booking_id), "state")
        states = await pipe.execute()
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
) -> list[Any]:
    return [
        lane,
        booking_id,
        state.value,
        "" if progress is None else str(progress),
        "" if attempt is None else str(attempt),
        repr(time.time()),
        detail[:500],
        job_id,
        "" if published_at is None else repr(published_at),
        keys.EVENTS_MAXLEN,
    ]



def _float(value: str | None) -> float | None:
    return float(value) if value else None
