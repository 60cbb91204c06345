from prometheus_client.parser import text_string_to_metric_families

from labkit.metrics import BUCKETS_S, LaneMetrics, prometheus_text


def lane(latencies):
    buckets = {b: sum(1 for x in latencies if x <= b) for b in BUCKETS_S}
    return LaneMetrics("kafka", {"completed": len(latencies)}, buckets, sum(latencies), len(latencies))


def test_quantiles_interpolate_inside_buckets():
    m = lane([0.2] * 50 + [3.0] * 50)
    assert 0.1 < m.quantile(0.5) <= 0.25
    assert 2.5 < m.quantile(0.99) <= 5
    assert lane([]).quantile(0.5) is None


def test_prometheus_text_has_per_lane_counters_and_histograms():
    text = prometheus_text({"kafka": lane([0.2, 0.3]), "streams": lane([1.0])}).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    completed = {s.labels["lane"]: s.value for s in families["labkit_bookings_completed"].samples
                 if s.name.endswith("_total")}
    assert completed == {"kafka": 2, "streams": 1}
    counts = [s for s in families["labkit_booking_latency_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["lane"]: s.value for s in counts} == {"kafka": 2, "streams": 1}
