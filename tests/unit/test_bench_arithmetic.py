"""The bench's arithmetic: histogram percentiles, latency from the intended send time, pacing."""

from __future__ import annotations

import inspect

import pytest

from labkit.bench.histogram import LatencyHistogram
from labkit.bench.layers import NoOpPipeline
from labkit.bench.pacing import intended_times, latency_from_intended, paced, stalled_service
from labkit.bench.scaling import non_decreasing_until
from labkit.bench.stats import Repeated, ratio
from labkit.pipeline import Pipeline


def test_percentiles_of_one_to_a_thousand_ms_are_within_the_precision():
    hist = LatencyHistogram().record_all(i / 1000 for i in range(1, 1001))
    for p, exact in ((50, 0.500), (99, 0.990), (99.9, 0.999)):
        assert exact <= hist.percentile(p) <= exact * 1.01
    assert hist.percentile(100) == hist.max_s == 1.0 and hist.count == 1000


def test_percentiles_are_ordered_and_never_above_the_max():
    hist = LatencyHistogram().record_all([0.002] * 990 + [0.5] * 9 + [3.0])
    summary = hist.summary()
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["p99.9_ms"] <= summary["max_ms"] == 3000
    assert hist.percentile(50) == pytest.approx(0.002, rel=0.01)
    assert hist.percentile(99.9) == pytest.approx(0.5, rel=0.01)


def test_merging_equals_recording_everything_in_one():
    values = [0.001 * (i % 37 + 1) for i in range(500)]
    merged = LatencyHistogram().record_all(values[:200]).merge(LatencyHistogram().record_all(values[200:]))
    whole = LatencyHistogram().record_all(values)
    assert [merged.percentile(p) for p in (1, 50, 90, 99)] == [whole.percentile(p) for p in (1, 50, 90, 99)]
    assert (merged.count, merged.max_s, merged.min_s) == (whole.count, whole.max_s, whole.min_s)


def test_histograms_of_different_precision_refuse_to_merge_and_empty_has_no_percentile():
    with pytest.raises(ValueError):
        LatencyHistogram(precision=0.01).merge(LatencyHistogram(precision=0.1))
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(50)


def test_the_schedule_is_evenly_spaced_at_the_rate():
    assert intended_times(100.0, 4, 5) == [100.0, 100.25, 100.5, 100.75, 101.0]
    with pytest.raises(ValueError):
        intended_times(0.0, 0, 3)


def test_latency_counts_from_the_intended_time_so_a_stall_is_not_omitted():
    # 10 msg/s; the system stalls 1 s at the third message and then answers instantly.
    schedule = intended_times(0.0, 10, 10)
    done = [0.01, 0.11, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.21]
    from_intended = LatencyHistogram().record_all(
        latency_from_intended(i, d) for i, d in zip(schedule, done, strict=True))
    assert from_intended.max_s == pytest.approx(1.0, rel=0.01)  # the third one waited 1 s
    # 8 of 10 messages should have gone out during or before the stall: the median shows it.
    assert from_intended.percentile(50) > 0.5
    assert latency_from_intended(5.0, 4.0) == 0.0  # a clock step never gives a negative latency


async def test_pacing_sleeps_until_each_intended_time_and_catches_up_without_sleeping():
    now = [0.0]
    slept = []

    async def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    sent = []
    async for index, intended_at in paced(intended_times(0.0, 2, 4), clock=lambda: now[0], sleep=sleep):
        sent.append((index, intended_at, now[0]))
        if index == 1:
            now[0] += 1.2  # this send took long: messages 2 and 3 are already due
    assert [s[:2] for s in sent] == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5)]
    assert slept == [0.5]  # only before message 1; then it is behind schedule and catches up
    assert all(at >= intended for _i, intended, at in sent)


def test_repeated_runs_report_median_and_spread_and_ratios_of_medians():
    runs = Repeated((90.0, 100.0, 120.0))
    assert runs.median == 100.0 and runs.spread == pytest.approx(0.3)
    assert ratio(Repeated((45.0, 50.0, 55.0)), runs) == 0.5
    assert ratio(None, runs) is None and ratio(runs, Repeated((0.0, 0.0, 0.0))) is None
    assert runs.as_dict()["median"] == 100.0


def test_a_closed_loop_client_records_one_slow_sample_for_a_stall_the_open_loop_sees_whole():
    closed, open_loop = stalled_service(100, 10.0, service_s=0.001, stall_at_s=5.0, stall_s=1.0)
    closed_hist, open_hist = LatencyHistogram().record_all(closed), LatencyHistogram().record_all(open_loop)
    assert sum(1 for c in closed if c > 0.5) == 1  # the stall, as one sample
    assert sum(1 for o in open_loop if o > 0.5) == 51  # those due at 5.00 … 5.50 s waited > 0.5 s
    assert closed_hist.percentile(99) < 0.01
    assert open_hist.percentile(99) > 0.5
    assert open_hist.max_s == pytest.approx(1.001, rel=0.01) == closed_hist.max_s


def test_the_scaling_check_judges_points_up_to_the_cores_only():
    curve = [{"workers": w, "per_s": r} for w, r in ((1, 8.0), (2, 15.5), (4, 12.0), (8, 6.0))]
    assert non_decreasing_until(curve, cores=2)
    assert not non_decreasing_until(curve, cores=4)  # 4 workers moved fewer than 2
    assert non_decreasing_until([{"workers": 2, "per_s": 7.5}, {"workers": 1, "per_s": 8.0}], cores=2)  # within 10 %


def test_the_transport_layers_no_op_pipeline_takes_what_the_worker_passes():
    """It raised on a new argument once: every transport booking was retried into the DLQ,
    and the bench counted the dead letters as finished messages."""
    assert inspect.signature(NoOpPipeline.run).parameters.keys() == inspect.signature(Pipeline.run).parameters.keys()
