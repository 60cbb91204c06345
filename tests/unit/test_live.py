"""labkit.notebook.live: a background run that a later cell stops or awaits."""

from __future__ import annotations

import anyio
import ipywidgets as w
import pytest

from labkit.notebook import live


async def test_start_returns_at_once_and_result_waits_for_main():
    finished = anyio.Event()

    async def main(tasks):
        await finished.wait()
        return 42

    run = live.start(main)
    await anyio.sleep(0.05)
    assert run.running  # the "cell" went on while main waits
    finished.set()
    assert await run.result() == 42
    assert not run.running


async def test_stop_cancels_every_task_and_waits_for_teardown():
    torn_down, handler_cancelled = [], []

    async def handler():
        try:
            await anyio.sleep_forever()
        finally:
            handler_cancelled.append(True)

    async def main(tasks):
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # a teardown that takes a moment (stopping workers)
                torn_down.append(True)

    run = live.start(main)
    await anyio.sleep(0.01)
    run.soon(handler)
    await anyio.sleep(0.01)
    assert await run.stop() is None
    assert torn_down == [True] and handler_cancelled == [True]
    assert not run.running


async def test_a_stopped_run_disables_its_widgets_and_refuses_work():
    async def main(tasks):
        await anyio.sleep_forever()

    slider = w.IntSlider()
    run = live.start(main)
    run.bind(slider)
    assert not slider.disabled
    await run.stop()
    assert slider.disabled
    with pytest.raises(live.RunStopped):
        run.soon(anyio.sleep, 0)
    late = w.Button()
    run.bind(late)  # bound after the end: disabled at once
    assert late.disabled


async def test_result_raises_what_main_raised():
    async def main(tasks):
        raise ValueError("boom")

    run = live.start(main)
    with pytest.raises(ValueError, match="boom"):
        await run.result()
