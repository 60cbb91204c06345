"""Debian's Chromium for the browser tests (the dashboard, JupyterLab): where it is, how it is
launched, and what happens when it is missing (skip on a laptop, fail in CI)."""

from __future__ import annotations

import os

import pytest

CHROMIUM = os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def need(what: str, ok: bool) -> None:
    """Skip without Chromium or Playwright on a laptop; fail in CI."""
    if ok:
        return
    message = f"{what} is missing (apt-get install chromium; pip install playwright)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
