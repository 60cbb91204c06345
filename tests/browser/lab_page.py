"""What a learner does in JupyterLab, as Playwright steps: open a lesson, Run All Cells,
drag a slider with the mouse, read the outputs; and what the brokers say meanwhile."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "browser"  # screenshots, and the server's log with every kernel's stderr
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"


def lesson_copy(root: Path, name: str, **parameters: object) -> str:
    """A copy of the lesson in `root` with its `parameters` cell overridden, as papermill
    would (the repository's notebook stays untouched); returns its name."""
    book = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
    for cell in book["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] += ["\n"] + [f"{k} = {v!r}\n" for k, v in parameters.items()]
    (root / name).write_text(json.dumps(book, indent=1), encoding="utf-8")
    return name


def open_and_run_all(page, url: str) -> None:
    """Open the notebook, wait for its kernel to be idle, then Run ▸ Run All Cells."""
    page.goto(url)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    page.locator(".jp-NotebookPanel [data-status='idle']").first.wait_for(timeout=90_000)
    started = page.locator(".jp-InputPrompt", has_text="[*]")
    for _attempt in range(3):  # a "Select Kernel" dialog showing late swallows the click
        accept_dialog(page)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        with contextlib.suppress(PlaywrightTimeout):
            started.first.wait_for(timeout=15_000)
            return
    raise AssertionError("Run All Cells never started a cell")


def accept_dialog(page, *, within_s: float = 5) -> None:
    """Accept JupyterLab's dialog if one shows ("Select Kernel": the notebook's own)."""
    button = page.locator(".jp-Dialog .jp-mod-accept")
    with contextlib.suppress(PlaywrightTimeout):
        button.wait_for(timeout=within_s * 1000)
        button.click()


def slider(page, description: str, *, nth: int = -1, timeout_s: float = 240):
    """The `nth` slider labelled `description` once the page shows it (it appears when its
    cell displays it)."""
    sliders = page.locator(".widget-slider", has=page.locator("label", has_text=description))
    found = sliders.nth(nth)
    found.wait_for(timeout=timeout_s * 1000)
    found.scroll_into_view_if_needed()
    return found


def drag_to_right_end(page, widget) -> None:
    """Press the mouse on the slider's handle and release it past the right end of its track."""
    handle = widget.locator(".noUi-handle").first.bounding_box()
    track = widget.locator(".noUi-target").first.bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.75, track["y"] + track["height"] / 2, steps=8)
    page.mouse.move(track["x"] + track["width"] + 20, track["y"] + track["height"] / 2, steps=8)
    page.mouse.up()


def wait_for_results(page, *, timeout_s: float) -> str:
    """The `RESULTS {…}` line the lesson's last cell prints."""
    line = page.locator(".jp-OutputArea-output", has_text="RESULTS {").last
    line.wait_for(timeout=timeout_s * 1000)
    return line.inner_text()


def error_outputs(page) -> list[str]:
    """Tracebacks in any output area (an exception in a cell or in a widget's handler)."""
    texts = page.locator(f"{STDERR}, .jp-OutputArea-output.jp-mod-error").all_inner_texts()
    return [t for t in texts if "Traceback" in t or "Error" in t]


def live_workers(env: dict[str, str], lane: str) -> int:
    """Workers of `lane` that checked in recently, as `labkit stats --json` counts them."""
    out = subprocess.run([sys.executable, "-m", "labkit", "stats", "--json", "--backend", lane],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)[lane]["workers"]


def workers_reach(env: dict[str, str], lane: str, count: int, *, timeout_s: float) -> int:
    """Poll `labkit stats` until `lane` has at least `count` live workers; the last count seen."""
    deadline = time.monotonic() + timeout_s
    while (seen := live_workers(env, lane)) < count and time.monotonic() < deadline:
        time.sleep(1)
    return seen
