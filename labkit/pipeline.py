"""The five booking steps, their seed durations × time_scale, and progress checkpoints."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from labkit.booking import Booking
from labkit.effects import Effects, PaymentMismatch
from labkit.faults import FaultStore

CRASH_EXIT_CODE = 70  # what an injected crash exits with: a kill -9 look-alike, no cleanup


@dataclass(frozen=True)
class Step:
    name: str
    seed_duration_s: float
    progress_after: int | None  # the seed's checkpoints: payment 20, pdf 50, email 80, done 100


STEPS = (
    Step("validate", 2.0, None),
    Step("payment", 3.0, 20),
    Step("pdf", 5.0, 50),
    Step("email", 1.0, 80),
    Step("inventory", 1.0, 100),
)
PROGRESS_CHECKPOINTS = (0, 20, 50, 80, 100)


class TransientError(RuntimeError):
    """Worth another attempt: the step may succeed later (a flaky payment provider)."""


class PermanentError(RuntimeError):
    """No retry can fix it: straight to the dead-letter queue."""


class Outcome(StrEnum):
    CONFIRMED = "completed"
    REJECTED = "rejected"  # no room left; the booking was compensated (charge refunded)


@dataclass(frozen=True)
class Compensation:
    refunded: bool  # a charge was given back now (False: none, or refunded before)
    released: bool  # reserved nights were given back
    withdrawn: int  # documents removed (drafts or delivered)


Report = Callable[[int | None, str], Awaitable[None]]  # (progress or None, step note)


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None,
              jitter: bool = True) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    The fixed half keeps delays growing attempt by attempt; the random half spreads out
    retries of bookings that failed together so they don't stampede the provider again.
    Without jitter every delay is the full ceiling: bookings that failed together retry together.
    """
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    if not jitter:
        return ceiling
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class Pipeline:
    def __init__(self, *, effects: Effects, faults: FaultStore, time_scale: float) -> None:
        self.effects = effects
        self.faults = faults
        self.time_scale = time_scale

    async def run(self, booking: Booking, *, attempt: int, report: Report,
                  reported: Callable[[], Awaitable[None]] | None = None) -> Outcome:
        """`reported()` waits until every report so far is written (they may be written
        beside the run): an injected crash waits for it, as a kill would find them written."""
        await report(0, "started")
        charge = pdf = None
        for step in STEPS:
            await report(None, f"{step.name} started")
            await self._inject(step, booking, attempt, reported)
            duration_s = step.seed_duration_s * self.time_scale
            if step.name == "payment":
                # Charge halfway: a crash in the second half has already charged the card,
                # which is exactly when idempotency matters.
                await asyncio.sleep(duration_s / 2)
                charge = await self._charge(booking)
                if charge.refunded:  # a late duplicate of a booking already compensated
                    await report(None, "charge was refunded earlier: booking not confirmed")
                    return Outcome.REJECTED
                await asyncio.sleep(duration_s / 2)
            else:
                await asyncio.sleep(duration_s)
            if step.name == "pdf":
                pdf = await self.effects.write_confirmation(booking, charge)
            elif step.name == "email":
                await self.effects.write_email(booking, pdf)
            elif step.name == "inventory":
                if not await self.effects.reserve_stay(booking):
                    await self.compensate(booking, "no room left")
                    await report(None, "no room left: charge refunded")
                    return Outcome.REJECTED
                # The nights are ours: only now does the guest get the PDF and the e-mail.
                await self.effects.deliver_documents(booking.bookingId)
            if step.progress_after is not None:
                await report(step.progress_after, f"{step.name} done")
        return Outcome.CONFIRMED

    async def compensate(self, booking: Booking, reason: str) -> Compensation:
        """Undo what a booking that will not complete did: refund its charge, give its nights
        back, withdraw its documents. Idempotent: call it again and nothing more happens."""
        return Compensation(
            refunded=await self.effects.refund(booking, reason=reason),
            released=await self.effects.release_stay(booking),
            withdrawn=len(await self.effects.withdraw_documents(booking.bookingId)),
        )

    async def prepare_redrive(self, booking_id: str) -> None:
        """A redriven booking starts over: its refunded charge is filed away so it pays anew."""
        await self.effects.reopen_payment(booking_id)

    async def _charge(self, booking: Booking):
        try:
            return await self.effects.charge(booking)
        except PaymentMismatch as exc:
            raise PermanentError(str(exc)) from None

    async def _inject(self, step: Step, booking: Booking, attempt: int,
                      reported: Callable[[], Awaitable[None]] | None = None) -> None:
        faults = await self.faults.current()
        booking_id = booking.bookingId
        if faults.knob(step.name, "latency_s"):
            await asyncio.sleep(faults.knob(step.name, "latency_s"))
        if faults.roll(step.name, "crash_rate", booking_id, attempt) and await self.faults.claim_crash(
            self.effects.lane, booking_id, step.name
        ):
            if reported is not None:  # history shows the step it died in
                await reported()
            await asyncio.sleep(step.seed_duration_s * self.time_scale / 2)
            os._exit(CRASH_EXIT_CODE)  # die mid-step like a kill -9: no finally, no ack
        if step.name == "validate" and faults.is_poison(booking_id):
            raise TransientError("poison booking: fails on every attempt")
        if attempt <= faults.knob(step.name, "fail_times"):
            raise TransientError(f"{step.name} failed (injected: first attempts fail)")
        if faults.roll(step.name, "fail_rate", booking_id, attempt):
            raise TransientError(f"{step.name} failed (injected: fail_rate)")
