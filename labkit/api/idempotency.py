"""Idempotency-Key for POST /api/bookings, kept in Redis so it holds across API processes.

One string per key, `lab:api:idem:<key>`, created with SET NX and kept 24 h:
`{"hash", "state", "bookingId", "jobs", "since"}`. The first request to SET it owns the key;
`state` is `pending` while it publishes, `done` once every lane took the booking, `partial`
when a broker was down. A retry with the same key and body then gets the stored answer
(`done`), 409 (`pending`), or takes the key over and publishes only the lanes that are still
missing, with the same booking id (`partial`, or a `pending` whose owner died mid-publish).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from labkit import keys

TTL_S = 24 * 3600
STALE_PENDING_S = 30.0  # an owner that has not finished by then is presumed dead
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"

# Take over a `partial` key, or a `pending` one whose owner died: atomically, so of twenty
# retries only one republishes.
_TAKE_OVER = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'gone', ''} end
local rec = cjson.decode(raw)
if rec.hash ~= ARGV[1] then return {'mismatch', raw} end
local stale = rec.state == 'pending' and (tonumber(ARGV[2]) - tonumber(rec.since)) > tonumber(ARGV[3])
if rec.state == 'partial' or stale then
  rec.state = 'pending'
  rec.since = tonumber(ARGV[2])
  raw = cjson.encode(rec)
  redis.call('SET', KEYS[1], raw, 'KEEPTTL')
  return {'resume', raw}
end
return {rec.state, raw}
"""


def redis_key(key: str) -> str:
    return keys.idempotency(key)


@dataclass
class Claim:
    """What this request may do: `new`/`resume` → publish; `done` → replay; `pending` → 409;
    `mismatch` → 422."""

    outcome: str
    booking_id: str
    jobs: dict[str, str] = field(default_factory=dict)


class IdempotencyStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._take_over = redis.register_script(_TAKE_OVER)

    async def claim(self, key: str, body_hash: str, new_booking_id: str) -> Claim:
        record = {"hash": body_hash, "state": "pending", "bookingId": new_booking_id,
                  "jobs": {}, "since": time.time()}
        if await self._redis.set(redis_key(key), json.dumps(record), nx=True, ex=TTL_S):
            return Claim("new", new_booking_id)
        outcome, raw = await self._take_over(
            keys=[redis_key(key)], args=[body_hash, repr(time.time()), STALE_PENDING_S]
        )
        if outcome == "gone":  # expired between SET and the script: start afresh
            return await self.claim(key, body_hash, new_booking_id)
        stored = json.loads(raw)
        return Claim(outcome, stored["bookingId"], _jobs(stored.get("jobs")))

    async def finish(self, key: str, body_hash: str, booking_id: str, jobs: dict[str, str], *, complete: bool) -> None:
        record: dict[str, Any] = {"hash": body_hash, "state": "done" if complete else "partial",
                                  "bookingId": booking_id, "jobs": jobs, "since": time.time()}
        await self._redis.set(redis_key(key), json.dumps(record), ex=TTL_S)


def _jobs(value: Any) -> dict[str, str]:
    # cjson turns an empty JSON object into an empty array on the way back out.
    return dict(value) if isinstance(value, dict) else {}
