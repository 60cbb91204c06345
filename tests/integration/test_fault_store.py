"""Faults live in Redis: a lesson sets only its own and gives the learner's back, even after an
earlier run of a lesson was interrupted halfway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from labkit.faults import FaultStore

pytestmark = pytest.mark.redis


async def test_a_lesson_sets_only_its_faults_and_gives_yours_back(lab):
    faults = FaultStore(lab.redis)
    await faults.set(["payment.fail_rate=0.5", "seed=9"])

    await faults.begin_lesson(["poison=bk-1"])
    assert await faults.show() == {"poison": "bk-1"}
    assert await faults.end_lesson() == {"payment.fail_rate": "0.5", "seed": "9"}
    assert await faults.show() == {"payment.fail_rate": "0.5", "seed": "9"}


async def test_an_interrupted_lesson_leaves_nothing_it_set(lab):
    faults = FaultStore(lab.redis)
    await faults.set(["email.latency_s=2"])
    await faults.begin_lesson(["poison=bk-1", "payment.fail_rate=0.3"])  # the kernel dies here

    await faults.begin_lesson(["pdf.latency_s=1"])  # the lesson, run again
    assert await faults.show() == {"pdf.latency_s": "1.0"}
    await faults.end_lesson()
    assert await faults.show() == {"email.latency_s": "2.0"}  # the poison is gone, yours is back


async def test_ending_a_lesson_without_faults_of_your_own_clears_all(lab):
    faults = FaultStore(lab.redis)
    await faults.begin_lesson(["poison=bk-1"])
    assert await faults.end_lesson() == {}
    assert await faults.show() == {}


async def test_clearing_everything_means_no_faults_come_back_after_a_lesson(lab):
    faults = FaultStore(lab.redis)
    await faults.set(["email.latency_s=2"])
    await faults.begin_lesson(["poison=bk-1"])  # interrupted; then you clear by hand
    await faults.clear(set_aside_too=True)

    await faults.begin_lesson(["pdf.latency_s=1"])
    assert await faults.end_lesson() == {}
    assert await faults.show() == {}


async def test_the_cli_sets_shows_and_clears_faults(lab):
    def labkit(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "labkit", "faults", *args], capture_output=True,
                              text=True, timeout=60, check=False,
                              env={**os.environ, **lab.settings.env()})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    await FaultStore(lab.redis).begin_lesson(["poison=bk-1"])  # a lesson left something aside
    await asyncio.to_thread(labkit, "set", "payment.fail_rate=0.3", "seed=4")
    assert await FaultStore(lab.redis).show() == {"poison": "bk-1", "payment.fail_rate": "0.3", "seed": "4"}
    assert "0.3" in await asyncio.to_thread(labkit, "show")
    await asyncio.to_thread(labkit, "clear")
    assert await FaultStore(lab.redis).show() == {}
    assert await FaultStore(lab.redis).end_lesson() == {}  # nothing set aside comes back
