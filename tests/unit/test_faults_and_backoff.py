import random

import pytest

from labkit.faults import Faults, FaultSpecError, parse_assignments
from labkit.pipeline import backoff_s


def test_assignments_are_validated():
    assert parse_assignments(["payment.fail_rate=0.3", "seed=4", "pdf.latency_s=1"]) == {
        "payment.fail_rate": "0.3", "seed": "4", "pdf.latency_s": "1.0"}
    for bad in ["payment", "paymnt.fail_rate=0.1", "payment.fail_rate=2", "payment.fail_rate=x",
                "seed=abc", "email.latency_s=-1"]:
        with pytest.raises(FaultSpecError):
            parse_assignments([bad])


def test_rolls_are_seeded_per_booking_and_attempt():
    faults = Faults({"payment.fail_rate": "0.5", "seed": "1"})
    first = [faults.roll("payment", "fail_rate", f"bk-{i}", 1) for i in range(200)]
    again = [faults.roll("payment", "fail_rate", f"bk-{i}", 1) for i in range(200)]
    assert first == again
    assert 70 < sum(first) < 130  # about half
    other_seed = Faults({"payment.fail_rate": "0.5", "seed": "2"})
    assert first != [other_seed.roll("payment", "fail_rate", f"bk-{i}", 1) for i in range(200)]


def test_backoff_grows_and_is_capped():
    rng = random.Random(0)
    for _ in range(100):
        delays = [backoff_s(a, base_s=1, max_s=8, rng=rng) for a in range(1, 7)]
        assert 0.5 <= delays[0] <= 1 <= delays[1] <= 2 <= delays[2] <= 4
        assert all(4 <= d <= 8 for d in delays[3:])


def test_a_lesson_retry_policy_is_live_and_overrides_a_workers_own_settings():
    from labkit.faults import Faults, parse_assignments
    from labkit.settings import Settings

    mine = Settings().with_(max_attempts=4, backoff_base_s=1.0)  # a worker you left running
    assert parse_assignments(["retry.max_attempts=3", "retry.backoff_base_s=0.2"]) == {
        "retry.max_attempts": "3", "retry.backoff_base_s": "0.2"}
    policy = Faults({"retry.max_attempts": "3", "retry.backoff_base_s": "0.2"}).retry_policy(mine)
    assert (policy.max_attempts, policy.backoff_base_s, policy.backoff_max_s) == (3, 0.2, mine.backoff_max_s)
    assert Faults().retry_policy(mine).max_attempts == 4  # none set: the worker's own
    with pytest.raises(FaultSpecError):
        parse_assignments(["retry.max_attempts=0"])
