"""Pure pieces of the API: the request model, the body guard, the per-lane batcher."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from labkit.api.batching import LaneBatcher
from labkit.api.errors import install
from labkit.api.models import BookingIn


def fields(**changes):
    check_in = datetime.now(UTC).date() + timedelta(days=3)
    base = {"userId": "u1", "hotelId": "h1", "checkIn": check_in.isoformat(),
            "checkOut": (check_in + timedelta(days=1)).isoformat(), "guests": 2}
    return {**base, **changes}


def test_fingerprint_ignores_key_order_and_backend_order():
    a = BookingIn.model_validate(fields(backends=["kafka", "bullmq"]))
    b = BookingIn.model_validate(dict(reversed(list(fields(backends=["bullmq", "kafka"]).items()))))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != BookingIn.model_validate(fields(guests=3)).fingerprint()


def test_default_backends_are_all_lanes_in_order():
    assert BookingIn.model_validate(fields()).lanes() == ["bullmq", "streams", "kafka"]
    assert BookingIn.model_validate(fields(backends=["kafka", "streams"])).lanes() == ["streams", "kafka"]


@pytest.mark.parametrize("value", [1893456000, "1893456000", "2030-01-01T00:00:00", "01/02/2030", None])
def test_dates_must_be_iso_strings(value):
    with pytest.raises(ValidationError):
        BookingIn.model_validate(fields(checkIn=value))


def test_backends_named_once():
    with pytest.raises(ValidationError, match="once"):
        BookingIn.model_validate(fields(backends=["kafka", "kafka"]))


def guarded_app():
    app = FastAPI()
    install(app)

    @app.post("/echo")
    async def echo(payload: dict) -> dict:
        return payload

    return app


async def post(**kwargs):
    transport = httpx.ASGITransport(app=guarded_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/echo", **kwargs)


async def test_guard_passes_json_through():
    response = await post(json={"a": 1})
    assert response.status_code == 200 and response.json() == {"a": 1}


async def test_guard_refuses_declared_and_streamed_oversize():
    assert (await post(content=b"{" + b" " * 20_000 + b"}", headers={"content-type": "application/json"})).status_code == 413

    async def chunks():
        for _ in range(20):
            yield b" " * 1024

    response = await post(content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


async def test_guard_refuses_non_json_and_non_utf8():
    response = await post(content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    response = await post(content=b'{"a": "\xff"}', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body"


async def test_validation_errors_name_the_field():
    response = await post(content=b"[1, 2", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"
    assert "malformed JSON" in response.json()["detail"]


class RecordingBackend:
    """Stands in for a lane to count calls; the real lanes are covered by integration tests."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def publish_many(self, bookings):
        self.calls.append(len(bookings))
        await asyncio.sleep(0.02)  # one broker round trip
        if self.fail:
            raise ConnectionError("broker gone")
        return [f"id-{b}" for b in bookings]


async def test_batcher_coalesces_concurrent_requests_and_keeps_order():
    backend = RecordingBackend()
    batcher = LaneBatcher(backend)  # type: ignore[arg-type]
    ids = await asyncio.gather(*(batcher.publish(n) for n in range(50)))  # type: ignore[arg-type]
    assert ids == [f"id-{n}" for n in range(50)]
    assert sum(backend.calls) == 50 and len(backend.calls) <= 2, backend.calls
    assert json.dumps(await batcher.publish(99)) == '"id-99"'  # a lone request goes at once


async def test_batcher_reports_a_failure_to_every_request_of_the_batch():
    batcher = LaneBatcher(RecordingBackend(fail=True))  # type: ignore[arg-type]
    results = await asyncio.gather(*(batcher.publish(n) for n in range(5)), return_exceptions=True)  # type: ignore[arg-type]
    assert all(isinstance(r, ConnectionError) for r in results)
