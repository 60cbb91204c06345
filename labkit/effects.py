"""The pipeline's side effects: payment ledger, PDF, e-mail, inventory — idempotent per lane.

At-least-once delivery means any step may run twice (a crash after the charge, a stalled
job). Each effect remembers what it did per booking, so the second run replays the first
result. `idempotency=False` turns that off so a lesson can count the duplicates it prevents;
duplicates are counted either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from redis.asyncio import Redis

from labkit import keys
from labkit.booking import Booking
from labkit.metrics import Metrics

DEFAULT_ROOMS = 100

_CHARGE = """
if ARGV[5] == '1' then
  local prev = redis.call('HGET', KEYS[1], ARGV[1])
  if prev then
    if tonumber(cjson.decode(prev).amount) ~= tonumber(ARGV[3]) then return {'mismatch', prev, 0} end
    return {'replay', prev, 0}
  end
end
local rec = cjson.encode({chargeId=ARGV[4], bookingId=ARGV[2], amount=tonumber(ARGV[3]),
  at=ARGV[6], refunded=false})
redis.call('HSET', KEYS[1], ARGV[1], rec)
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {'new', rec, n}
"""

_REFUND = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev then return 0 end
local rec = cjson.decode(prev)
if rec.refunded then return 0 end
rec.refunded = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

_RESERVE = """
local member = redis.call('SISMEMBER', KEYS[2], ARGV[2])
if ARGV[3] == '1' and member == 1 then return {'already', 0, 0} end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4])
local rooms = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if rooms <= 0 then return {'full', rooms, member} end
rooms = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
redis.call('SADD', KEYS[2], ARGV[2])
return {'reserved', rooms, member}
"""



def payment_key(booking_id: str) -> str:
    """The ledger's default idempotency key: one charge per booking and lane."""
    return f"payment:{booking_id}"

class PaymentMismatch(ValueError):
    """The same idempotency key arrived with another amount: never charge it."""


@dataclass(frozen=True)
class Charge:
    charge_id: str
    amount_cents: int
    replayed: bool


class Effects:
    def __init__(
        self, *, redis: Redis, lane: str, home: Path, metrics: Metrics, idempotency: bool = True
    ) -> None:
        self._redis = redis
        self.lane = lane
        self.idempotency = idempotency
        self._metrics = metrics
        self._charge = redis.register_script(_CHARGE)
        self._refund = redis.register_script(_REFUND)
        self._reserve = redis.register_script(_RESERVE)
        self.confirmations_dir = home / "lanes" / lane / "confirmations"
        self.outbox_dir = home / "lanes" / lane / "outbox"

    # -- payment ---------------------------------------------------------------------------
    async def charge(self, booking: Booking, *, idempotency_key: str | None = None) -> Charge:
        key = idempotency_key or payment_key(booking.bookingId)
        outcome, record, count = await self._charge(
            keys=[keys.ledger(self.lane), keys.charges(self.lane)],
            args=[
                key,
                booking.bookingId,
                booking.amount_cents,
                "ch_" + uuid.uuid4().hex[:16],
                "1" if self.idempotency else "0",
                repr(time.time()),
            ],
        )
        rec = json.loads(record)
        if outcome == "mismatch":
            raise PaymentMismatch(
                f"idempotency key {key!r} was used for {rec['amount']} cents, not "
                f"{booking.amount_cents}"
            )
        if outcome == "replay":
            await self._metrics.incr(self.lane, "replays_prevented")
        elif int(count) > 1:
            await self._metrics.incr(self.lane, "duplicate_effects")
        return Charge(rec["chargeId"], int(rec["amount"]), replayed=outcome == "replay")

    async def refund(self, booking: Booking, *, idempotency_key: str | None = None) -> bool:
        key = idempotency_key or payment_key(booking.bookingId)
        return bool(await self._refund(keys=[keys.ledger(self.lane)], args=[key]))

    async def charges_made(self, booking_id: str) -> int:
        return int(await self._redis.hget(keys.charges(self.lane), booking_id) or 0)

    async def ledger_entry(self, booking_id: str) -> dict | None:
        raw = await self._redis.hget(keys.ledger(self.lane), payment_key(booking_id))
        return json.loads(raw) if raw else None

    # -- documents -------------------------------------------------------------------------
    async def write_confirmation(self, booking: Booking, charge: Charge) -> Path:
        from labkit.documents import confirmation_pdf

        path = self.confirmations_dir / f"{booking.bookingId}.pdf"
        return await self._write_once(path, lambda: confirmation_pdf(booking, charge.charge_id))

    async def write_email(self, booking: Booking, pdf: Path) -> Path:
        path = self.outbox_dir / f"{booking.bookingId}.eml"
        return await self._write_once(path, lambda: _email_bytes(booking, pdf))

    async def _write_once(self, path: Path, render: Callable[[], bytes]) -> Path:
        if path.exists() and self.idempotency:
            await self._metrics.incr(self.lane, "replays_prevented")
            return path
        # Rendering (fpdf2) and file I/O block: a thread keeps the worker's event loop free
        # (BullMQ renews its locks on that loop).
        existed = await asyncio.to_thread(_atomic_write, path, render)
        if existed:
            await self._metrics.incr(self.lane, "duplicate_effects")
        return path

    # -- inventory -------------------------------------------------------------------------
    async def stock(self, hotel_rooms: dict[str, int]) -> None:
        if hotel_rooms:
            await self._redis.hset(keys.inventory(self.lane), mapping=hotel_rooms)

    async def rooms_left(self, hotel_id: str) -> int | None:
        raw = await self._redis.hget(keys.inventory(self.lane), hotel_id)
        return None if raw is None else int(raw)

    async def reserve_room(self, booking: Booking) -> bool:
        """Take one room atomically; False when the hotel is full (never below zero)."""
        outcome, _rooms, was_member = await self._reserve(
            keys=[keys.inventory(self.lane), keys.reservations(self.lane, booking.hotelId)],
            args=[booking.hotelId, booking.bookingId, "1" if self.idempotency else "0", DEFAULT_ROOMS],
        )
        if outcome == "already":
            await self._metrics.incr(self.lane, "replays_prevented")
            return True
        if int(was_member) and outcome == "reserved":
            await self._metrics.incr(self.lane, "duplicate_effects")
        if outcome == "full" and int(was_member):
            return True  # our room was taken by an earlier run of this same booking
        return outcome == "reserved"


def _atomic_write(path: Path, render: Callable[[], bytes]) -> bool:
    """Write via a temp file and rename: a crash never leaves half a file under the real
    name. Returns whether the file existed before (a duplicate effect)."""
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_bytes(render())
    os.replace(tmp, path)
    return existed


def _email_bytes(booking: Booking, pdf: Path) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bookings@booking-queue-lab.test"
    msg["To"] = f"{booking.userId}@guests.booking-queue-lab.test"
    msg["Subject"] = f"Your booking {booking.bookingId} at hotel {booking.hotelId} is confirmed"
    msg["Message-ID"] = f"<{booking.bookingId}@booking-queue-lab.test>"
    msg.set_content(
        f"Hello {booking.userId},\n\nyour stay at hotel {booking.hotelId} from {booking.checkIn} "
        f"to {booking.checkOut} for {booking.guests} guest(s) is confirmed.\n"
    )
    msg.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename=pdf.name)
    return bytes(msg)
