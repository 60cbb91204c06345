"""The parallel consumer's bookkeeping, as pure logic: who may start, what may be committed."""

from __future__ import annotations

import pytest

from labkit.backends.kafka_tracker import OffsetTracker, Ordering, Tracked


def polled(tracker: OffsetTracker, *keys: bytes, partition: str = "p0", first: int = 0) -> list[Tracked]:
    """Track records with these keys at consecutive offsets; return those allowed to start."""
    items = [Tracked(partition, first + i, key) for i, key in enumerate(keys)]
    return [item for item in items if tracker.add(item)]


def test_key_ordering_runs_different_keys_together_and_one_key_in_offset_order():
    tracker = OffsetTracker(Ordering.KEY)
    started = polled(tracker, b"a", b"b", b"a", b"a")
    assert [i.offset for i in started] == [0, 1]  # a and b together; the other a's wait

    assert [i.offset for i in tracker.finish(started[0])] == [2]  # the next a, in order
    assert tracker.finish(Tracked("p0", 2, b"a")) == []  # a copy of offset 2 is not the one tracked


def test_partition_ordering_runs_one_record_at_a_time():
    tracker = OffsetTracker(Ordering.PARTITION)
    started = polled(tracker, b"a", b"b", b"c")
    assert [i.offset for i in started] == [0]
    assert [i.offset for i in tracker.finish(started[0])] == [1]


def test_unordered_starts_everything_and_partitions_never_wait_for_each_other():
    tracker = OffsetTracker(Ordering.UNORDERED)
    assert len(polled(tracker, b"a", b"a", b"a")) == 3
    assert len(polled(tracker, b"a", partition="p1")) == 1


def test_only_the_contiguous_finished_prefix_is_committable():
    tracker = OffsetTracker(Ordering.UNORDERED)
    items = polled(tracker, b"a", b"b", b"c", b"d", first=10)
    for item in items[1:]:  # offset 10 is slow; 11..13 finish
        tracker.finish(item)
    assert tracker.committable() == {}

    tracker.finish(items[0])
    [(partition, prefix)] = tracker.committable().items()
    assert (partition, prefix.offset) == ("p0", 14)
    tracker.committed({partition: prefix})
    assert tracker.in_flight() == 0


def test_a_slow_record_holds_the_commit_at_its_offset():
    tracker = OffsetTracker(Ordering.UNORDERED)
    items = polled(tracker, b"a", b"b", b"c", b"d")
    tracker.finish(items[0])
    tracker.finish(items[2])
    tracker.finish(items[3])
    assert tracker.committable()["p0"].offset == 1  # 1 is still running: 2 and 3 wait
    assert [i.offset for i in tracker.committable()["p0"].records] == [0]


def test_offsets_with_gaps_are_contiguous_among_polled_records():
    tracker = OffsetTracker(Ordering.UNORDERED)
    items = [Tracked("p0", offset, b"k") for offset in (4, 6, 9)]  # markers sit in the gaps
    for item in items:
        tracker.add(item)
        tracker.finish(item)
    assert tracker.committable()["p0"].offset == 10


def test_a_prefix_carries_the_retries_and_letters_of_its_records():
    tracker = OffsetTracker(Ordering.UNORDERED)
    first, second = polled(tracker, b"a", b"b")
    second.outgoing.append("letter")
    tracker.finish(second)
    tracker.finish(first)
    assert tracker.committable()["p0"].outgoing == ["letter"]


def test_revoking_a_partition_drops_its_records_and_ignores_their_late_finish():
    tracker = OffsetTracker(Ordering.KEY)
    [running] = polled(tracker, b"a", b"a")
    polled(tracker, b"x", partition="p1")
    dropped = tracker.revoke({"p0"})
    assert sorted(i.offset for i in dropped) == [0, 1]
    assert not tracker.owns(running)
    assert tracker.finish(running) == []  # nothing of a revoked partition starts
    assert set(tracker.committable()) == set()
    assert tracker.in_flight() == 1  # p1 untouched

    [again] = polled(tracker, b"a")  # re-assigned later: it starts afresh
    assert again.offset == 0


def test_a_record_polled_twice_is_tracked_once():
    tracker = OffsetTracker(Ordering.UNORDERED)
    assert polled(tracker, b"a")
    assert not polled(tracker, b"a")
    assert tracker.in_flight() == 1


def test_a_partition_is_full_at_its_limit():
    tracker = OffsetTracker(Ordering.KEY, partition_limit=2)
    polled(tracker, b"a", b"b")
    assert tracker.full("p0")
    assert not tracker.full("p1")


def test_an_unknown_ordering_is_refused():
    with pytest.raises(ValueError):
        OffsetTracker("random")
