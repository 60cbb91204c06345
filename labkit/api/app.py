"""The lab's HTTP face (the seed's Express API, in FastAPI): publish bookings to the chosen
lanes, read their status, queues and dead letters, health, Prometheus metrics, and the live
dashboard. A thin layer: the work is done by `Lab` and the backends.

Run it with `labkit api`; the helpers live in `api_*.py` beside this file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse

from labkit.api import errors as api_errors
from labkit.api.batching import LaneBatcher
from labkit.api.errors import error
from labkit.api.gauges import gauges_text
from labkit.api.health import BrokerProbe
from labkit.api.idempotency import KEY_PATTERN, IdempotencyStore
from labkit.api.models import (
    Accepted,
    BookingIn,
    BookingView,
    DlqList,
    Health,
    PartialPublish,
    QueueStats,
    Redriven,
    error_responses,
)
from labkit.api.origin import same_origin_only
from labkit.api.snapshot import Snapshots, lane_stats
from labkit.booking import Booking, make_booking, new_booking_id
from labkit.lab import Lab
from labkit.metrics import prometheus_text
from labkit.settings import LANES, Settings

PUBLISH_TIMEOUT_S = 10.0
MAX_CONCURRENT_POSTS = 48
DASHBOARD_DIR = Path(__file__).parent / "static"  # package data (pyproject: api/static/*)
BookingIdPath = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
BackendPath = Annotated[str, PathParam(description=f"one of {', '.join(LANES)}")]
Limit = Annotated[int, Query(ge=1, le=1000)]


class Services:
    """What every request shares: one Lab (one Redis pool, one Kafka producer) and helpers."""

    def __init__(self, settings: Settings) -> None:
        self.lab = Lab(settings)
        self.probe = BrokerProbe(settings, self.lab.redis)
        self.idempotency = IdempotencyStore(self.lab.redis)
        self.snapshots = Snapshots(self.lab, self.probe)
        self.batchers = {lane: LaneBatcher(self.lab.backend(lane), timeout_s=PUBLISH_TIMEOUT_S) for lane in LANES}
        # Requests beyond this wait their turn instead of exhausting the Redis client's pool
        # (redis-py refuses a connection past its limit of 100 rather than queueing).
        self.gate = asyncio.Semaphore(MAX_CONCURRENT_POSTS)

    async def publish(self, booking: Booking, lanes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Publish to each lane on its own: one broker down must not stop the others."""

        async def one(lane: str) -> tuple[str, str | None, str | None]:
            down = await self.probe.lane_down(lane)
            if down:
                return lane, None, down
            try:
                job_id = await self.batchers[lane].publish(booking)
            except Exception as exc:  # noqa: BLE001 - reported per lane in the 503 body
                return lane, None, f"{type(exc).__name__}: {exc}".rstrip(": ")
            return lane, job_id, None

        results = await asyncio.gather(*(one(lane) for lane in lanes))
        jobs = {lane: job for lane, job, _ in results if job is not None}
        failed = {lane: why for lane, _, why in results if why is not None}
        return jobs, failed


def create_app(settings: Settings | None = None) -> FastAPI:
    services = Services(settings or Settings.from_env())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for batcher in services.batchers.values():
            await batcher.close()
        await services.lab.close()

    app = FastAPI(
        title="Booking Queue Lab API",
        version="0.1.0",
        description="One hotel-booking workload on BullMQ, Redis Streams and Apache Kafka, side by side.",
        lifespan=lifespan,
    )
    app.state.services = services
    api_errors.install(app)

    @app.post(
        "/api/bookings", status_code=202, response_model=Accepted,
        responses={**error_responses(409, 413, 415, 422), 503: {"model": PartialPublish}},
    )
    async def post_booking(
        body: BookingIn,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", pattern=KEY_PATTERN, max_length=200)
        ] = None,
    ) -> Any:
        async with services.gate:
            return await _post_booking(body, response, idempotency_key)

    async def _post_booking(body: BookingIn, response: Response, idempotency_key: str | None) -> Any:
        booking_id, already = new_booking_id(), {}
        if idempotency_key:
            try:
                claim = await services.idempotency.claim(idempotency_key, body.fingerprint(), booking_id)
            except RedisError as exc:
                return error(503, f"redis is down: {exc}", failed={"redis": str(exc)})
            if claim.outcome == "mismatch":
                return error(422, "Idempotency-Key was already used with a different body",
                             [{"field": "Idempotency-Key", "message": "reused with a different body"}])
            if claim.outcome == "pending":
                busy = error(409, "a request with this Idempotency-Key is in progress; retry")
                busy.headers["Retry-After"] = "1"
                return busy
            if claim.outcome == "done":
                response.headers["Idempotent-Replayed"] = "true"
                return Accepted(bookingId=claim.booking_id, jobs=claim.jobs)
            booking_id, already = claim.booking_id, claim.jobs
        lanes = body.lanes()
        booking = make_booking(body.booking_fields(), booking_id)
        jobs, failed = await services.publish(booking, [lane for lane in lanes if lane not in already])
        jobs = {lane: (already | jobs)[lane] for lane in lanes if lane in (already | jobs)}
        if idempotency_key:
            try:
                await services.idempotency.finish(
                    idempotency_key, body.fingerprint(), booking_id, jobs, complete=not failed
                )
            except RedisError as exc:
                failed.setdefault("redis", f"idempotency record not saved: {exc}")
        if failed:
            down = ", ".join(f"{lane} ({why})" for lane, why in failed.items())
            return error(503, f"not accepted by: {down}", bookingId=booking_id, jobs=jobs, failed=failed)
        return Accepted(bookingId=booking_id, jobs=jobs)

    @app.get("/api/bookings/{booking_id}", response_model=BookingView, responses=error_responses(404, 422, 503))
    async def get_booking(booking_id: BookingIdPath) -> Any:
        try:
            found = {lane: await services.lab.status.get(lane, booking_id) for lane in LANES}
        except RedisError as exc:
            return error(503, f"redis is down: {exc}")
        lanes = {lane: status.as_dict() for lane, status in found.items() if status is not None}
        if not lanes:
            raise HTTPException(404, f"booking {booking_id!r} is unknown on every lane")
        return {"bookingId": booking_id, "lanes": lanes}

    @app.get("/api/queues", response_model=dict[str, QueueStats])
    async def queues() -> Any:
        stats = await asyncio.gather(*(lane_stats(services.lab, services.probe, lane) for lane in LANES))
        return dict(zip(LANES, stats, strict=True))

    @app.get("/api/dlq/{backend}", response_model=DlqList, responses=error_responses(404, 422, 503))
    async def dlq_list(backend: BackendPath, limit: Limit = 100) -> Any:
        lane = await _available_lane(services, backend)
        letters = await services.lab.backend(lane).dlq_list(limit)
        return {"backend": lane, "letters": [letter.as_dict() for letter in letters]}

    @app.post("/api/dlq/{backend}/redrive", response_model=Redriven,
              responses=error_responses(403, 404, 422, 503), dependencies=[Depends(same_origin_only)])
    async def dlq_redrive(
        backend: BackendPath, limit: Limit = 1000,
        booking_id: Annotated[list[str] | None, Query(description="only these bookings' letters")] = None,
    ) -> Any:
        lane = await _available_lane(services, backend)
        redriven = await services.lab.backend(lane).dlq_redrive(limit, booking_ids=booking_id or None)
        return {"backend": lane, "redriven": redriven}

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Any:
        checks = await services.probe.all(fresh=True)
        up = all(c.up for c in checks.values())
        body = {"status": "ok" if up else "degraded", "brokers": {k: c.as_dict() for k, c in checks.items()}}
        return JSONResponse(body, status_code=200 if up else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(503)})
    async def metrics() -> Response:
        try:
            snapshot = await services.lab.metrics.snapshot(LANES)
        except RedisError as exc:
            return error(503, f"redis is down: {exc}")
        stats = await asyncio.gather(*(lane_stats(services.lab, services.probe, lane) for lane in LANES))
        return Response(prometheus_text(snapshot) + gauges_text(stats), media_type=CONTENT_TYPE_LATEST)

    _dashboard_routes(app, services)
    return app


async def _available_lane(services: Services, backend: str) -> str:
    if backend not in LANES:
        raise HTTPException(404, f"unknown backend {backend!r}; choose one of {', '.join(LANES)}")
    down = await services.probe.lane_down(backend)
    if down:
        raise HTTPException(503, f"{backend} is unavailable: {down}")
    return backend


def _dashboard_routes(app: FastAPI, services: Services) -> None:
    """The live page, its files and its event stream: not part of the JSON API's schema."""
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse((DASHBOARD_DIR / "index.html").read_text())

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_file() -> FileResponse:
        # Served from the installed plotly package: the dashboard works offline, no CDN.
        return FileResponse(plotly_js, media_type="text/javascript")

    @app.get("/api/stream", include_in_schema=False)
    async def stream() -> EventSourceResponse:
        async def snapshots() -> AsyncIterator[dict[str, str]]:
            while True:
                try:
                    data = await services.snapshots.get()
                except RedisError as exc:
                    data = {"error": f"redis is down: {exc}"}
                yield {"event": "snapshot", "data": json.dumps(data)}
                await asyncio.sleep(1.0)

        return EventSourceResponse(snapshots(), ping=15)

    app.mount("/static/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")
