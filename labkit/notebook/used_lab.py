"""Make the lab messy the way a learner does, so the lesson suite proves it stands on it.

    python -m labkit.notebook.used_lab          # before the notebooks (≤ 60 s)
    python -m labkit.notebook.used_lab --stop   # after them: stop the workers it left running

What it leaves behind, on the brokers LABKIT_* name:
- thousands of bookings published by `labkit publish --backend all` with payment.fail_rate=0.2,
  half-processed by workers that were then killed -9 mid-flight;
- a poison booking in each lane (dead-lettered: it failed every attempt);
- a lesson's faults left set (`begin_lesson` without `end_lesson`): a slow PDF step;
- detached `labkit worker` processes still running (one per lane), their pids in
  LABKIT_HOME/used-lab-workers.json;
- a backlog of BACKLOG bookings per lane, queued.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio

from labkit import processes
from labkit.lab import Lab
from labkit.notebook.backlog import BACKLOG_LEFT, backlog
from labkit.settings import LANES, Settings
from labkit.workload import Workload

PIDS_FILE = "used-lab-workers.json"
# Sized so the whole mess takes under a minute and the first lesson's drain (backlog.drain)
# a few seconds: thousands of bookings in history, a few hundred still queued per lane.
BACKLOG = 300
PUBLISH_ROUNDS = 2
PUBLISH_COUNT = 500
WORKED_OFF_S = 40.0  # how long the learner's workers get before some are killed mid-flight
MESSY_SETTINGS = {"time_scale": 0.001, "backoff_base_s": 0.05, "max_attempts": 3}
LEFT_OVER_LESSON_FAULTS = ["pdf.latency_s=2.0"]
LEARNER_FAULTS = ["payment.fail_rate=0.2"]
LEFT_RUNNING_TIME_SCALE = "0.02"


def labkit_cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "labkit", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)


async def publish_with_faults(lab: Lab, env: dict[str, str]) -> str:
    """A poison booking, then `labkit publish --backend all --count 500` a few times, while
    workers run; once most of it is processed, kill -9 one worker of each lane mid-flight (locks held, entries pending,
    offsets uncommitted). Returns the poison's id: it fails every attempt, so it ends
    dead-lettered (or is still queued, behind what an earlier mess left)."""
    poison = Workload(seed=99).bookings(1)[0]
    await lab.faults.set([*LEARNER_FAULTS, f"poison={poison.bookingId}"])
    async with lab.workers(count=2, concurrency=8) as workers:
        await lab.publish([poison])
        for round_ in range(PUBLISH_ROUNDS):
            await asyncio.to_thread(labkit_cli, "publish", "--backend", "all", "--count",
                                    str(PUBLISH_COUNT), "--seed", str(round_), env=env)
        with anyio.move_on_after(WORKED_OFF_S):  # most of it processed, as a learner's would be
            while any(n > BACKLOG_LEFT for n in (await backlog(lab)).values()):
                await anyio.sleep(1.0)
        for lane in LANES:
            await workers[lane].kill_async()
    return poison.bookingId


def leave_workers_running(settings: Settings) -> list[int]:
    """One detached worker per lane, as a learner's forgotten terminal tab, at a lesson's
    time scale. (A real-time Kafka worker would own partitions and hold each of their records
    12 s: no lesson can take those partitions from it.)"""
    env = {**os.environ, **settings.env(), "LABKIT_TIME_SCALE": LEFT_RUNNING_TIME_SCALE}
    pids = []
    for lane in LANES:
        child = processes.spawn([sys.executable, "-m", "labkit", "worker", "--backend", lane],
                                log_path=settings.home / "logs" / f"used-lab-{lane}.log", env=env)
        pids.append(child.pid)
    pids_path(settings).write_text(json.dumps(pids))
    return pids


def pids_path(settings: Settings) -> Path:
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.home / PIDS_FILE


async def make_messy(settings: Settings, *, leave_running: bool = True) -> dict[str, object]:
    messy = settings.with_(**MESSY_SETTINGS)
    env = {**os.environ, **messy.env()}
    async with Lab(messy) as lab:
        poison = await publish_with_faults(lab, env)
        await lab.faults.begin_lesson(LEFT_OVER_LESSON_FAULTS)  # ...and never end_lesson
        workers = leave_workers_running(settings) if leave_running else []
        await lab.publish(Workload(seed=7).bookings(BACKLOG))
        return {"poison": {lane: str(s[poison]) for lane, s in (await lab.states([poison])).items()},
                "workers_left_running": workers,
                "backlog": {lane: s.waiting for lane, s in (await lab.stats()).items()}}


def stop_left_workers(settings: Settings) -> list[int]:
    """SIGTERM (then SIGKILL) the workers `make_messy` left, if still ours and alive."""
    path = settings.home / PIDS_FILE
    if not path.exists():
        return []
    pids = [p for p in json.loads(path.read_text()) if "worker" in processes.argv(p)]
    processes.terminate(pids, timeout_s=10)
    path.unlink()
    return pids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop the workers a run left behind")
    parser.add_argument("--no-running-workers", action="store_true",
                        help="leave no worker running (lesson 05's backoff checks cannot yet tell a "
                             "left-over worker's retries, with its own settings, from the lesson's)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.stop:
        print(json.dumps({"stopped": stop_left_workers(settings)}))
    else:
        print(json.dumps(asyncio.run(make_messy(settings, leave_running=not args.no_running_workers))))


if __name__ == "__main__":
    main()
