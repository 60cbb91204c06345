"""The live dashboard in a real headless Chromium: served by a real uvicorn process while
bookings flow through real workers on all three lanes; the page must show them completing,
with no request leaving this machine (plotly.js is served by the API, not a CDN)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from chromium import CHROMIUM, CHROMIUM_FLAGS, need

from labkit.api.server import api_process
from labkit.settings import LANES

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(180)]

SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "dashboard.png"


async def post_bookings(base: str, count: int, stop: asyncio.Event) -> int:
    """A steady trickle of bookings, so the page has something live to show."""
    sent = 0
    check_in = datetime.now(UTC).date() + timedelta(days=3)
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        while sent < count and not stop.is_set():
            response = await client.post("/api/bookings", json={
                "userId": f"user-{sent:03d}", "hotelId": f"hotel-{sent % 5:03d}",
                "checkIn": (check_in + timedelta(days=sent % 20)).isoformat(),
                "checkOut": (check_in + timedelta(days=sent % 20 + 2)).isoformat(), "guests": 2,
            })
            assert response.status_code == 202, response.text
            sent += 1
            await asyncio.sleep(0.05)
    return sent


async def lane_value(page, lane: str, field: str) -> str:
    return await page.get_attribute(f'.value[data-lane="{lane}"][data-field="{field}"]', "data-value")


async def test_dashboard_shows_all_three_lanes_completing(lab, settings):
    need("Chromium", shutil.which(CHROMIUM) is not None)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        need("playwright", False)

    await lab.stock({f"hotel-{i:03d}": 1000 for i in range(5)})
    pools = [lab.pool(lane, concurrency=4) for lane in LANES]
    stop = asyncio.Event()
    with api_process(settings) as base:
        try:
            for pool in pools:
                pool.__enter__().start(1)
            feeder = asyncio.create_task(post_bookings(base, 200, stop))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                outside: list[str] = []
                page.on("request", lambda r: outside.append(r.url)
                        if urlparse(r.url).netloc != urlparse(base).netloc else None)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{base}/dashboard")
                for lane in LANES:
                    await page.wait_for_function(
                        """lane => Number(document.querySelector(
                            `.value[data-lane="${lane}"][data-field="completed"]`)?.dataset.value || 0) > 0""",
                        arg=lane, timeout=90_000,
                    )
                await page.wait_for_function("Number(document.body.dataset.snapshots || 0) >= 6", timeout=30_000)
                completed = {lane: int(await lane_value(page, lane, "completed")) for lane in LANES}
                workers = {lane: int(await lane_value(page, lane, "workers")) for lane in LANES}
                rows = await page.locator("#recent tbody tr").count()
                bars = await page.locator('#recent td[data-lane] .bar').count()
                connection = await page.get_attribute("#connection", "data-state")
                has_plotly = await page.evaluate("typeof Plotly !== 'undefined' && !!Plotly.version")
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
                await browser.close()
        finally:
            stop.set()
            for pool in pools:
                pool.__exit__(None, None, None)
        await feeder
    assert all(n > 0 for n in completed.values()), completed
    assert all(n >= 1 for n in workers.values()), workers
    assert rows > 0 and bars > 0
    assert connection == "live"
    assert has_plotly
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert errors == [], errors
    assert SCREENSHOT.stat().st_size > 10_000
