"""Judge one lane after a scenario: the ledger says what was accepted, the lab says what became
of it. Lost = accepted bookings the lab can no longer account for in any state."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from labkit.chaos.ledger import Accepted, Ledger
from labkit.effects import DEFAULT_ROOMS
from labkit.lab import Lab
from labkit.status import State

IN_FLIGHT = frozenset({State.QUEUED, State.ACTIVE, State.RETRYING})


@dataclass
class LaneVerdict:
    scenario: str
    lane: str
    accepted: int = 0
    refused: int = 0  # the producer was told no: never the lab's to lose
    completed: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    lost: int = 0
    lost_explained: int = 0  # lost inside a window the scenario names (Redis AOF everysec)
    duplicate_charges: int = 0
    charged_not_completed: int = 0  # a rejected or dead-lettered booking whose charge stands
    overbooked_room_nights: int = 0
    confirmations_not_completed: int = 0
    recovery_s: float | None = None  # fault end → every accepted booking finished
    p99_latency_s: float | None = None  # with a clean baseline: of the bookings outside it
    p99_clean_s: float | None = None  # the scenario's clean baseline batch, same run and lane
    p99_vs_clean: float | None = None  # p99_latency_s / p99_clean_s
    p99_over_limit: bool = False  # full-size runs: the ratio broke the scenario's p99_limit
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost beyond the explained window, nothing doubled, nothing overbooked, and
        (full-size runs) latency under the fault within its limit of the clean run's."""
        return not (self.lost - self.lost_explained or self.duplicate_charges
                    or self.charged_not_completed or self.overbooked_room_nights
                    or self.confirmations_not_completed or self.p99_over_limit)

    def as_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean}


async def judge(lab: Lab, ledger: Ledger, scenario: str, lane: str, *,
                explained_after: float | None = None) -> LaneVerdict:
    """`explained_after`: a booking accepted after this time (epoch) and lost is counted as
    lost inside the scenario's named window, not as a defect."""
    accepted = ledger.accepted(scenario, lane)
    verdict = LaneVerdict(scenario, lane, accepted=len(accepted),
                          refused=ledger.refused_count(scenario, lane))
    states = await lab.status.many(lane, [a.booking_id for a in accepted])
    effects = lab.effects[lane]
    counts = Counter(states.values())
    verdict.completed = counts[State.COMPLETED]
    verdict.rejected = counts[State.REJECTED]
    verdict.dead_lettered = counts[State.DEAD_LETTERED]
    verdict.in_flight = sum(counts[s] for s in IN_FLIGHT)
    completed: list[Accepted] = []
    for booking in accepted:
        state = states.get(booking.booking_id)
        if state is None:
            verdict.lost += 1
            if explained_after is not None and booking.accepted_at >= explained_after:
                verdict.lost_explained += 1
            continue
        if state is State.COMPLETED:
            completed.append(booking)
        elif effects.confirmations_for(booking.booking_id):
            verdict.confirmations_not_completed += 1
        if state in {State.REJECTED, State.DEAD_LETTERED} and await effects.net_charged(booking.booking_id):
            verdict.charged_not_completed += 1
        verdict.duplicate_charges += max(0, await effects.charges_made(booking.booking_id) - 1)
    verdict.overbooked_room_nights = overbooked(completed, ledger.capacity(scenario, lane))
    return verdict


def overbooked(completed: list[Accepted], capacity: dict[str, int]) -> int:
    """Room-nights sold beyond a hotel's rooms, counted from completed bookings alone."""
    taken = Counter((b.hotel_id, night) for b in completed for night in b.nights)
    return sum(max(0, n - capacity.get(hotel, DEFAULT_ROOMS)) for (hotel, _night), n in taken.items())


async def p99_latency_s(lab: Lab, lane: str, booking_ids: list[str]) -> float | None:
    """Accepted → finished, 99th percentile over the completed bookings given."""
    latencies = []
    for booking_id in booking_ids:
        status = await lab.status.get(lane, booking_id)
        if status and status.state is State.COMPLETED and status.published_at and status.updated_at:
            latencies.append(status.updated_at - status.published_at)
    if not latencies:
        return None
    latencies.sort()
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
