"""BullMQ concepts the lessons assert, on scratch queues of the test Redis."""

from __future__ import annotations

import pytest

from labkit.notebook import concepts_bullmq

pytestmark = [pytest.mark.redis, pytest.mark.bullmq]


async def test_waiting_jobs_go_before_prioritized_ones_then_by_priority(settings):
    run = await concepts_bullmq.priority_order(settings, plain=2)
    assert run["states_before"] == {"plain-0": "waiting", "plain-1": "waiting", "low": "prioritized", "high": "prioritized"}
    assert run["taken"] == ["plain-0", "plain-1", "high", "low"]


async def test_the_limiter_spreads_starts_over_windows(settings):
    run = await concepts_bullmq.rate_limited(settings, jobs=4, max_jobs=2, duration_ms=300)
    assert len(run.starts) == 4
    assert run.starts[-1] >= run.fastest_allowed_s() * 0.9
    assert max(run.per_window()) <= 2 or run.busiest(run.duration_s / 2) <= 2


async def test_a_delayed_job_waits_its_delay(settings):
    run = await concepts_bullmq.delayed_start(settings, delay_ms=300)
    assert run["state_after_add"] == "delayed"
    assert run["waited_ms"] >= 300


async def test_a_failed_job_keeps_its_reason_and_retry_completes_it(settings):
    run = await concepts_bullmq.failed_then_retried(settings)
    assert run == {"failed_count": 1, "failed_reason": "card declined", "runs": 2, "state_after_retry": "completed"}


async def test_queue_events_hear_every_progress_report(settings):
    run = await concepts_bullmq.progress_events(settings, steps=(10, 90))
    assert run["heard"] == [10, 90]


def test_rate_limit_arithmetic():
    run = concepts_bullmq.RateLimitRun(max_jobs=2, duration_s=1.0, starts=[0.0, 0.1, 1.0, 1.05, 2.2])
    assert run.per_window() == [2, 2, 1]
    assert run.busiest(0.5) == 2
    assert run.fastest_allowed_s() == 2.0
