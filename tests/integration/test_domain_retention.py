"""What the lab keeps, and for how long: a finished booking's status and history expire a
retention period after it finished; the ledger and the night counters are bounded too."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from labkit import keys
from labkit.booking import make_booking
from labkit.status import State, StatusStore

pytestmark = pytest.mark.redis
RETENTION_S = 600


@pytest.fixture
def status(lab):
    return StatusStore(lab.redis, retention_s=RETENTION_S)


async def ttls(lab, lane, booking_id):
    return [await lab.redis.ttl(keys.status(lane, booking_id)),
            await lab.redis.ttl(keys.history(lane, booking_id))]


async def test_a_finished_booking_expires_a_retention_period_later(lab, status):
    await status.claim_new("streams", [("bk-kept", "job-kept", time.time())])
    await status.transition("streams", "bk-kept", State.ACTIVE, progress=20)
    assert await ttls(lab, "streams", "bk-kept") == [-1, -1]  # in flight: kept

    await status.transition("streams", "bk-kept", State.REJECTED, attempt=1)
    assert all(0 < ttl <= RETENTION_S for ttl in await ttls(lab, "streams", "bk-kept"))


async def test_a_redrive_keeps_the_booking_again_until_it_finishes(lab, status):
    await status.transition("kafka", "bk-redriven", State.DEAD_LETTERED, attempt=4)
    await status.transition("kafka", "bk-redriven", State.QUEUED, progress=0, redrive=True)
    assert await ttls(lab, "kafka", "bk-redriven") == [-1, -1]


async def test_the_recent_index_forgets_bookings_older_than_the_retention(lab, status):
    old_created = time.time() - 2 * RETENTION_S
    await lab.redis.zadd(keys.index("bullmq"), {"bk-old": old_created})
    await status.transition("bullmq", "bk-new", State.COMPLETED, attempt=1)
    assert await lab.redis.zrange(keys.index("bullmq"), 0, -1) == ["bk-new"]


async def test_the_ledger_and_the_nights_are_kept_a_bounded_time(lab):
    effects = lab.effects["streams"]
    check_in = datetime.now(UTC).date() + timedelta(days=3)
    one = make_booking({"userId": "u1", "hotelId": "hotel-r", "checkIn": check_in,
                        "checkOut": check_in + timedelta(days=2)}, booking_id="bk-bounded")
    await effects.charge(one)
    assert 0 < await lab.redis.ttl(keys.ledger("streams")) <= effects.retention_s
    assert await effects.reserve_stay(one)
    check_out = datetime.combine(one.checkOut, datetime.min.time(), tzinfo=UTC).timestamp()
    expires = await lab.redis.expiretime(keys.nights_taken("streams", "hotel-r"))
    assert expires == int(check_out + effects.retention_s)
