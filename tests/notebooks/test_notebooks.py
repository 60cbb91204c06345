"""Every lesson notebook, executed with papermill and CI parameters on the test brokers;
each notebook's last cell prints `RESULTS {json}`, asserted here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.kafka]

from labkit.notebook import runner

ROOT = Path(__file__).resolve().parents[2]

LANES = ("bullmq", "streams", "kafka")


def check_00(r):
    assert r["redis_ok"] and all(r["completed"][lane] == r["bookings"] for lane in LANES)


def check_01(r):
    assert {"wait", "meta", "events"} <= set(r["queue_keys"]), r["queue_keys"]
    assert r["job_hash_has_data"] and r["partition_predicted"]
    assert r["job_states"] == {"delayed job": "delayed", "priority job": "prioritized"}
    assert r["trimmed_len"] == 5 and r["stream_entries"] > 0
    assert r["priority_taken"] == ["plain-0", "plain-1", "plain-2", "high", "low"]  # wait before prioritized
    assert sum(r["rate_limit"]) == 6 and r["delayed_waited_ms"] >= 1500
    assert r["failed_retry"]["state_after_retry"] == "completed"
    assert r["progress_heard"] == [25, 50, 75, 100]


def check_02(r):
    assert r["checkpoints_in_order"] and r["one_charge_each"]
    assert len(set(r["completed"].values())) == 1 and all(n > 0 for n in r["completed"].values()), r["completed"]


def check_03(r):
    assert r["streams_consumers_used"] >= 2 and r["audit_got_all"]
    assert r["stream_lag"] == 6 and {p["times_delivered"] for p in r["autoclaim"]} == {2}
    assert r["at_most_once_lost"] == ["booking-0"] and r["fan_out"] == {"billing": 6, "audit": 6}
    never_stopped = r["rebalance_never_stopped"]
    assert never_stopped["eager"] == [] and len(never_stopped["cooperative"]) == 3, never_stopped


def check_04(r):
    assert r["kafka_members"] == 8 + r["other_kafka_workers"]  # workers a learner left join too
    assert r["idle_consumers"] == r["kafka_members"] - 6
    assert r["streams_workers_before"] == 1 and r["streams_workers_seen"] == 3  # the slider scaled 1 → 3
    assert r["streams_workers_after_scale"] >= 2 and r["new_workers_took_work"]
    assert r["completed"] > 0 and r["bullmq_peak_active"]["4"] > 1  # concurrency inside one process


def check_05(r):
    assert all(r["dead_lettered"][lane] >= 1 for lane in LANES)  # the poison booking
    assert r["letters"] == r["dead_lettered"] and r["redriven_completed"]
    assert r["compensated"]  # no confirmation and a net charge of 0 for each one not completed
    assert r["backoff_rows"] > 0 and r["backoff_grows"]
    assert all(n > 0 for n in r["payment_retried"].values()), r  # not just the poison booking
    assert r["payment_failures_before_change"] == 0  # the slider's change is what made them fail


def check_06(r):
    assert all(n >= 2 for n in r["off"].values()) and all(n == 1 for n in r["on"].values())
    assert all(0 < s < 30 for s in r["recovered_after_s"].values())
    # only Streams counts the redelivery after a crash as a new attempt (XCLAIM's delivery count)
    expected = {"bullmq": 1, "streams": 2, "kafka": 1}
    assert r["attempts"] == {"off": expected, "on": expected}, r["attempts"]


def check_07(r):
    assert r["kafka_hotels_in_order"] == r["kafka_hotels"] > 1
    assert r["replayed_from_time"] == r["stream_replay"] == 18
    assert r["retry_overtaken_by"] >= 1  # a later booking of the hotel completed before the retried one
    assert r["retention_log_start"] > 0 and r["minid_removed"] == 5
    assert sum(r["skew_per_partition"]) == 300 and r["skew_max_over_mean"] > 1.5
    assert r["idempotent_producer_id"] >= 0 and r["eos_read_committed"] == 1
    assert (r["emails_without_key"], r["emails_with_key"]) == (2, 1)


def check_08(r):
    assert r["latency_counts"] == [10] and all(len(v) == 3 for v in r["layers"].values())
    assert r["percentiles_ordered"] and all(len(points) == 2 for points in r["scaling_points"].values()), r


def check_09(r):
    assert all(r["added"][lane]["published"] >= 15 for lane in LANES)
    assert all(r["added"][lane]["retried"] > 0 for lane in LANES), r["added"]  # CI runs with a fail rate
    assert r["api_status"] == {"health": 200, "queues": 200, "metrics": 200}
    assert all(r["api_counters"][lane]["published"] >= r["added"][lane]["published"] for lane in LANES)


def check_10(r):
    assert r["acks"]["acks=1"] == "acknowledged" and r["acks"]["acks=all"] != "acknowledged", r["acks"]
    assert r["redis"]["always"]["lost"] == 0 and r["redis"]["none"]["lost"] == r["redis"]["none"]["acknowledged"]


def check_11(r):
    assert r["rows_filled"] == 8 and r["readable"]["kafka"] == r["readable"]["streams"] > 0
    assert all(n == r["settled"]["kafka"] for n in r["settled"].values()), r["settled"]


def check_12(r):
    assert r["streams_workers_after"] >= 2 and r["payment_retries_after_move"] > 0 == r["payment_retries_before_move"]
    assert set(r["poison_dead_lettered"].values()) == {1} and r["controls_disabled"] and r["faults_restored"]


def worker_logs_since(settings, since: float, lines: int = 40) -> str:
    """The tails of the worker logs a failed lesson wrote: what its workers were doing."""
    logs = sorted(p for p in (settings.home / "logs").glob("worker-*.log") if p.stat().st_mtime >= since)
    return "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                     for p in logs)


CHECKS = {name.removeprefix("check_"): fn for name, fn in globals().items() if name.startswith("check_")}
NOTEBOOKS = runner.lesson_notebooks()


def test_every_lesson_has_a_check():
    lessons = {p.stem[:2] for p in NOTEBOOKS}
    assert lessons <= set(CHECKS), lessons - set(CHECKS)


@pytest.mark.timeout(1200)  # a lesson may take minutes; a stuck cell fails sooner (CELL_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(path, tmp_path, capsys, settings):
    started = time.monotonic()
    try:
        executed = runner.execute(path, tmp_path)
    except Exception:
        print(worker_logs_since(settings, time.time() - (time.monotonic() - started)))
        raise
    results = runner.results(executed)
    with capsys.disabled():
        print(f"\n{path.stem}: {time.monotonic() - started:.1f}s")
    check = CHECKS.get(path.stem[:2])
    if check is not None:
        check(results)
