"""The pipeline's side effects: payment ledger, documents, inventory — idempotent per lane.

At-least-once delivery means any step may run twice (a crash after the charge, a stalled
job). Each effect remembers what it did per booking, so the second run replays the first
result. `idempotency=False` turns that off so a lesson can count the duplicates it prevents;
duplicates are counted either way.

A booking is a small saga. The charge is compensated (refunded) when the booking ends
rejected or dead-lettered; the documents are held as drafts and only delivered once the
stay's nights are reserved, so no guest ever holds a confirmation of a booking that failed.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis.asyncio import Redis

from labkit import keys
from labkit.booking import Booking
from labkit.documents import confirmation_email, confirmation_pdf
from labkit.metrics import Metrics
from labkit.round_trip import coalescer

DEFAULT_ROOMS = 100  # rooms per night of a hotel nobody stocked
_temp_numbers = itertools.count()  # with the pid, a temp file name no other writer uses

# A refunded charge is replayed too: a late duplicate run of a compensated booking must not
# charge again. Only `reopen_payment` (a redrive) lets the booking pay anew.
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
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {'new', rec, n}
"""

_REFUND = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev then return 0 end
local rec = cjson.decode(prev)
if rec.refunded then return 0 end
rec.refunded = true
rec.refundReason = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

# A refunded charge is filed under its charge id, so the booking's key is free to pay again.
_REOPEN = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev or not cjson.decode(prev).refunded then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':' .. cjson.decode(prev).chargeId, prev)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# All nights or none. KEYS: capacity, nights taken, reservations; ARGV: hotel, booking,
# idempotency, default rooms, expire-at, then the nights.
_RESERVE = """
local held = redis.call('HEXISTS', KEYS[3], ARGV[2])
if ARGV[3] == '1' and held == 1 then return {'already', held} end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4])
local rooms = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
for i = 6, #ARGV do
  if tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0') >= rooms then return {'full', held} end
end
for i = 6, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
redis.call('HSET', KEYS[3], ARGV[2], table.concat(ARGV, ',', 6))
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('EXPIREAT', key, ARGV[5], 'NX')
  redis.call('EXPIREAT', key, ARGV[5], 'GT')
end
return {'reserved', held}
"""

_RELEASE = """
local nights = redis.call('HGET', KEYS[2], ARGV[1])
if not nights then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
for night in string.gmatch(nights, '[^,]+') do
  if redis.call('HINCRBY', KEYS[1], night, -1) <= 0 then redis.call('HDEL', KEYS[1], night) end
end
return 1
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
    refunded: bool = False  # a replay of a charge the booking's compensation gave back


class Effects:
    def __init__(
        self, *, redis: Redis, lane: str, home: Path, metrics: Metrics, idempotency: bool = True,
        retention_s: float = keys.DEFAULT_RETENTION_S,
    ) -> None:
        self._redis = redis
        self.lane = lane
        self.idempotency = idempotency
        self.retention_s = retention_s
        self._metrics = metrics
        self._charge = redis.register_script(_CHARGE)
        self._refund = redis.register_script(_REFUND)
        self._reopen = redis.register_script(_REOPEN)
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._round_trip = coalescer(redis)  # shares the round trip of the status changes
        self.drafts_dir = home / "lanes" / lane / "drafts"  # rendered, not yet the guest's
        self.confirmations_dir = home / "lanes" / lane / "confirmations"
        self.outbox_dir = home / "lanes" / lane / "outbox"  # what the guest was sent
        self._made_dirs: set[Path] = set()

    # -- payment ---------------------------------------------------------------------------
    async def charge(self, booking: Booking, *, idempotency_key: str | None = None) -> Charge:
        key = idempotency_key or payment_key(booking.bookingId)
        outcome, record, count = await self._round_trip.script(
            self._charge,
            keys=[keys.ledger(self.lane), keys.charges(self.lane)],
            args=[
                key,
                booking.bookingId,
                booking.amount_cents,
                "ch_" + uuid.uuid4().hex[:16],
                "1" if self.idempotency else "0",
                repr(time.time()),
                int(self.retention_s),
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
        return Charge(
            rec["chargeId"], int(rec["amount"]), replayed=outcome == "replay", refunded=rec["refunded"]
        )

    async def refund(
        self, booking: Booking, *, idempotency_key: str | None = None, reason: str = ""
    ) -> bool:
        """Give the charge back; False when there was none or it was refunded already."""
        key = idempotency_key or payment_key(booking.bookingId)
        return bool(await self._refund(keys=[keys.ledger(self.lane)], args=[key, reason[:200]]))

    async def reopen_payment(self, booking_id: str) -> bool:
        """A redriven booking pays anew: its refunded charge is filed away (still counted in
        `charges_made`). False when there is no refunded charge to file away."""
        return bool(await self._reopen(keys=[keys.ledger(self.lane)], args=[payment_key(booking_id)]))

    async def charges_made(self, booking_id: str) -> int:
        return int(await self._redis.hget(keys.charges(self.lane), booking_id) or 0)

    async def ledger_entry(self, booking_id: str) -> dict | None:
        raw = await self._redis.hget(keys.ledger(self.lane), payment_key(booking_id))
        return json.loads(raw) if raw else None

    async def net_charged(self, booking_id: str) -> int:
        """Cents the guest is out of pocket: the live charge unless it was refunded."""
        entry = await self.ledger_entry(booking_id)
        return 0 if entry is None or entry["refunded"] else int(entry["amount"])

    # -- documents -------------------------------------------------------------------------
    async def write_confirmation(self, booking: Booking, charge: Charge) -> Path:
        """Render the PDF as a draft; `deliver_documents` hands it to the guest."""
        draft, delivered = self._documents(booking.bookingId)[0]
        return await self._write_once(draft, delivered, lambda: confirmation_pdf(booking, charge.charge_id))

    async def write_email(self, booking: Booking, pdf: Path) -> Path:
        """Render the e-mail as a draft; delivery sends it (puts it in the outbox)."""
        draft, delivered = self._documents(booking.bookingId)[1]
        return await self._write_once(
            draft, delivered, lambda: confirmation_email(booking, pdf.name, pdf.read_bytes())
        )

    async def deliver_documents(self, booking_id: str) -> list[Path]:
        """Publish the drafts: the PDF to confirmations, the e-mail to the outbox. Safe to
        repeat: what was delivered already stays delivered. Returns what the guest holds."""
        held = []
        for draft, delivered in self._documents(booking_id):  # renames: cheaper inline than in a thread
            if self._move(draft, delivered) or delivered.exists():
                held.append(delivered)
        return held

    async def withdraw_documents(self, booking_id: str) -> list[Path]:
        """Discard the booking's drafts and anything delivered; returns what was removed."""
        paths = [path for pair in self._documents(booking_id) for path in pair]
        return [path for path in paths if _remove(path)]

    def confirmations_for(self, booking_id: str) -> list[Path]:
        """What the guest holds: the delivered PDF and the sent e-mail, if any."""
        return [delivered for _draft, delivered in self._documents(booking_id) if delivered.exists()]

    def _documents(self, booking_id: str) -> list[tuple[Path, Path]]:
        """(draft, delivered) for the PDF and for the e-mail."""
        pdf, eml = f"{booking_id}.pdf", f"{booking_id}.eml"
        return [(self.drafts_dir / pdf, self.confirmations_dir / pdf),
                (self.drafts_dir / eml, self.outbox_dir / eml)]

    def _move(self, draft: Path, delivered: Path) -> bool:
        """Rename the draft to its delivered name; False when there is no draft (any more)."""
        try:
            self._in_made_dir(delivered, lambda: os.replace(draft, delivered))
        except FileNotFoundError:
            return False
        return True

    async def _write_once(self, draft: Path, delivered: Path, render: Callable[[], bytes]) -> Path:
        there = draft.exists(), delivered.exists()
        if self.idempotency and any(there):
            await self._metrics.incr(self.lane, "replays_prevented")
            return draft if there[0] else delivered
        # Inline: the render fills a template and the file is a few KB; a thread hop cost
        # more than the write (measured: a booking's CPU time rose by half).
        self._in_made_dir(draft, lambda: _atomic_write(draft, render()))
        if any(there):
            await self._metrics.incr(self.lane, "duplicate_effects")
        return draft

    def _in_made_dir(self, path: Path, write: Callable[[], None]) -> None:
        """`write` a file in `path`'s directory, made the first time this process needs it
        (or again, when somebody removed it meanwhile: a learner's `rm -rf` of the lab home).
        Making sure of it before every file cost two system calls and an exception each."""
        folder = path.parent
        if folder not in self._made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(folder)
        try:
            write()
        except FileNotFoundError:
            if folder.is_dir():
                raise  # the directory is there: what is missing is the source itself
            folder.mkdir(parents=True, exist_ok=True)
            write()

    # -- inventory -------------------------------------------------------------------------
    async def stock(self, hotel_rooms: dict[str, int]) -> None:
        """Give each hotel `rooms` rooms on every night, all free: a fresh inventory."""
        if not hotel_rooms:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.inventory(self.lane), mapping=hotel_rooms)
        for hotel_id in hotel_rooms:
            pipe.delete(keys.nights_taken(self.lane, hotel_id), keys.reservations(self.lane, hotel_id))
        await pipe.execute()

    async def rooms_left(self, hotel_id: str) -> int | None:
        """Rooms still free on the hotel's fullest night (its capacity when no night is
        taken); None for a hotel never stocked nor booked."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(keys.inventory(self.lane), hotel_id)
        pipe.hvals(keys.nights_taken(self.lane, hotel_id))
        capacity, taken = await pipe.execute()
        if capacity is None and not taken:
            return None
        rooms = DEFAULT_ROOMS if capacity is None else int(capacity)
        return rooms - max((int(t) for t in taken), default=0)

    async def reserve_stay(self, booking: Booking) -> bool:
        """Take a room on every night of the stay, atomically; False when any night is full.
        A replay of a booking that holds its nights takes nothing more."""
        nights = [night.isoformat() for night in booking.each_night()]
        outcome, was_held = await self._round_trip.script(
            self._reserve,
            keys=self._stay_keys(booking.hotelId),
            args=[booking.hotelId, booking.bookingId, "1" if self.idempotency else "0",
                  DEFAULT_ROOMS, self._keep_until(booking), *nights],
        )
        if outcome == "already":
            await self._metrics.incr(self.lane, "replays_prevented")
            return True
        if int(was_held) and outcome == "reserved":
            await self._metrics.incr(self.lane, "duplicate_effects")
        if outcome == "full" and int(was_held):
            return True  # our nights were taken by an earlier run of this same booking
        return outcome == "reserved"

    async def release_stay(self, booking: Booking) -> bool:
        """Give the stay's nights back; False when the booking held none."""
        _capacity, taken, held = self._stay_keys(booking.hotelId)
        return bool(await self._release(keys=[taken, held], args=[booking.bookingId]))

    def _stay_keys(self, hotel_id: str) -> list[str]:
        return [keys.inventory(self.lane), keys.nights_taken(self.lane, hotel_id),
                keys.reservations(self.lane, hotel_id)]

    def _keep_until(self, booking: Booking) -> int:
        """A hotel's nights and reservations are kept a retention period past the last
        check-out booked there: after that they are history, not inventory."""
        check_out = datetime.combine(booking.checkOut, datetime.min.time(), tzinfo=UTC)
        return int((check_out + timedelta(seconds=self.retention_s)).timestamp())


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _atomic_write(path: Path, content: bytes) -> None:
    """Write via a temp file and rename: a crash never leaves half a file under the real name."""
    tmp = f"{path.parent}/.{path.name}.{os.getpid()}.{next(_temp_numbers)}.tmp"
    with open(tmp, "wb") as file:
        file.write(content)
    os.replace(tmp, path)
