"""Lessons in a real JupyterLab, driven by Playwright in Debian's Chromium as a learner would:
Run All Cells, then drag a workers slider WITH THE MOUSE while bookings flow, and see the
extra workers in `labkit stats --json`; every cell ran (the RESULTS line) and no output shows
a traceback. Each lesson runs from a copy with CI parameters; screenshots go to build/browser/."""

from __future__ import annotations

import pytest
from lab_page import (
    SHOTS,
    drag_to_right_end,
    error_outputs,
    lesson_copy,
    live_workers,
    open_and_run_all,
    slider,
    wait_for_results,
    workers_reach,
)
from playwright.sync_api import expect

from labkit.notebook.runner import CI_PARAMETERS

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.kafka, pytest.mark.streams,
              pytest.mark.timeout(420)]

PLAY_FOR_S = 240  # the learner's playground (lesson 12's last cell) outlives the test's drag
PLAYGROUND_MAX_WORKERS = 4  # the playground's workers slider: 1 at the start, this at its right end
SCALING_MAX_WORKERS = 6  # lesson 04's slider (widgets.workers_slider) at its right end
SCALING_SCALE_TO = 3  # where lesson 04 moves its slider itself
# lesson 04 slowed down so its second phase (3 workers, ~20 s) is long enough to be dragged in
SCALING = {"TIME_SCALE": 0.2, "N_BOOKINGS": 36}


def test_playground_slider_dragged_while_bookings_flow(jupyter_lab, page):
    name = lesson_copy(jupyter_lab.root, "12_playground.ipynb", **CI_PARAMETERS, PLAY_FOR_S=PLAY_FOR_S)
    try:
        open_and_run_all(page, jupyter_lab.url(name))
        # the second "streams workers" slider is the learner's playground: it stays live after Run All
        yours = slider(page, "streams workers", nth=1)
        page.screenshot(path=str(SHOTS / "12_playground_live.png"), full_page=True)
        before = live_workers(jupyter_lab.env, "streams")
        drag_to_right_end(page, yours)
        seen = workers_reach(jupyter_lab.env, "streams", before + PLAYGROUND_MAX_WORKERS - 1, timeout_s=60)
        page.screenshot(path=str(SHOTS / "12_slider_dragged.png"), full_page=True)
        assert seen >= before + PLAYGROUND_MAX_WORKERS - 1, (before, seen)

        results = wait_for_results(page, timeout_s=150)
        page.locator(".widget-button", has_text="Stop").last.click()
        # Stop drains this run's bookings, stops the pool and disables the playground's controls
        stopped = page.locator(".widget-button:disabled", has_text="Stop")
        expect(stopped).to_have_count(2, timeout=150_000)  # the lesson's playground, then yours
        assert "RESULTS {" in results
        assert not error_outputs(page), error_outputs(page)[:2]
    finally:
        page.screenshot(path=str(SHOTS / "12_last.png"), full_page=True)


def test_scaling_slider_dragged_while_its_cell_runs(jupyter_lab, page):
    name = lesson_copy(jupyter_lab.root, "04_scaling.ipynb", **{**CI_PARAMETERS, **SCALING})
    others = live_workers(jupyter_lab.env, "streams")  # workers a learner left running count too
    try:
        open_and_run_all(page, jupyter_lab.url(name))
        workers = slider(page, "streams workers")
        # the lesson moves its slider to 3 itself; drag it further while those 3 work
        workers_reach(jupyter_lab.env, "streams", others + SCALING_SCALE_TO, timeout_s=120)
        drag_to_right_end(page, workers)
        seen = workers_reach(jupyter_lab.env, "streams", others + SCALING_MAX_WORKERS, timeout_s=30)
        page.screenshot(path=str(SHOTS / "04_slider_dragged.png"), full_page=True)
        assert seen > others + SCALING_SCALE_TO, (others, seen)

        wait_for_results(page, timeout_s=180)  # printed after the lesson's own asserts passed
        assert not error_outputs(page), error_outputs(page)[:2]
    finally:
        page.screenshot(path=str(SHOTS / "04_last.png"), full_page=True)
