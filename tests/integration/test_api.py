"""The HTTP API against real brokers: bookings fan out and finish on every lane, bad input is
refused with a 4xx naming the field and enqueues nothing, Idempotency-Key holds under
concurrency and across API processes, a broker that is down gives a 503 saying which."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from labkit import names
from labkit.api.app import create_app
from labkit.processes import free_port
from labkit.settings import LANES

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


def body(**changes):
    check_in = datetime.now(UTC).date() + timedelta(days=5)
    out = {"userId": "user-1", "hotelId": "hotel-001", "checkIn": check_in.isoformat(),
           "checkOut": (check_in + timedelta(days=2)).isoformat(), "guests": 2}
    return {**out, **changes}


async def open_client(settings):
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lab")
    return client, lifespan


@pytest.fixture
async def client(lab, settings):
    client, lifespan = await open_client(settings)
    yield client
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def kafka_ends(settings):
    """Sum of end offsets of the work topic: grows by one per booking Kafka accepted."""
    consumer = KafkaConsumer(**settings.kafka_config())
    parts = [TopicPartition(names.TOPIC, p) for p in range(settings.kafka_partitions)]

    def ends() -> int:
        return sum(consumer.end_offsets(parts).values())

    yield ends
    consumer.close()


async def enqueued(lab, kafka_ends) -> dict[str, int]:
    """Everything that would show a booking was enqueued, on every technology."""
    metrics = await lab.metrics.snapshot(LANES)
    return {
        **{f"published:{lane}": m.counters["published"] for lane, m in metrics.items()},
        "bullmq:wait": await lab.redis.llen(f"bull:{names.QUEUE}:wait"),
        "streams:xlen": await lab.redis.xlen(names.STREAM) if await lab.redis.exists(names.STREAM) else 0,
        "kafka:end": await asyncio.to_thread(kafka_ends),
    }


async def test_booking_completes_on_every_lane(client, lab):
    response = await client.post("/api/bookings", json=body())
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted["jobs"]) == set(LANES)
    booking_id = accepted["bookingId"]
    pools = [lab.pool(lane) for lane in LANES]
    try:
        for pool in pools:
            pool.__enter__().start(1)
        await lab.wait_for([booking_id], timeout_s=90)
    finally:
        for pool in pools:
            pool.__exit__(None, None, None)
    view = (await client.get(f"/api/bookings/{booking_id}")).json()
    for lane in LANES:
        status = view["lanes"][lane]
        assert status["state"] == "completed", (lane, status)
        assert status["progress"] == 100 and status["attempts"] >= 1
        assert status["history"][0]["state"] == "queued"
        assert status["history"][-1]["state"] == "completed"


async def test_posting_to_chosen_backends_only(client):
    response = await client.post("/api/bookings", json=body(backends=["kafka", "streams"]))
    assert response.status_code == 202
    assert set(response.json()["jobs"]) == {"streams", "kafka"}
    view = (await client.get(f"/api/bookings/{response.json()['bookingId']}")).json()
    assert set(view["lanes"]) == {"streams", "kafka"}


def _past():
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def _far(days):
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


BAD = {
    # name: (request kwargs, status, field named in the body)
    "malformed json": ({"content": b'{"userId": "u1",', "headers": {"content-type": "application/json"}}, 422, "body"),
    "not an object": ({"json": ["userId"]}, 422, "body"),
    "wrong type guests": ({"json": body(guests="two")}, 422, "guests"),
    "wrong type userId": ({"json": body(userId=123)}, 422, "userId"),
    "timestamp as date": ({"json": body(checkIn=1893456000)}, 422, "checkIn"),
    "unknown field": ({"json": body(coupon="FREE")}, 422, "coupon"),
    "missing field": ({"json": {k: v for k, v in body().items() if k != "hotelId"}}, 422, "hotelId"),
    "checkout before checkin": ({"json": body(checkIn=_far(10), checkOut=_far(9))}, 422, "checkOut"),
    "checkout equals checkin": ({"json": body(checkIn=_far(10), checkOut=_far(10))}, 422, "checkOut"),
    "checkin in the past": ({"json": body(checkIn=_past(), checkOut=_far(2))}, 422, "checkIn"),
    "stay too long": ({"json": body(checkIn=_far(1), checkOut=_far(32))}, 422, "checkOut"),
    "guests zero": ({"json": body(guests=0)}, 422, "guests"),
    "guests nine": ({"json": body(guests=9)}, 422, "guests"),
    "bad id chars": ({"json": body(userId="a b;c")}, 422, "userId"),
    "unknown backend": ({"json": body(backends=["rabbitmq"])}, 422, "backends.0"),
    "backend twice": ({"json": body(backends=["kafka", "kafka"])}, 422, "backends"),
    "oversized body": ({"json": body(userId="u" * 20_000)}, 413, None),
    "wrong content type": ({"content": json.dumps(body()), "headers": {"content-type": "text/plain"}}, 415, None),
    "form body": ({"data": {"userId": "u1"}}, 415, None),
    "bad idempotency key": ({"json": body(), "headers": {"Idempotency-Key": "no spaces allowed"}}, 422, "Idempotency-Key"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
async def test_bad_input_is_refused_and_enqueues_nothing(client, lab, kafka_ends, case):
    kwargs, status, field = BAD[case]
    before = await enqueued(lab, kafka_ends)
    response = await client.post("/api/bookings", **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"  # RFC 9457
    problem = response.json()
    assert problem["detail"]
    if field:
        assert field.lower() in [p["field"].lower() for p in problem["errors"]], problem
    assert await enqueued(lab, kafka_ends) == before


async def test_same_key_same_body_replays_without_second_enqueue(client, lab, kafka_ends):
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/api/bookings", json=body(), headers=headers)
    after_first = await enqueued(lab, kafka_ends)
    # the same body with its keys in another order is the same body
    second = await client.post("/api/bookings", json=dict(reversed(list(body().items()))), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await enqueued(lab, kafka_ends) == after_first
    assert await lab.redis.ttl("lab:api:idem:order-42") > 23 * 3600


async def test_same_key_different_body_is_422(client, lab, kafka_ends):
    headers = {"Idempotency-Key": "order-43"}
    assert (await client.post("/api/bookings", json=body(), headers=headers)).status_code == 202
    before = await enqueued(lab, kafka_ends)
    response = await client.post("/api/bookings", json=body(guests=3), headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await enqueued(lab, kafka_ends) == before


async def test_twenty_parallel_posts_with_one_key_make_one_booking(client, lab, kafka_ends):
    before = await enqueued(lab, kafka_ends)
    headers = {"Idempotency-Key": "burst-1"}
    responses = await asyncio.gather(
        *(client.post("/api/bookings", json=body(), headers=headers) for _ in range(20))
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 409}, codes
    accepted = {json.dumps(r.json(), sort_keys=True) for r in responses if r.status_code == 202}
    assert len(accepted) == 1  # the one booking, however many saw it
    after = await enqueued(lab, kafka_ends)
    assert {k: after[k] - before[k] for k in after} == {k: 1 for k in after}


async def test_a_stale_pending_key_resumes_without_publishing_again(client, lab, kafka_ends):
    headers = {"Idempotency-Key": "owner-died"}
    first = await client.post("/api/bookings", json=body(), headers=headers)
    assert first.status_code == 202
    before = await enqueued(lab, kafka_ends)
    # The owner published every lane, then died before recording it: a stale `pending`.
    record = json.loads(await lab.redis.get("lab:api:idem:owner-died"))
    record.update(state="pending", jobs={}, since=record["since"] - 3600)
    await lab.redis.set("lab:api:idem:owner-died", json.dumps(record))

    retry = await client.post("/api/bookings", json=body(), headers=headers)
    assert retry.status_code == 202, retry.text
    assert retry.json() == first.json()  # the same booking and the original job ids
    assert await enqueued(lab, kafka_ends) == before


async def test_kafka_down_is_503_naming_it_and_a_retry_completes_the_fan_out(client, lab, settings, kafka_ends):
    # A real "down" broker: nothing listens on this port.
    down_settings = settings.with_(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    down, lifespan = await open_client(down_settings)
    headers = {"Idempotency-Key": "while-kafka-was-down"}
    try:
        before = await enqueued(lab, kafka_ends)
        response = await down.post("/api/bookings", json=body(), headers=headers)
        assert response.status_code == 503
        problem = response.json()
        assert set(problem["jobs"]) == {"bullmq", "streams"}
        assert set(problem["failed"]) == {"kafka"} and "kafka is down" in problem["failed"]["kafka"]
        assert "kafka" in problem["detail"]
        health = await down.get("/health")
        assert health.status_code == 503
        assert health.json()["brokers"]["kafka"]["up"] is False
        assert health.json()["brokers"]["redis"]["up"] is True
    finally:
        await down.aclose()
        await lifespan.__aexit__(None, None, None)
    after = await enqueued(lab, kafka_ends)
    assert after["kafka:end"] == before["kafka:end"]
    # Kafka is back (the healthy API, another process in real life): the same key publishes
    # only the missing lane, under the same booking id.
    retry = await client.post("/api/bookings", json=body(), headers=headers)
    assert retry.status_code == 202, retry.text
    assert retry.json()["bookingId"] == problem["bookingId"]
    assert {k: v for k, v in retry.json()["jobs"].items() if k != "kafka"} == problem["jobs"]
    final = await enqueued(lab, kafka_ends)
    assert final["kafka:end"] == before["kafka:end"] + 1
    assert final["published:bullmq"] == after["published:bullmq"]


async def test_redis_down_is_503_naming_it(settings):
    down_settings = settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    down, lifespan = await open_client(down_settings)
    try:
        response = await down.post("/api/bookings", json=body())
        assert response.status_code == 503
        assert response.json()["jobs"] == {}
        assert all("redis is down" in why for why in response.json()["failed"].values())
        health = await down.get("/health")
        assert health.status_code == 503 and health.json()["brokers"]["redis"]["up"] is False
    finally:
        await down.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_metrics_are_prometheus_text_with_per_lane_counters(client):
    assert (await client.post("/api/bookings", json=body())).status_code == 202
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for gauge in ("up", "waiting", "in_flight", "lag", "dlq_size", "workers"):
        lanes = {s.labels["lane"] for s in families[f"labkit_lane_{gauge}"].samples}
        assert lanes == set(LANES), (gauge, lanes)
    assert all(s.value == 1 for s in families["labkit_lane_up"].samples)
    published = {s.labels["lane"]: s.value for s in families["labkit_bookings_published"].samples
                 if s.name.endswith("_total")}
    assert published == {lane: 1.0 for lane in LANES}
    assert "labkit_booking_latency_seconds" in families
    for counter in ("completed", "retried", "dead_lettered"):
        lanes = {s.labels["lane"] for s in families[f"labkit_bookings_{counter}"].samples}
        assert lanes == set(LANES)


async def test_health_is_200_when_both_brokers_answer(client, settings):
    response = await client.get("/health")
    assert response.status_code == 200
    host, port = settings.redis_host_port
    assert response.json() == {"status": "ok", "brokers": {
        "redis": {"up": True, "detail": f"PING ok ({host}:{port})"},
        "kafka": {"up": True, "detail": "metadata ok: 1 broker(s)"},  # the test cluster has one
    }}


async def test_queues_report_every_technology(client):
    await client.post("/api/bookings", json=body())
    queues = (await client.get("/api/queues")).json()
    assert list(queues) == list(LANES)
    for stats in queues.values():
        assert stats["error"] is None, stats
        for field in ("waiting", "active", "retrying", "completed", "rejected", "dlq_size", "lag", "workers"):
            assert field in stats
        assert stats["waiting"] == 1  # no worker runs in this test


async def test_dlq_routes(client):
    unknown = await client.get("/api/dlq/rabbitmq")
    assert unknown.status_code == 404
    assert all(lane in unknown.json()["detail"] for lane in LANES)
    assert (await client.post("/api/dlq/rabbitmq/redrive")).status_code == 404
    for lane in LANES:
        listed = await client.get(f"/api/dlq/{lane}", params={"limit": 5})
        assert listed.status_code == 200 and listed.json()["backend"] == lane
    redriven = await client.post("/api/dlq/streams/redrive")
    assert redriven.status_code == 200 and redriven.json() == {"backend": "streams", "redriven": 0}


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site"},
])
async def test_a_redrive_from_another_site_is_refused(client, headers):
    response = await client.post("/api/dlq/streams/redrive", headers=headers)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "refused" in response.json()["detail"]


async def test_a_redrive_from_the_dashboard_or_curl_is_allowed(client):
    dashboard = {"Origin": "http://lab", "Sec-Fetch-Site": "same-origin"}
    behind_a_proxy = {"Origin": "https://hub.example", "Sec-Fetch-Site": "same-origin"}
    for headers in (dashboard, behind_a_proxy, {"Origin": "http://lab"}, {}):
        response = await client.post("/api/dlq/streams/redrive", headers=headers)
        assert response.status_code == 200, response.text


async def test_unknown_booking_is_404(client):
    response = await client.get("/api/bookings/bk-nobody")
    assert response.status_code == 404 and "bk-nobody" in response.json()["detail"]


async def test_openapi_carries_the_real_constraints(client):
    spec = (await client.get("/openapi.json")).json()
    booking = spec["components"]["schemas"]["BookingIn"]
    assert booking["additionalProperties"] is False
    props = booking["properties"]
    assert props["checkIn"]["format"] == props["checkOut"]["format"] == "date"
    assert (props["guests"]["minimum"], props["guests"]["maximum"]) == (1, 8)
    for field in ("userId", "hotelId"):
        assert props[field]["maxLength"] == 64 and props[field]["pattern"]
    post = spec["paths"]["/api/bookings"]["post"]
    assert {"202", "409", "413", "415", "422", "503"} <= set(post["responses"])
    key = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["schema"]["anyOf"][0]["pattern"]
