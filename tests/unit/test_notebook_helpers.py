"""labkit.notebook's lesson helpers: outcomes, fault blocks, the XPENDING sampler, background
board runs, `start`/`finish`. Pure logic runs anywhere; the rest uses the test Redis."""

from __future__ import annotations

import random

import anyio
import pytest

from labkit.notebook import finish, lessons, start
from labkit.notebook.samplers import PendingHolders
from labkit.notebook.widgets import Board
from labkit.status import BookingStatus, State
from labkit.tasks import task_group
from labkit.workload import Workload

STATES = {
    "bullmq": {"bk-1": State.COMPLETED, "bk-2": State.REJECTED},
    "kafka": {"bk-1": State.COMPLETED, "bk-2": State.DEAD_LETTERED},
}


def entry(state, progress="", detail="", at=0.0, attempt="1"):
    return {"state": state, "progress": progress, "detail": detail, "at": str(at), "attempt": attempt}


def test_count_in_counts_one_state_per_lane():
    assert lessons.count_in(STATES, "completed") == {"bullmq": 1, "kafka": 1}
    assert lessons.count_in(STATES, "dead-lettered") == {"bullmq": 0, "kafka": 1}


def test_assert_all_in_names_the_bookings_that_ended_elsewhere():
    lessons.assert_all_in(STATES, "completed", "rejected", "dead-lettered")
    with pytest.raises(AssertionError, match="kafka', 'bk-2'"):
        lessons.assert_all_in(STATES, "completed", "rejected")
    with pytest.raises(AssertionError, match="None"):  # no status at all is not finished
        lessons.assert_all_in({"streams": {"bk-3": None}}, "completed")


def test_checkpoints_keep_each_progress_once_in_a_row():
    history = [entry("queued", "0"), entry("active", "0"), entry("active", "", "pdf started"),
               entry("active", "20"), entry("active", "20"), entry("retrying", ""),
               entry("active", "0"), entry("active", "20"), entry("completed", "100")]
    status = BookingStatus(lane="kafka", booking_id="bk-1", state=State.COMPLETED, history=history)
    assert lessons.checkpoints(status) == [0, 20, 0, 20, 100]


def test_retries_of_picks_one_reason_and_times_it_from_a_moment():
    history = [entry("retrying", detail="payment failed; retry in 0.2s", at=9.5),
               entry("retrying", detail="pdf failed; retry in 0.4s", at=10.5),
               entry("retrying", detail="payment failed; retry in 0.4s", at=11.25, attempt="2")]
    status = BookingStatus(lane="streams", booking_id="bk-7", state=State.COMPLETED, history=history)
    assert lessons.retries_of([status], "payment failed", since=10.0) == [
        {"lane": "streams", "booking": "bk-7", "attempt": "1", "after_change_s": -0.5},
        {"lane": "streams", "booking": "bk-7", "attempt": "2", "after_change_s": 1.25},
    ]


def test_pending_holders_label_workers_and_skip_parked_retries():
    holders = PendingHolders(redis=None)
    holders.record([{"message_id": "1-0", "consumer": "vm-101-ab12cd"},
                    {"message_id": "2-0", "consumer": "vm-102-ef34ab"},
                    {"message_id": "3-0", "consumer": "retry"}])
    holders.record([{"message_id": "4-0", "consumer": "vm-101-ab12cd"}])
    assert holders.split(["1-0", "2-0", "3-0", "4-0", "9-0"]) == {"pid 101": 2, "pid 102": 1}


async def test_task_group_raises_a_single_failure_as_itself():
    async def fail():
        raise TimeoutError("not finished")

    with pytest.raises(TimeoutError, match="not finished"):
        async with task_group() as tasks:
            tasks.start_soon(fail)
            await anyio.sleep(1)


@pytest.mark.redis
async def test_lesson_faults_hand_back_the_learners_own(lab):
    await lab.faults.set(["email.fail_rate=0.5"])  # the learner's own setting
    policy = dict(item.split("=") for item in lessons.retry_policy(lab.settings))  # every worker follows it
    assert policy["retry.max_attempts"] == str(lab.settings.max_attempts)
    async with lessons.lesson_faults(lab, ["payment.fail_rate=0.3"]):
        assert await lab.faults.show() == {"payment.fail_rate": "0.3", **policy}
    assert await lab.faults.show() == {"email.fail_rate": "0.5"}
    with pytest.raises(RuntimeError):
        async with lessons.lesson_faults(lab):  # none inside, and back even after an error
            assert await lab.faults.show() == policy
            raise RuntimeError("cell failed")
    assert await lab.faults.show() == {"email.fail_rate": "0.5"}


@pytest.mark.redis
async def test_pending_holders_sample_only_inside_the_block(lab):
    stream, group = f"lesson:test:{Workload().run_id}", "g"
    await lab.redis.xgroup_create(stream, group, id="$", mkstream=True)
    first = await lab.redis.xadd(stream, {"n": 1})
    await lab.redis.xreadgroup(group, "vm-4711-aa", {stream: ">"})
    holders = PendingHolders(lab.redis, stream=stream, group=group, interval_s=0.01)
    async with holders.sampling():
        with anyio.fail_after(5):
            while not holders.holders:
                await anyio.sleep(0.01)
    later = await lab.redis.xadd(stream, {"n": 2})
    await lab.redis.xreadgroup(group, "vm-4712-bb", {stream: ">"})
    await anyio.sleep(0.1)
    await lab.redis.delete(stream)
    assert holders.split([first, later]) == {"pid 4711": 1}  # the later one was never sampled


@pytest.mark.redis
async def test_board_running_returns_the_states_once_the_block_and_bookings_are_done(lab):
    booking = Workload(seed=8).bookings(1)[0]
    await lab.publish([booking], ["streams"])
    board = Board(lab, [], lanes=["streams"])
    async with board.running([booking.bookingId], timeout_s=10, interval_s=0.05, freeze=False) as run:
        for state in (State.ACTIVE, State.COMPLETED):  # what a worker would do
            await lab.status.transition("streams", booking.bookingId, state, detail="by hand")
    assert run.states == {"streams": {booking.bookingId: State.COMPLETED}}


@pytest.mark.redis
async def test_board_running_stops_with_the_blocks_error(lab):
    booking = Workload(seed=9).bookings(1)[0]
    await lab.publish([booking], ["streams"])
    board = Board(lab, [], lanes=["streams"])
    with pytest.raises(ValueError, match="cell failed"):
        async with board.running([booking.bookingId], timeout_s=30, freeze=False) as run:
            raise ValueError("cell failed")
    assert run.states == {}  # the board run was cancelled, not waited for


@pytest.mark.redis
async def test_start_opens_a_lesson_lab_and_finish_reports_and_closes_it(capsys):
    lab, settings, workload = await start(seed=5, time_scale=0.5, max_attempts=2)
    drawn = random.random()
    random.seed(5)
    assert random.random() == drawn  # seeded
    assert (settings.time_scale, settings.max_attempts, settings.backoff_base_s) == (0.5, 2, 0.2)
    assert lab.settings is settings and workload.seed == 5
    assert f"Redis {settings.redis_url}" in capsys.readouterr().out
    await finish(lab, {"done": [1, 2]})
    assert capsys.readouterr().out == 'RESULTS {"done": [1, 2]}\n'


def test_booking_counters_read_per_lane_totals_from_metrics_text():
    text = (  # as prometheus_client writes it
        "# TYPE labkit_bookings_completed_total counter\n"
        'labkit_bookings_completed_total{lane="kafka"} 7.0\n'
        'labkit_bookings_completed_created{lane="kafka"} 1.7e9\n'
        "# TYPE labkit_bookings_retried_total counter\n"
        'labkit_bookings_retried_total{lane="kafka"} 2.0\n'
        'labkit_bookings_retried_total{lane="streams"} 1.0\n'
        "# TYPE labkit_lane_up gauge\n"
        'labkit_lane_up{lane="kafka"} 1.0\n'
    )
    assert lessons.booking_counters(text) == {"kafka": {"completed": 7.0, "retried": 2.0},
                                              "streams": {"retried": 1.0}}


def test_redacted_url_hides_only_the_password():
    from labkit.notebook.session import redacted_url

    assert redacted_url("redis://:s3cret@host:6380/0") == "redis://:***@host:6380/0"
    assert redacted_url("redis://app:s3cret@host/1") == "redis://app:***@host/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_lesson_workload_books_its_own_hotels():
    from labkit.notebook.session import LessonWorkload

    one, two = LessonWorkload(seed=1), LessonWorkload(seed=1)
    hotels = {b.hotelId for b in one.bookings(50)}
    assert hotels <= set(one.rooms) and not hotels & set(two.rooms)
    assert [b.nights for b in one.bookings(5)] == [b.nights for b in two.bookings(5)]  # same seed, same stays
