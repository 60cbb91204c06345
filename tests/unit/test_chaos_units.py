"""The chaos matrix's arithmetic, without brokers: the clean-baseline p99 ratio and its limit,
recovery per lane, the measured retry starts and their peak rate, and backoff without jitter."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

from labkit.chaos.judge import LaneVerdict
from labkit.chaos.runner import POLL_S, drain, judge_latency, recovery_s
from labkit.chaos.scenarios import SCENARIOS
from labkit.chaos.scenarios.traffic import peak_rate, retry_starts
from labkit.pipeline import backoff_s
from labkit.status import State


class _Statuses:
    """lab.status.get for bookings that completed `latency` seconds after publishing."""

    def __init__(self, latencies: dict[str, float]) -> None:
        self.latencies = latencies

    async def get(self, lane: str, booking_id: str):
        return SimpleNamespace(state=State.COMPLETED, published_at=100.0,
                               updated_at=100.0 + self.latencies[booking_id])


def _lab(latencies: dict[str, float]):
    return SimpleNamespace(status=_Statuses(latencies))


async def test_p99_beside_the_clean_baseline_and_their_ratio():
    lab = _lab({"c1": 1.0, "c2": 2.0, "p1": 3.0, "p2": 5.0})
    verdict = LaneVerdict("poison", "bullmq")
    await judge_latency(verdict, lab, ["c1", "c2", "p1", "p2"], baseline=["c1", "c2"], limit=None)
    assert (verdict.p99_clean_s, verdict.p99_latency_s, verdict.p99_vs_clean) == (2.0, 5.0, 2.5)
    assert verdict.clean  # no limit given (a CI-sized run): reported, not judged


async def test_a_full_size_run_over_the_limit_is_a_defect():
    lab = _lab({"c1": 1.0, "p1": 2.5})
    verdict = LaneVerdict("poison", "kafka")
    await judge_latency(verdict, lab, ["c1", "p1"], baseline=["c1"], limit=2.0)
    assert verdict.p99_over_limit and not verdict.clean
    within = LaneVerdict("poison", "kafka")
    await judge_latency(within, _lab({"c1": 1.0, "p1": 1.9}), ["c1", "p1"], baseline=["c1"], limit=2.0)
    assert within.clean and within.p99_vs_clean == 1.9


async def test_without_a_baseline_p99_covers_every_booking():
    verdict = LaneVerdict("worker-kill", "streams")
    await judge_latency(verdict, _lab({"a": 1.0, "b": 4.0}), ["a", "b"], baseline=[], limit=2.0)
    assert verdict.p99_latency_s == 4.0 and verdict.p99_clean_s is None and verdict.p99_vs_clean is None


def test_retry_starts_are_each_retry_attempts_first_entry():
    history = [
        {"state": "queued", "attempt": "", "at": "1.0"},
        {"state": "active", "attempt": "1", "at": "1.1"},
        {"state": "retrying", "attempt": "1", "at": "1.2", "detail": "boom; retry in 0.20s"},
        {"state": "active", "attempt": "2", "at": "1.5"},
        {"state": "active", "attempt": "2", "at": "1.6"},
        {"state": "retrying", "attempt": "2", "at": "1.7"},
        {"state": "active", "attempt": "3", "at": "2.2"},
        {"state": "completed", "attempt": "3", "at": "2.4"},
    ]
    assert retry_starts(history) == [1.5, 2.2]


def test_peak_rate_is_the_busiest_window():
    assert peak_rate([]) == 0
    assert peak_rate([0.0, 0.1, 0.2, 0.3, 5.0]) == 8.0  # 4 retries in half a second
    assert peak_rate([0.0, 1.0, 2.0]) == 2.0


def test_without_jitter_every_delay_is_the_full_ceiling():
    rng = random.Random(0)
    assert [backoff_s(a, base_s=0.2, max_s=2, rng=rng, jitter=False) for a in range(1, 6)] == \
        [0.2, 0.4, 0.8, 1.6, 2.0]


def test_the_matrix_compares_the_outage_with_and_without_jitter():
    assert SCENARIOS["payment-outage"].settings == {}
    assert SCENARIOS["payment-outage-no-jitter"].settings == {"backoff_jitter": False}
    assert SCENARIOS["poison"].p99_limit == 2.0


class _Draining:
    """lab.status.many for lanes that stay busy for a given number of looks, then finish."""

    def __init__(self, busy_looks: dict[str, int]) -> None:
        self.busy_looks = busy_looks

    async def many(self, lane: str, ids: list[str]):
        self.busy_looks[lane] -= 1
        state = State.ACTIVE if self.busy_looks[lane] >= 0 else State.COMPLETED
        return dict.fromkeys(ids, state)


async def test_recovery_is_measured_per_lane():
    ledger = SimpleNamespace(accepted=lambda scenario, lane: [SimpleNamespace(booking_id=f"{lane}-1")])
    run = SimpleNamespace(scenario="worker-kill", lanes=["bullmq", "kafka"], ledger=ledger,
                          lab=SimpleNamespace(status=_Draining({"bullmq": 0, "kafka": 2})))
    ended = time.monotonic()
    drained = await drain(run, timeout_s=10)
    fast, slow = (recovery_s(ended, drained[lane]) for lane in ("bullmq", "kafka"))
    assert fast < 0.2 and slow >= 2 * POLL_S - 0.05  # kafka needed two more looks
    assert recovery_s(None, drained["kafka"]) is None and recovery_s(ended, None) is None


async def test_a_lane_still_busy_at_the_timeout_has_no_recovery():
    ledger = SimpleNamespace(accepted=lambda scenario, lane: [SimpleNamespace(booking_id="b")])
    run = SimpleNamespace(scenario="s", lanes=["streams"], ledger=ledger,
                          lab=SimpleNamespace(status=_Draining({"streams": 10_000})))
    assert await drain(run, timeout_s=0.3) == {}
