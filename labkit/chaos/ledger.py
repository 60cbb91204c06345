"""The independent ledger: a SQLite file, outside Redis and Kafka, of every booking the producer
was told was accepted. It is written the moment the broker (or the API) says yes, before
anything else is trusted, so a booking the lab loses afterwards is still on record here."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.booking import Booking

_SCHEMA = """
create table if not exists accepted (
  scenario text not null, lane text not null, booking_id text not null,
  hotel_id text not null, nights text not null, amount_cents integer not null,
  accepted_at real not null,
  primary key (scenario, lane, booking_id)
);
create table if not exists refused (
  scenario text not null, lane text not null, booking_id text not null,
  reason text not null, refused_at real not null
);
create table if not exists capacity (
  scenario text not null, lane text not null, hotel_id text not null, rooms integer not null,
  primary key (scenario, lane, hotel_id)
);
"""


@dataclass(frozen=True)
class Accepted:
    booking_id: str
    hotel_id: str
    nights: tuple[str, ...]
    amount_cents: int
    accepted_at: float


class Ledger:
    """One SQLite file per chaos run; each scenario's rows are kept apart by its name."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit: on disk at once
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def accept(self, scenario: str, lane: str, bookings: Iterable[Booking]) -> None:
        now = time.time()
        self._db.executemany(
            "insert or ignore into accepted values (?, ?, ?, ?, ?, ?, ?)",
            [(scenario, lane, b.bookingId, b.hotelId, ",".join(n.isoformat() for n in b.each_night()),
              b.amount_cents, now) for b in bookings],
        )

    def refuse(self, scenario: str, lane: str, booking_ids: Iterable[str], reason: str) -> None:
        now = time.time()
        self._db.executemany(
            "insert into refused values (?, ?, ?, ?, ?)",
            [(scenario, lane, booking_id, reason[:300], now) for booking_id in booking_ids],
        )

    def set_capacity(self, scenario: str, lane: str, hotel_rooms: dict[str, int]) -> None:
        self._db.executemany(
            "insert or replace into capacity values (?, ?, ?, ?)",
            [(scenario, lane, hotel, rooms) for hotel, rooms in hotel_rooms.items()],
        )

    def accepted(self, scenario: str, lane: str) -> list[Accepted]:
        rows = self._db.execute(
            "select booking_id, hotel_id, nights, amount_cents, accepted_at from accepted "
            "where scenario = ? and lane = ? order by accepted_at", (scenario, lane),
        )
        return [Accepted(b, h, tuple(n.split(",")), a, t) for b, h, n, a, t in rows]

    def refused_count(self, scenario: str, lane: str) -> int:
        row = self._db.execute(
            "select count(*) from refused where scenario = ? and lane = ?", (scenario, lane)
        ).fetchone()
        return int(row[0])

    def capacity(self, scenario: str, lane: str) -> dict[str, int]:
        rows = self._db.execute(
            "select hotel_id, rooms from capacity where scenario = ? and lane = ?", (scenario, lane)
        )
        return dict(rows.fetchall())
