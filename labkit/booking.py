"""The booking, its validation rules and the job envelope every technology carries."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_NIGHTS = 30
ShortId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Stay(BaseModel):
    """The seed's fields and the rules that hold whenever a booking is read: at intake and
    again when a worker consumes it. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    userId: ShortId
    hotelId: ShortId
    checkIn: date
    checkOut: date
    guests: Annotated[int, Field(ge=1, le=8, strict=True)] = 1

    @model_validator(mode="after")
    def _stay_is_sensible(self) -> Self:
        if self.checkOut <= self.checkIn:
            raise ValueError("checkOut must be after checkIn")
        if (self.checkOut - self.checkIn).days > MAX_NIGHTS:
            raise ValueError(f"stay must be at most {MAX_NIGHTS} nights")
        return self

    @property
    def nights(self) -> int:
        return (self.checkOut - self.checkIn).days

    def each_night(self) -> list[date]:
        """The nights the stay takes a room: checkIn <= night < checkOut."""
        return [self.checkIn + timedelta(days=n) for n in range(self.nights)]


class BookingRequest(Stay):
    """What a client sends. "Not in the past" is an intake rule: a booking accepted at 23:59
    and retried, or redriven, after its date is still the booking that was accepted."""

    @model_validator(mode="after")
    def _not_in_the_past(self) -> Self:
        if self.checkIn < datetime.now(UTC).date():
            raise ValueError("checkIn must not be in the past")
        return self


class Booking(Stay):
    bookingId: ShortId

    @property
    def amount_cents(self) -> int:
        # A fixed nightly rate per guest keeps ledger amounts predictable in lessons.
        return self.nights * (9000 + 2500 * (self.guests - 1))


class Envelope(BaseModel):
    """The seed's job envelope: the same JSON on BullMQ, Streams and Kafka."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobId: ShortId
    type: str = "booking"
    data: Booking
    timestamp: str

    @classmethod
    def wrap(cls, booking: Booking) -> Envelope:
        return cls(
            jobId=f"job-{booking.bookingId}",
            data=booking,
            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )

    def to_json(self) -> str:
        return self.model_dump_json()

    @property
    def published_at(self) -> float:
        return datetime.fromisoformat(self.timestamp).timestamp()


class InvalidJob(ValueError):
    """A payload no retry can fix: not JSON, wrong shape or a booking that breaks the rules."""


def new_booking_id() -> str:
    return "bk-" + uuid.uuid4().hex[:12]


def make_booking(request: BookingRequest | dict[str, Any], booking_id: str | None = None) -> Booking:
    """Intake: the request's rules (checkIn not in the past) hold here, then it gets an id."""
    checked = request if isinstance(request, BookingRequest) else BookingRequest.model_validate(request)
    return Booking(bookingId=booking_id or new_booking_id(), **checked.model_dump())


def parse_envelope(raw: str | bytes | dict[str, Any]) -> Envelope:
    """Decode what a worker received; raise InvalidJob with a reason naming the problem."""
    try:
        payload = raw if isinstance(raw, dict) else json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJob(f"job is not JSON: {exc}") from None
    try:
        return Envelope.model_validate(payload)
    except ValidationError as exc:
        raise InvalidJob(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, each naming its field: the message learners and clients see."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "booking"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
