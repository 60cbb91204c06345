"""Inventory is per night: a booking takes a room on each night of its stay (checkIn <= night
< checkOut), all nights or none, once per booking, and gives them back when compensated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labkit.booking import make_booking

pytestmark = pytest.mark.redis

HOTEL = "hotel-nights"
DAY = datetime.now(UTC).date() + timedelta(days=20)


def stay(n: int, first: int, nights: int, hotel: str = HOTEL):
    check_in = DAY + timedelta(days=first)
    return make_booking({"userId": f"user-{n}", "hotelId": hotel, "checkIn": check_in,
                         "checkOut": check_in + timedelta(days=nights)}, booking_id=f"bk-night-{n}")


@pytest.fixture
async def effects(lab):
    effects = lab.effects["streams"]
    await effects.stock({HOTEL: 1})
    return effects


async def test_stays_that_do_not_overlap_share_a_room_and_an_overlap_is_refused(effects):
    assert await effects.reserve_stay(stay(1, 0, 2))  # nights 0, 1
    assert await effects.reserve_stay(stay(2, 2, 2))  # checks in the day the first checks out
    assert not await effects.reserve_stay(stay(3, 1, 2))  # night 1 is taken
    assert await effects.rooms_left(HOTEL) == 0


async def test_a_stay_takes_all_its_nights_or_none(effects):
    assert await effects.reserve_stay(stay(1, 2, 1))  # night 2 only
    assert not await effects.reserve_stay(stay(2, 0, 4))  # nights 0-3: night 2 is full
    assert await effects.reserve_stay(stay(3, 0, 2))  # so nights 0 and 1 are still free


async def test_a_replay_takes_nothing_more_and_a_release_gives_the_nights_back(lab, effects):
    await effects.stock({HOTEL: 3})
    one = stay(1, 0, 3)
    assert await effects.reserve_stay(one) and await effects.reserve_stay(one)
    assert await effects.rooms_left(HOTEL) == 2
    assert (await lab.metrics.snapshot(["streams"]))["streams"].counters["replays_prevented"] == 1

    assert await effects.release_stay(one)
    assert not await effects.release_stay(one)  # given back once only
    assert await effects.rooms_left(HOTEL) == 3
    assert await effects.reserve_stay(one)  # a redriven booking may take them again


async def test_rooms_left_is_the_fullest_nights_and_none_for_an_unknown_hotel(effects):
    assert await effects.rooms_left("hotel-unknown") is None
    await effects.stock({"hotel-big": 5})
    assert await effects.rooms_left("hotel-big") == 5
    for n, first in enumerate((0, 1, 1)):
        assert await effects.reserve_stay(stay(n, first, 1, hotel="hotel-big"))
    assert await effects.rooms_left("hotel-big") == 3  # night 1 holds two bookings


async def test_stocking_again_gives_a_fresh_inventory(effects):
    assert await effects.reserve_stay(stay(1, 0, 2))
    await effects.stock({HOTEL: 2})
    assert await effects.rooms_left(HOTEL) == 2
    assert await effects.reserve_stay(stay(1, 0, 2))
    assert await effects.rooms_left(HOTEL) == 1
