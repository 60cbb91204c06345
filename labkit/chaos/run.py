"""What a scenario works with: the lab, its worker pools, the ledger, and a producer that
writes to the ledger the moment a booking is accepted (by a backend or by the API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from labkit.api.server import api_process
from labkit.booking import Booking
from labkit.chaos.ledger import Ledger
from labkit.lab import Lab
from labkit.settings import Settings
from labkit.workers import Workers
from labkit.workload import Workload


@dataclass(frozen=True)
class Posted:
    status: int  # the HTTP status; 0 when no answer came
    booking_id: str | None


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[str]:
    """The API as its own process (the whole HTTP stack); yields its base URL."""
    server = api_process(settings)
    base = await anyio.to_thread.run_sync(server.__enter__)
    try:
        yield base
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.__exit__, None, None, None)


@dataclass
class Run:
    scenario: str
    lab: Lab
    ledger: Ledger
    lanes: list[str]
    bookings: int
    pools: Workers
    workload: Workload = field(default_factory=Workload)
    fault_ended_at: float | None = None  # monotonic; recovery is measured from here
    explained_after: float | None = None  # epoch; see judge(explained_after=...)
    baseline_ids: list[str] = field(default_factory=list)  # a clean batch run before the fault
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # series the HTML report charts

    async def stock(self, hotel_rooms: dict[str, int] | None = None) -> None:
        rooms = hotel_rooms or self.workload.rooms
        await self.lab.stock(rooms, self.lanes)
        for lane in self.lanes:
            self.ledger.set_capacity(self.scenario, lane, rooms)

    async def publish(self, bookings: Sequence[Booking], lanes: Sequence[str] | None = None) -> int:
        """Publish to each lane on its own; the ledger hears of each lane's answer at once.
        Returns how many lane-publishes were refused (the broker said no or was away)."""
        refused = 0
        for lane in lanes or self.lanes:
            try:
                await self.lab.backend(lane).publish_many(bookings)
            except Exception as exc:  # noqa: BLE001 - a refusal is an outcome, not a crash
                self.ledger.refuse(self.scenario, lane, [b.bookingId for b in bookings], repr(exc))
                refused += len(bookings)
            else:
                self.ledger.accept(self.scenario, lane, bookings)
        return refused

    async def feed(self, bookings: Sequence[Booking], *, batches: int = 10, pause_s: float = 0.2) -> None:
        """Publish in batches with pauses, so faults land while bookings keep arriving."""
        size = max(1, -(-len(bookings) // batches))
        for start in range(0, len(bookings), size):
            await self.publish(bookings[start:start + size])
            await anyio.sleep(pause_s)

    async def post(self, client: httpx.AsyncClient, booking: Booking, *,
                   idempotency_key: str | None = None) -> Posted:
        """POST through the API; the ledger records each lane the answer says accepted the
        booking (202: all asked; 503: those in `jobs`) under the id the API gave it."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {**booking.model_dump(mode="json", exclude={"bookingId"}), "backends": self.lanes}
        try:
            answer = await client.post("/api/bookings", json=body, headers=headers)
        except httpx.HTTPError as exc:
            for lane in self.lanes:
                self.ledger.refuse(self.scenario, lane, [booking.bookingId], repr(exc))
            return Posted(0, None)
        data = answer.json()
        accepted = booking.model_copy(update={"bookingId": data["bookingId"]}) if "bookingId" in data else None
        for lane in self.lanes:
            if accepted is not None and lane in data.get("jobs", {}):
                self.ledger.accept(self.scenario, lane, [accepted])
            else:
                self.ledger.refuse(self.scenario, lane, [booking.bookingId],
                                   str(data.get("failed", {}).get(lane, data.get("detail", ""))))
        return Posted(answer.status_code, accepted.bookingId if accepted else None)

    def fault_over(self) -> None:
        self.fault_ended_at = time.monotonic()

    def note(self, text: str) -> None:
        self.notes.append(text)
