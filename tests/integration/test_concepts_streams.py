"""Redis Streams concepts the lessons assert, on scratch streams of the test Redis."""

from __future__ import annotations

import pytest

from labkit.notebook import concepts_streams

pytestmark = [pytest.mark.redis, pytest.mark.streams]


async def test_pending_entries_stay_with_the_crashed_consumer_until_claimed(lab):
    run = await concepts_streams.claim_after_crash(lab.redis, entries=2, min_idle_ms=100)
    assert [(p["consumer"], p["times_delivered"]) for p in run["pending_before_claim"]] == [("crashed", 1)] * 2
    assert run["claimed"] == run["entries"]
    assert [(p["consumer"], p["times_delivered"]) for p in run["pending_after_claim"]] == [("rescuer", 2)] * 2
    assert run["pending_after_ack"] == []


async def test_group_lag_counts_entries_not_yet_delivered(lab):
    info = await concepts_streams.group_lag(lab.redis, entries=7, read=3, acked=1)
    assert (info["lag"], info["pending"], info["entries-read"]) == (4, 2, 3)


async def test_minid_trims_everything_older_than_the_cut(lab):
    run = await concepts_streams.trim_by_minid(lab.redis, old=3, new=2)
    assert run["removed"] == 3
    assert run["kept"] == run["new"]
    assert not await lab.redis.keys("lesson:minid:*")  # the scratch stream is gone
