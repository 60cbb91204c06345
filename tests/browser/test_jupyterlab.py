"""Lesson 12 in a real JupyterLab, driven by Playwright in Debian's Chromium: Run All Cells,
then drag the Streams workers slider of the learner's playground WITH THE MOUSE while its
bookings flow, and see more live workers in `labkit stats --json`; no error output anywhere.
Screenshots go to build/browser/."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from labkit import processes

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "browser"
PLAY_FOR_S = 150  # the learner's playground outlives Run All long enough to be dragged
WORKERS_TO = 4  # the slider's right end: its maximum


def _need(what: str, ok: bool) -> None:
    if ok:
        return
    message = f"{what} is missing (apt-get install chromium; pip install playwright)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def lesson_copy(root: Path, name: str, **parameters: object) -> Path:
    """The lesson with its `parameters` cell overridden, as papermill would."""
    book = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
    for cell in book["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] += ["\n"] + [f"{k} = {v!r}\n" for k, v in parameters.items()]
    target = root / name
    target.write_text(json.dumps(book, indent=1), encoding="utf-8")
    return target


@contextlib.contextmanager
def jupyter_lab(root: Path, env: dict[str, str]):
    """A JupyterLab of our own on a free loopback port; yields its base URL and token."""
    port, token = processes.free_port(), secrets.token_hex(8)
    log = root / "jupyter.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + log.read_text(errors="replace")[-2000:])
        yield base, token
    finally:
        server.terminate()  # shuts the kernels down: their pools stop the workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def live_workers(env: dict[str, str], lane: str) -> int:
    out = subprocess.run([sys.executable, "-m", "labkit", "stats", "--json", "--backend", lane],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)[lane]["workers"]


def drag_to_right_end(page, slider) -> None:
    """Press the mouse on the slider's handle and release it at the right end of its track."""
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target").first
    h, t = handle.bounding_box(), track.bounding_box()
    page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
    page.mouse.down()
    page.mouse.move(t["x"] + t["width"] * 0.75, t["y"] + t["height"] / 2, steps=8)
    page.mouse.move(t["x"] + t["width"] + 20, t["y"] + t["height"] / 2, steps=8)
    page.mouse.up()


def test_playground_slider_dragged_with_the_mouse_adds_workers(tmp_path):
    _need("Chromium", shutil.which(CHROMIUM) is not None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright", False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    lesson_copy(tmp_path, "12_playground.ipynb", PLAY_FOR_S=PLAY_FOR_S)
    with jupyter_lab(tmp_path, env) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(f"{base}/lab/tree/12_playground.ipynb?token={token}")
            page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
            page.locator(".jp-Notebook-ExecutionIndicator, .jp-Toolbar-kernelStatus").first.wait_for(timeout=60_000)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
            page.get_by_text("RESULTS {", exact=False).first.wait_for(timeout=200_000)
            page.screenshot(path=str(SHOTS / "12_after_run_all.png"), full_page=True)

            yours = page.locator(".widget-slider", has_text="streams workers").last
            yours.scroll_into_view_if_needed()
            before = live_workers(env, "streams")
            drag_to_right_end(page, yours)
            seen, deadline = before, time.monotonic() + 60
            while seen < WORKERS_TO and time.monotonic() < deadline:
                time.sleep(1)
                seen = live_workers(env, "streams")
            page.screenshot(path=str(SHOTS / "12_slider_dragged.png"), full_page=True)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert seen > before and seen >= WORKERS_TO, (before, seen)
            assert not tracebacks, tracebacks[:2]
        finally:
            page.screenshot(path=str(SHOTS / "12_last.png"), full_page=True)
            with contextlib.suppress(Exception):
                page.locator(".widget-button", has_text="Stop").last.click()
                page.wait_for_timeout(2000)
            browser.close()
