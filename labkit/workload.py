"""A seeded booking workload: realistic users, hotels with limited rooms, a few hot hotels."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from labkit.booking import Booking, make_booking


@dataclass(frozen=True)
class Workload:
    """Same seed, same bookings: lessons and tests are repeatable run after run."""

    seed: int = 42
    hotels: int = 20
    hot_hotels: int = 3
    hot_share: float = 0.4  # share of bookings that go to the hot hotels (contention)
    rooms_per_hotel: int = 50
    users: int = 500
    # Content comes from the seed; ids from the run, so re-running a lesson on a lab that
    # still holds the last run's jobs never collides with them (BullMQ ignores a known jobId).
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    rooms: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "rooms", {self.hotel_id(i): self.rooms_per_hotel for i in range(self.hotels)}
        )

    @staticmethod
    def hotel_id(index: int) -> str:
        return f"hotel-{index + 1:03d}"

    def bookings(self, count: int, *, start: int = 0) -> list[Booking]:
        rng = random.Random(f"{self.seed}:{start}")
        today = datetime.now(UTC).date()
        out = []
        for n in range(start, start + count):
            if rng.random() < self.hot_share:
                hotel = rng.randrange(self.hot_hotels)
            else:
                hotel = rng.randrange(self.hot_hotels, self.hotels)
            check_in = today + timedelta(days=rng.randint(1, 90))
            out.append(
                make_booking(
                    {
                        "userId": f"user-{rng.randrange(self.users) + 1:04d}",
                        "hotelId": self.hotel_id(hotel),
                        "checkIn": check_in,
                        "checkOut": check_in + timedelta(days=rng.choice((1, 2, 2, 3, 4, 7))),
                        "guests": rng.choice((1, 2, 2, 2, 3, 4)),
                    },
                    booking_id=f"bk-{self.run_id}-{n:05d}",
                )
            )
        return out
