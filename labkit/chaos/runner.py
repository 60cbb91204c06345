"""Run scenarios: open the lab with chaos-sized settings, start the workers, let the scenario
inject its fault, wait for every accepted booking to finish, then judge each lane."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from labkit.chaos.brokers import cluster
from labkit.chaos.judge import IN_FLIGHT, LaneVerdict, judge, p99_latency_s
from labkit.chaos.ledger import Ledger
from labkit.chaos.run import Run
from labkit.lab import Lab
from labkit.notebook.lessons import wait_for_workers
from labkit.settings import LANES, Settings
from labkit.workload import Workload

DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.25
WORKERS_READY_S = 60.0  # worker processes importing the lab on a busy 2-core machine


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    inject: Callable[[Run], Awaitable[None]]
    ci_bookings: int = 60  # per lane; `--bookings` raises it
    workers: int = 2
    concurrency: int = 2
    lanes: tuple[str, ...] = LANES  # the lanes it applies to
    full_workers: int | None = None  # workers per lane when `--bookings` raises the size
    kafka_brokers: int = 1  # 3: the scenario runs on its own three-broker cluster


@dataclass
class Outcome:
    scenario: str
    seconds: float
    verdicts: list[LaneVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return all(v.clean for v in self.verdicts)

    def as_dict(self) -> dict:
        return {"scenario": self.scenario, "seconds": round(self.seconds, 1), "clean": self.clean,
                "notes": self.notes, "lanes": [v.as_dict() for v in self.verdicts],
                "figures": self.figures}


def chaos_settings(base: Settings) -> Settings:
    """Fast bookings and short timeouts, so a CI-sized scenario takes seconds, not minutes."""
    return base.with_(time_scale=0.02, backoff_base_s=0.2, backoff_max_s=2.0, stale_after_s=2.0)


async def run_scenario(scenario: Scenario, *, base: Settings, ledger: Ledger,
                       lanes: Sequence[str] = LANES, bookings: int | None = None) -> Outcome:
    chosen = [lane for lane in lanes if lane in scenario.lanes]
    size = bookings or scenario.ci_bookings
    count = scenario.full_workers if scenario.full_workers and size > scenario.ci_bookings else scenario.workers
    started = time.monotonic()
    async with cluster(chaos_settings(base), scenario.kafka_brokers) as settings, Lab(settings) as lab, \
            lab.workers(chosen, count=count, concurrency=scenario.concurrency) as pools:
        run = Run(scenario.name, lab, ledger, chosen, size, pools,
                  workload=Workload(seed=len(scenario.name)))
        await run.stock()
        for lane in chosen:  # faults land on running workers, not on processes still starting
            await wait_for_workers(lab, lane, count, pids=pools[lane].pids, timeout_s=WORKERS_READY_S)
        await lab.faults.begin_lesson({})
        try:
            await scenario.inject(run)
        finally:
            await lab.faults.end_lesson()
        finished_at = await drain(run)
        outcome = Outcome(scenario.name, 0.0, notes=run.notes, figures=run.figures)
        for lane in chosen:
            verdict = await judge(lab, ledger, scenario.name, lane, explained_after=run.explained_after)
            if run.fault_ended_at is not None and finished_at is not None:
                verdict.recovery_s = round(max(0.0, finished_at - run.fault_ended_at), 2)
            ids = [a.booking_id for a in ledger.accepted(scenario.name, lane)]
            verdict.p99_latency_s = await p99_latency_s(lab, lane, ids)
            outcome.verdicts.append(verdict)
    outcome.seconds = time.monotonic() - started
    return outcome


async def drain(run: Run, timeout_s: float = DRAIN_TIMEOUT_S) -> float | None:
    """Wait until no accepted booking is in flight on any lane; the monotonic time it
    happened, or None when the timeout came first (the verdict then counts them in flight)."""
    with anyio.move_on_after(timeout_s):
        while True:
            if not await _any_in_flight(run):
                return time.monotonic()
            await anyio.sleep(POLL_S)
    return None


async def _any_in_flight(run: Run) -> bool:
    for lane in run.lanes:
        ids = [a.booking_id for a in run.ledger.accepted(run.scenario, lane)]
        states = await run.lab.status.many(lane, ids)
        if any(state in IN_FLIGHT for state in states.values()):
            return True
    return False


def ledger_path(out_dir: Path) -> Path:
    return out_dir / f"ledger-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"

