"""`labkit bench` end to end on the real brokers, at the smallest size: every layer of a
lane measured, nothing lost, percentiles ordered, JSON and HTML written. No timing asserted."""

from __future__ import annotations

import json

import pytest

from labkit.bench import report
from labkit.bench.layers import PIPELINE, RAW, TRANSPORT
from labkit.bench.runner import BenchConfig, run

pytestmark = [pytest.mark.redis, pytest.mark.streams, pytest.mark.bullmq, pytest.mark.slow]


async def test_a_tiny_bench_of_the_redis_lanes_measures_every_layer_and_writes_its_report(settings, tmp_path):
    config = BenchConfig.quick(lanes=("bullmq", "streams"), count=40, warmup=10, latency_count=10,
                               ceiling_count=1000, scaling_workers=(1, 2), scaling_lanes=("streams",),
                               scaling_bookings=4)
    results = await run(settings, config)
    for lane in ("bullmq", "streams"):
        r = results["lanes"][lane]
        assert set(r["layers"]) == {RAW, TRANSPORT, PIPELINE}
        assert r["ceiling"]["produce_per_s"] > 0 and r["ceiling"]["consume_per_s"] > 0
        for m in r["layers"].values():
            assert len(m["throughput"]["runs"]) == 3 and all(x > 0 for x in m["throughput"]["runs"])
            lat = m["latency"]
            assert lat["count"] == 10 and lat["p50_ms"] <= lat["p99_ms"] <= lat["p99.9_ms"] <= lat["max_ms"]
        assert all(v is not None and v > 0 for v in r["ratios"].values()), r["ratios"]
    assert [p["workers"] for p in results["lanes"]["streams"]["scaling"]] == [1, 2]
    assert results["lanes"]["bullmq"]["scaling"] == []
    assert results["machine"]["cores"] >= 1 and results["machine"]["redis"]
    json_path, html_path = report.write(results, tmp_path)
    assert json.loads(json_path.read_text())["lanes"].keys() == {"bullmq", "streams"}
    assert "plotly" in html_path.read_text()
