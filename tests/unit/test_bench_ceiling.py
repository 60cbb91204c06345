"""Reading the brokers' own load tools: the lines they print, as captured from real runs."""

from __future__ import annotations

import pytest

from labkit.bench.ceiling import (
    Ceiling,
    parse_consumer_performance,
    parse_producer_performance,
    parse_redis_benchmark_csv,
)

PRODUCER = """\
8980 records sent, 1771.6 records/sec (0.34 MB/sec), 324.7 ms avg latency, 3495.0 ms max latency.
20000 records sent, 3438.2 records/sec (0.66 MB/sec), 454.72 ms avg latency, 3495.00 ms max latency, \
478 ms 50th, 738 ms 95th, 774 ms 99th, 802 ms 99.9th.
"""
CONSUMER = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, \
fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-28 06:14:23:095, 2026-11-28 06:14:26:462, 3.8147, 1.1330, 20000, 5940.0059, 2097, 1270, 3.0037, 15748.0315
"""


def test_redis_benchmark_csv_with_and_without_its_header_row():
    with_header = '"test","rps","avg_latency_ms"\n"XADD bench * f v","72992.70","0.615"\n'
    assert parse_redis_benchmark_csv(with_header) == 72992.70
    assert parse_redis_benchmark_csv('"XADD bench * f v","1234.5"\n') == 1234.5


def test_producer_performance_reads_the_final_summary_not_a_progress_line():
    assert parse_producer_performance(PRODUCER) == 3438.2
    with pytest.raises(ValueError):
        parse_producer_performance("WARN something went wrong\n")


def test_consumer_performance_prefers_the_fetch_rate_which_leaves_out_the_group_join():
    assert parse_consumer_performance(CONSUMER) == 15748.0315


def test_the_ceiling_of_a_lane_is_its_slower_side():
    assert Ceiling("t", 3000.0, 15000.0).per_s == 3000.0
    assert Ceiling("t", None, None, "not run").as_dict()["per_s"] is None
