"""Run scenarios: open the lab with chaos-sized settings, start the workers, let the scenario
inject its fault, wait for every accepted booking to finish, then judge each lane."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # p99 under the fault may be at most this many times the clean baseline's (the scenario
    # runs one: Run.baseline_ids). Judged on full-size runs only: at CI size a p99 is a few
    # bookings' worth of noise, and a timed check is no test.
    p99_limit: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # on top of chaos_settings()
    measure: Callable[[Run], Awaitable[None]] | None = None  # figures read once every lane drained


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
    async with cluster(chaos_settings(base).with_(**scenario.settings), scenario.kafka_brokers) as settings, Lab(settings) as lab, \
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
        drained_at = await drain(run)
        if scenario.measure is not None:
            await scenario.measure(run)
        outcome = Outcome(scenario.name, 0.0, notes=run.notes, figures=run.figures)
        for lane in chosen:
            verdict = await judge(lab, ledger, scenario.name, lane, explained_after=run.explained_after)
            verdict.recovery_s = recovery_s(run.fault_ended_at, drained_at.get(lane))
            ids = [a.booking_id for a in ledger.accepted(scenario.name, lane)]
            await judge_latency(verdict, lab, ids, baseline=run.baseline_ids,
                           limit=scenario.p99_limit if size > scenario.ci_bookings else None)
            outcome.verdicts.append(verdict)
    outcome.seconds = time.monotonic() - started
    return outcome


async def judge_latency(verdict: LaneVerdict, lab: Lab, ids: list[str], *, baseline: list[str],
                   limit: float | None) -> None:
    """p99 of the lane's bookings; with a baseline, of those outside it, beside the baseline's
    own p99 and the ratio of the two, judged against `limit` when one is given."""
    clean = set(baseline)
    verdict.p99_latency_s = await p99_latency_s(lab, verdict.lane, [i for i in ids if i not in clean])
    if not baseline:
        return
    verdict.p99_clean_s = await p99_latency_s(lab, verdict.lane, [i for i in ids if i in clean])
    if verdict.p99_clean_s and verdict.p99_latency_s is not None:
        verdict.p99_vs_clean = round(verdict.p99_latency_s / verdict.p99_clean_s, 2)
    if limit is not None and verdict.p99_vs_clean is not None and verdict.p99_vs_clean > limit:
        verdict.p99_over_limit = True
        verdict.notes.append(f"p99 {verdict.p99_vs_clean:.2f}× the clean run's (limit {limit:g}×)")


async def drain(run: Run, timeout_s: float = DRAIN_TIMEOUT_S) -> dict[str, float]:
    """Wait until no accepted booking is in flight on any lane. Returns, per lane, the monotonic
    time its last accepted booking finished (first seen with none in flight; nothing new is
    accepted once the fault is over); a lane still busy at the timeout is missing (its verdict
    then counts them in flight)."""
    drained: dict[str, float] = {}
    with anyio.move_on_after(timeout_s):
        while len(drained) < len(run.lanes):
            for lane in run.lanes:
                if lane not in drained and not await _in_flight(run, lane):
                    drained[lane] = time.monotonic()
            if len(drained) < len(run.lanes):
                await anyio.sleep(POLL_S)
    return drained


def recovery_s(fault_ended_at: float | None, drained_at: float | None) -> float | None:
    """Fault end → the lane's lag back to 0 (every booking it accepted finished); None when
    the scenario has no fault end or the lane never drained."""
    if fault_ended_at is None or drained_at is None:
        return None
    return round(max(0.0, drained_at - fault_ended_at), 2)


async def _in_flight(run: Run, lane: str) -> bool:
    ids = [a.booking_id for a in run.ledger.accepted(run.scenario, lane)]
    states = await run.lab.status.many(lane, ids)
    return any(state in IN_FLIGHT for state in states.values())


def ledger_path(out_dir: Path) -> Path:
    return out_dir / f"ledger-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"

