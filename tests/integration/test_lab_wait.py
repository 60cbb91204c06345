"""Lab.wait_for: when bookings do not finish, the error says where each one got to."""

from __future__ import annotations

import pytest

from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def test_a_timeout_names_the_unfinished_bookings_and_their_last_step(lab):
    waiting, done = Workload(seed=5).bookings(2)
    await lab.publish([waiting, done], ["streams"])
    store = lab.status
    for state in (State.ACTIVE, State.COMPLETED):
        await store.transition("streams", done.bookingId, state, detail="by hand")

    with pytest.raises(TimeoutError) as caught:  # no worker runs: one stays queued
        await lab.wait_for([waiting.bookingId, done.bookingId], ["streams"], timeout_s=0.3)

    message = str(caught.value)
    assert "streams: 1" in message
    assert f"streams {waiting.bookingId}: queued published" in message
    assert done.bookingId not in message


async def test_a_board_that_times_out_says_the_same(lab):
    from labkit.notebook.widgets import Board

    waiting = Workload(seed=6).bookings(1)[0]
    await lab.publish([waiting], ["streams"])
    with pytest.raises(TimeoutError) as caught:
        await Board(lab, [], lanes=["streams"]).run_until([waiting.bookingId], timeout_s=0.3, freeze=False)
    assert f"streams {waiting.bookingId}: queued published" in str(caught.value)
