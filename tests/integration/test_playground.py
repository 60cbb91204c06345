"""Lesson 12's playground against real workers: what Stop promises holds even when it is
pressed at once after another control."""

from __future__ import annotations

import anyio
import pytest

from labkit.notebook.playground import Playground, dead_letterings
from labkit.notebook.widgets import booking_statuses
from labkit.status import State
from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def test_stop_pressed_right_after_poison_waits_for_that_poison(lab):
    """The poison's handler publishes only after the workers' fault cache names it; a Stop
    pressed meanwhile must still drain it, not tear the workers down under it."""
    play = Playground(lab, Workload(seed=7), lanes=["streams"], rate=0.0, drain_timeout_s=60)
    play.controls()
    run = play.start()
    while not play.pools:  # the workers are up
        await anyio.sleep(0.1)
    play.poison_button.click()
    play.stop_button.click()
    summary = await run.result()

    assert len(play.poisoned) == 1 and play.accepted == play.poisoned, summary
    poison = play.poisoned[0]
    assert await lab.states([poison], ["streams"]) == {"streams": {poison: State.DEAD_LETTERED}}
    assert dead_letterings(await booking_statuses(lab, [poison]), poison) == {"streams": 1}
    assert play.stop_button.disabled and play.poison_button.disabled
