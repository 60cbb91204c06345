"""Failure injection, stored in Redis so running workers pick up changes live.

Each decision is seeded by (seed, booking, attempt, step): the same lesson fails the same
bookings every run, whichever worker happens to take them.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from labkit.keys import FAULTS_KEY, SAVED_FAULTS_KEY
from labkit.round_trip import coalescer
from labkit.text import as_text as _text

STEPS = ("validate", "payment", "pdf", "email", "inventory")
KNOBS = {
    "fail_rate": float,  # chance a step raises a transient error
    "fail_times": int,  # the first N attempts of every booking fail at this step
    "latency_s": float,  # extra seconds spent in the step
    "crash_rate": float,  # chance the worker process dies (os._exit) halfway through the step
}
# The retry policy, live like the faults: a lesson sets its own (FaultStore.begin_lesson), and
# every worker follows it, whatever settings that worker was started with; unset, a worker
# uses its own settings.
RETRY_POLICY = {"max_attempts": int, "backoff_base_s": float, "backoff_max_s": float}
CACHE_S = 0.25


class FaultSpecError(ValueError):
    """A `faults set` assignment labkit does not understand."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float


@dataclass(frozen=True)
class Faults:
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.values.get("seed", 7))

    def knob(self, step: str, name: str) -> float:
        return float(self.values.get(f"{step}.{name}", 0))

    def retry_policy(self, settings: Any) -> RetryPolicy:
        """The lab's live retry policy (`retry.max_attempts=3` …), else `settings`' own."""
        return RetryPolicy(**{
            name: kind(self.values.get(f"retry.{name}", getattr(settings, name)))
            for name, kind in RETRY_POLICY.items()
        })

    def is_poison(self, booking_id: str) -> bool:
        return booking_id in self.values.get("poison", "").split(",")

    def roll(self, step: str, name: str, booking_id: str, attempt: int) -> bool:
        rate = self.knob(step, name)
        if rate <= 0:
            return False
        rng = random.Random(f"{self.seed}:{booking_id}:{attempt}:{step}:{name}")
        return rng.random() < rate


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """`payment.fail_rate=0.3 seed=4 poison=bk-1,bk-2` → validated {field: value}."""
    out: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise FaultSpecError(f"{item!r}: expected name=value, e.g. payment.fail_rate=0.3")
        name = name.strip()
        if name in {"seed", "poison"}:
            if name == "seed":
                _convert(name, value, int)
            out[name] = value.strip()
            continue
        step, _, knob = name.partition(".")
        if step == "retry" and knob in RETRY_POLICY:
            number = _convert(name, value, RETRY_POLICY[knob])
            if number < (1 if knob == "max_attempts" else 0):
                raise FaultSpecError(f"{name}={value}: too small")
            out[name] = str(number)
            continue
        if step not in STEPS or knob not in KNOBS:
            raise FaultSpecError(
                f"{name!r}: unknown fault; use <step>.<knob> with step in {', '.join(STEPS)} "
                f"and knob in {', '.join(KNOBS)}, or seed=N, poison=<bookingId,...>, "
                f"retry.<{'|'.join(RETRY_POLICY)}>=N"
            )
        number = _convert(name, value, KNOBS[knob])
        if knob.endswith("_rate") and not 0 <= number <= 1:
            raise FaultSpecError(f"{name}={value}: a rate must be between 0 and 1")
        if number < 0:
            raise FaultSpecError(f"{name}={value}: must not be negative")
        out[name] = str(number)
    return out


def _convert(name: str, value: str, kind: type) -> float:
    try:
        return kind(value)
    except ValueError:
        raise FaultSpecError(f"{name}={value!r}: not a {kind.__name__}") from None


class FaultStore:
    """Reads and writes the live fault settings; reads are cached briefly per process."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._cached = Faults()
        self._read_at = 0.0

    async def current(self) -> Faults:
        if time.monotonic() - self._read_at > CACHE_S:
            # The bookings in flight find it expired together: their reads share a round trip.
            raw = await coalescer(self._redis).run(lambda pipe: pipe.hgetall(FAULTS_KEY))
            self._cached = Faults({_text(k): _text(v) for k, v in raw.items()})
            self._read_at = time.monotonic()
        return self._cached

    async def set(self, assignments: list[str] | dict[str, Any]) -> dict[str, str]:
        if isinstance(assignments, dict):
            assignments = [f"{k}={v}" for k, v in assignments.items()]
        values = parse_assignments(assignments)
        if values:
            await self._redis.hset(FAULTS_KEY, mapping=values)
        self._read_at = 0.0
        return values

    async def claim_crash(self, lane: str, booking_id: str, step: str) -> bool:
        """True the first time only: an injected crash hits a booking once per step, so the
        lesson shows recovery instead of a crash loop that takes down every worker."""
        key = f"{FAULTS_KEY}:crashed:{lane}:{booking_id}:{step}"
        return bool(await self._redis.set(key, "1", nx=True, ex=3600))

    async def clear(self, *, set_aside_too: bool = False) -> None:
        """No faults now; with `set_aside_too`, none given back when a lesson ends either."""
        await self._redis.delete(FAULTS_KEY, *([SAVED_FAULTS_KEY] if set_aside_too else []))
        self._read_at = 0.0

    async def begin_lesson(self, assignments: list[str] | dict[str, Any]) -> dict[str, str]:
        """Put the learner's own faults aside and set only the lesson's. Set aside once: after
        an interrupted lesson, its leftovers are not mistaken for the learner's settings."""
        await self._redis.set(SAVED_FAULTS_KEY, json.dumps(await self.show()), nx=True)
        await self.clear()
        return await self.set(assignments)

    async def end_lesson(self) -> dict[str, str]:
        """Drop the lesson's faults and give the learner's back (what `begin_lesson` set aside)."""
        saved = json.loads(_text(await self._redis.getdel(SAVED_FAULTS_KEY)) or "{}")
        await self.clear()
        if saved:
            await self.set(saved)
        return saved

    async def show(self) -> dict[str, str]:
        self._read_at = 0.0
        return dict((await self.current()).values)
