"""Faults live in Redis: a lesson sets only its own and gives the learner's back, even after an
earlier run of a lesson was interrupted halfway."""

from __future__ import annotations

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
