"""A JupyterLab of the test's own (free loopback port, token, a temporary root and settings)
and a page of Debian's Chromium driven by Playwright. The server's log, which also holds
every kernel's stderr, is copied to build/browser/ when it stops."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from chromium import CHROMIUM, CHROMIUM_FLAGS, need
from lab_page import SHOTS

from labkit import processes

# JupyterLab 4 renders only the cells in view ("windowing"): outputs further down are not in
# the page at all, so a locator would never find them. No news pop-ups.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"checkForUpdates": False, "fetchNews": "false"},
}


@dataclass(frozen=True)
class JupyterLab:
    base: str
    token: str
    root: Path
    env: dict[str, str]

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}"


def _settings_dir(where: Path) -> Path:
    for name, values in LAB_SETTINGS.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    return where


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab serving `tmp_path` (put lesson copies there); stopped even on failure,
    which shuts its kernels down: their pools stop their workers (LABKIT_POOL_PID)."""
    port, token = processes.free_port(), secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".config"),
           "JUPYTERLAB_SETTINGS_DIR": str(_settings_dir(tmp_path / ".config" / "lab" / "user-settings")),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / ".workspaces")}
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    lab = JupyterLab(f"http://127.0.0.1:{port}", token, tmp_path, env)
    try:
        deadline = time.monotonic() + 60
        while not _answers(lab):
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("JupyterLab did not start:\n" + log.read_text(errors="replace")[-2000:])
            time.sleep(0.5)
        yield lab
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, SHOTS / "jupyter.log")


def _answers(lab: JupyterLab) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{lab.base}/api/status", params={"token": lab.token}).status_code == 200
    return False


@pytest.fixture
def page():
    """A Chromium page, large enough for a lesson's widgets side by side."""
    need("Chromium", shutil.which(CHROMIUM) is not None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright", False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1500, "height": 1100})
        finally:
            browser.close()
