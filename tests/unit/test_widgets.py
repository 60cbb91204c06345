"""The notebook views as pure logic: feed snapshots and events, read the figure data back."""

from __future__ import annotations

import asyncio

import plotly.graph_objects as go
import pytest

from labkit import kafka_admin
from labkit.backends.base import LaneStats
from labkit.notebook import charts, lessons, widgets
from labkit.status import BookingStatus, State


def stats(lane: str, *, completed=0, lag=0, retrying=0, workers=1, dlq=0) -> LaneStats:
    return LaneStats(lane=lane, completed=completed, lag=lag, retrying=retrying, workers=workers, dlq_size=dlq)


def status(lane: str, booking_id: str, history: list[tuple[float, str, str]], attempts: int = 1) -> BookingStatus:
    entries = [{"state": state, "progress": "", "attempt": "1", "at": str(at), "detail": detail}
               for at, state, detail in history]
    return BookingStatus(lane=lane, booking_id=booking_id, state=State.COMPLETED, attempts=attempts, history=entries)


def test_throughput_chart_turns_counts_into_rates_and_lag():
    chart = charts.ThroughputChart(["bullmq", "kafka"])
    chart.update(0.0, {"bullmq": stats("bullmq"), "kafka": stats("kafka", lag=10)})
    chart.update(2.0, {"bullmq": stats("bullmq", completed=8), "kafka": stats("kafka", completed=2, lag=4, retrying=1)})
    assert chart.rate == {"bullmq": [0.0, 4.0], "kafka": [0.0, 1.0]}
    assert chart.lag["kafka"] == [10, 4]  # the technology's own lag, retries not added
    rate_trace = next(t for t in chart.figure.data if t.name == "bullmq" and t.meta == "rate")
    assert list(rate_trace.y) == [0.0, 4.0] and list(rate_trace.x) == [0.0, 2.0]
    assert chart.peak_rate("bullmq") == 4.0


def test_figures_are_live_widgets_when_anywidget_is_there():
    pytest.importorskip("anywidget")
    assert isinstance(charts.ThroughputChart().figure, go.FigureWidget)


def test_lane_board_shows_each_lane_column():
    board = widgets.LaneBoard(["streams", "kafka"])
    board.update(1.0, {"streams": stats("streams", completed=7, dlq=2), "kafka": stats("kafka", lag=None, workers=3)})
    assert board.values["streams"]["lab: completed"] == 7 and board.values["streams"]["DLQ"] == 2
    assert board.values["kafka"]["lag"] == "—" and board.values["kafka"]["workers"] == 3
    assert "streams" in board.widget.value and ">7<" in board.widget.value
    assert board.values["streams"]["completed"] == "—"  # no run bookings known yet


def test_lane_board_counts_only_this_runs_bookings():
    board = widgets.LaneBoard(["streams"])
    board.update(1.0, {"streams": stats("streams", completed=368)})
    board.count_run({"streams": {"b1": State.COMPLETED, "b2": State.ACTIVE, "b3": None, "b4": State.QUEUED}})
    assert board.values["streams"]["completed"] == 1 and board.values["streams"]["in flight"] == 2
    assert board.values["streams"]["lab: completed"] == 368


def test_progress_bars_follow_status_events():
    bars = widgets.ProgressBars(["bk-1", "bk-2"], ["bullmq", "kafka"])
    bars.feed({"lane": "kafka", "bookingId": "bk-1", "state": "active", "progress": "50"})
    bars.feed({"lane": "kafka", "bookingId": "bk-1", "state": "active", "progress": ""})  # a step note
    bars.feed({"lane": "bullmq", "bookingId": "bk-2", "state": "dead-lettered", "progress": ""})
    bars.feed({"lane": "kafka", "bookingId": "unknown", "state": "active", "progress": "20"})
    assert bars.bars[("kafka", "bk-1")].value == 50
    assert bars.bars[("bullmq", "bk-2")].bar_style == "danger"
    assert "dead-lettered" in bars.static().data


def test_step_timeline_draws_one_bar_per_step():
    history = [(100.0, "queued", "published"), (101.0, "active", "started"), (101.0, "active", "validate started"),
               (102.0, "active", "payment started"), (104.0, "active", "payment done"),
               (104.5, "active", "pdf started"), (106.0, "completed", "")]
    timeline = charts.StepTimeline()
    timeline.update([status("kafka", "bk-00001", history), None])
    steps = {s["step"]: (s["start"], s["duration"]) for s in timeline.segments}
    assert steps == {"validate": (1.0, 1.0), "payment": (2.0, 2.5), "pdf": (4.5, 1.5)}
    payment = next(t for t in timeline.figure.data if t.name == "payment")
    assert list(payment.x) == [2.5] and list(payment.base) == [2.0]


def test_backoff_timeline_shows_growing_gaps_of_retried_bookings():
    history = [(0.0, "active", "started"), (0.1, "retrying", "payment failed; retry in 0.2s"),
               (0.4, "active", "started"), (0.5, "retrying", "payment failed; retry in 0.4s"),
               (1.1, "active", "started"), (1.3, "completed", "")]
    timeline = charts.BackoffTimeline()
    timeline.update([status("streams", "bk-00007", history, attempts=3),
                     status("streams", "bk-00008", history[:1], attempts=1)])
    assert list(timeline.attempts) == ["streams 00007"]  # bookings tried once are left out
    assert timeline.gaps("streams 00007") == [0.4, 0.7]
    assert list(timeline.figure.data[1].x) == [0.1, 0.5]
    assert timeline.scheduled("streams 00007") == [0.2, 0.4]  # from "retry in ..." notes
    assert [r["waited_s"] for r in timeline.retries["streams 00007"]] == [0.3, 0.6]
    assert timeline.scheduled("streams 00008") == []


def test_retry_waits_pair_each_failure_with_the_next_start():
    history = [{"state": "active", "at": "10.0", "detail": "started"},
               {"state": "retrying", "at": "10.5", "detail": "TransientError: x; retry in 1.25s"},
               {"state": "active", "at": "11.8", "detail": "started"},
               {"state": "retrying", "at": "12.0", "detail": "TransientError: x; retry in 2.50s"}]
    assert charts.retry_waits(history) == [
        {"failed_at": 10.5, "scheduled_s": 1.25, "waited_s": 1.3},
        {"failed_at": 12.0, "scheduled_s": 2.5, "waited_s": None},  # not retried yet
    ]


def test_partition_table_and_idle_consumers():
    table = charts.PartitionTable()
    rows = [{"partition": p, "consumer": f"pid {100 + p % 3}", "committed": 1, "end": 3, "lag": 2} for p in range(6)]
    table.update(rows)
    assert list(table.figure.data[0].cells.values[1]) == [r["consumer"] for r in rows]
    assert table.idle_consumers(["pid 100", "pid 101", "pid 102", "pid 103"]) == ["pid 103"]


def test_static_bundle_carries_plotly_json_and_html():
    bundle = widgets.static_bundle(charts.ThroughputChart(["bullmq"]).figure)
    assert "Plotly.newPlot" in bundle["text/html"]
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["name"] == "bullmq"


class RecordingFaults:
    """A fault store that records what the sliders write."""

    def __init__(self):
        self.values = []

    async def set(self, assignments):
        self.values.append(assignments)


def test_failure_slider_writes_the_fault():

    async def move():
        faults = RecordingFaults()
        slider = widgets.failure_slider(faults)
        slider.value = 0.3
        await asyncio.gather(*slider.tasks)
        return faults.values

    assert asyncio.run(move()) == [["payment.fail_rate=0.3"]]


def test_workers_slider_scales_the_pool():
    class Pool:
        lane, size, scaled = "streams", 1, []

        def scale(self, n):
            self.scaled.append(n)

    pool = Pool()
    widgets.workers_slider(pool).value = 3
    assert pool.scaled == [3]


def test_workers_slider_disables_itself_once_its_pool_stopped():
    from labkit.settings import Settings
    from labkit.workers import WorkerPool

    pool = WorkerPool("streams", settings=Settings())
    pool.close()  # what leaving `async with lab.workers(...)` does
    slider = widgets.workers_slider(pool)
    slider.value = 2
    assert slider.disabled and pool.pids == []


def test_kafka_partition_for_matches_the_java_client():
    # murmur2 of the key, positive, mod the partition count (values from Kafka's own partitioner)
    assert kafka_admin.partition_for("hotel-001", 6) == (4966700 & 0x7FFFFFFF) % 6
    assert {kafka_admin.partition_for(f"hotel-{i:03d}") for i in range(40)} == set(range(6))


def test_consumer_label_shows_the_pid():
    assert kafka_admin.consumer_label("vm-12908-7b0ef5") == "pid 12908"
    assert kafka_admin.consumer_label("kafka-python-1") == "kafka-python-1"


def test_offset_order_check_per_hotel():
    class B:
        def __init__(self, i, hotel):
            self.bookingId, self.hotelId = f"bk-{i}", hotel

    bookings = [B(0, "h1"), B(1, "h1"), B(2, "h2")]
    ids = ["bookings:1:5", "bookings:1:6", "bookings:2:0"]
    assert lessons.kafka_offset_order_kept(bookings, ids, {"bk-0": 1.0, "bk-1": 2.0, "bk-2": 0.5}) == {"h1": True, "h2": True}
    assert lessons.kafka_offset_order_kept(bookings, ids, {"bk-0": 3.0, "bk-1": 2.0})["h1"] is False


def test_wait_for_workers_counts_only_the_given_pids():
    class Backend:
        async def live_workers(self):
            return {"w-1": {"pid": 1}, "w-2": {"pid": 2}, "old-9": {"pid": 9}}

    class Lab:
        def backend(self, lane):
            return Backend()

    assert asyncio.run(lessons.wait_for_workers(Lab(), "streams", 2, pids=[1, 2])) == 2
    assert asyncio.run(lessons.wait_for_workers(Lab(), "streams", 3)) == 3  # any live worker
    assert asyncio.run(lessons.wait_for_workers(Lab(), "streams", 3, pids=[1, 2], timeout_s=0.3)) == 2


def test_workers_slider_is_disabled_the_moment_its_pool_closes():
    from labkit.settings import Settings
    from labkit.workers import WorkerPool

    pool = WorkerPool("streams", settings=Settings())
    slider = widgets.workers_slider(pool)
    assert not slider.disabled
    pool.close()  # what leaving `async with lab.workers(...)` does
    assert slider.disabled  # at once, not on the next drag
    slider.value = 2
    assert pool.pids == []


def test_failure_slider_is_disabled_when_the_lesson_finishes():
    from labkit.notebook.session import finish


    class Lab:
        faults = RecordingFaults()

        async def close(self):
            pass

    async def lesson():
        lab = Lab()
        slider = widgets.failure_slider(lab.faults)
        assert not slider.disabled
        await finish(lab, {})
        assert slider.disabled  # at once
        slider.value = 0.5  # a drag after the lesson finished writes nothing
        await asyncio.gather(*slider.tasks)
        return lab.faults.values

    assert asyncio.run(lesson()) == []
