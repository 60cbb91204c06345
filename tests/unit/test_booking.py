from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from labkit.booking import BookingRequest, Envelope, InvalidJob, make_booking, parse_envelope

TODAY = datetime.now(UTC).date()


def request(**changes):
    fields = {"userId": "u1", "hotelId": "h1", "checkIn": TODAY + timedelta(days=3),
              "checkOut": TODAY + timedelta(days=5), "guests": 2}
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("changes", "field_or_message"),
    [
        ({"checkOut": TODAY + timedelta(days=3)}, "checkOut must be after checkIn"),
        ({"checkIn": TODAY - timedelta(days=1)}, "checkIn must not be in the past"),
        ({"checkOut": TODAY + timedelta(days=40)}, "at most 30 nights"),
        ({"guests": 0}, "guests"),
        ({"guests": 9}, "guests"),
        ({"guests": "2"}, "guests"),
        ({"userId": ""}, "userId"),
        ({"hotelId": "h 1; drop"}, "hotelId"),
        ({"checkIn": "27/11/2026"}, "checkIn"),
        ({"rooms": 2}, "rooms"),
    ],
)
def test_invalid_bookings_name_the_problem(changes, field_or_message):
    with pytest.raises(ValidationError) as err:
        BookingRequest(**request(**changes))
    assert field_or_message in str(err.value)


def test_a_valid_booking_round_trips_through_the_seed_envelope():
    booking = make_booking(request(), booking_id="bk-1")
    envelope = Envelope.wrap(booking)
    decoded = parse_envelope(envelope.to_json())
    assert decoded == envelope
    assert decoded.jobId == "job-bk-1" and decoded.type == "booking"
    assert decoded.timestamp.endswith("Z")
    assert booking.amount_cents == 2 * (9000 + 2500)


@pytest.mark.parametrize("raw", [b"\xff\xfe", "not json", '{"jobId": "x"}', "[]"])
def test_unusable_payloads_raise_invalid_job(raw):
    with pytest.raises(InvalidJob):
        parse_envelope(raw)


def test_a_booking_whose_date_has_passed_is_still_consumed():
    """Accepted yesterday for yesterday, retried or redriven today: not an invalid job."""
    accepted = make_booking(request(), booking_id="bk-late")
    late = accepted.model_copy(update={"checkIn": TODAY - timedelta(days=1), "checkOut": TODAY})
    decoded = parse_envelope(Envelope.wrap(late).to_json())
    assert decoded.data.checkIn == TODAY - timedelta(days=1)


def test_intake_still_refuses_a_check_in_in_the_past():
    with pytest.raises(ValidationError, match="checkIn must not be in the past"):
        make_booking(request(checkIn=TODAY - timedelta(days=1)), booking_id="bk-past")


def test_each_night_of_a_stay_runs_from_check_in_to_the_night_before_check_out():
    stay = make_booking(request(), booking_id="bk-1")
    assert stay.each_night() == [TODAY + timedelta(days=3), TODAY + timedelta(days=4)]
