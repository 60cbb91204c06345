"""The templated confirmation documents: one render per process, still real files."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import date

import pytest

from labkit.booking import Booking
from labkit.documents import confirmation_email, confirmation_pdf


def _booking(**changes) -> Booking:
    fields = {"bookingId": "b-1", "userId": "guest-7", "hotelId": "hotel-3", "checkIn": date(2030, 5, 1),
                  "checkOut": date(2030, 5, 3), "guests": 2}
    return Booking(**fields | changes)


def test_the_pdf_carries_the_bookings_values_and_a_valid_cross_reference_table():
    pdf = confirmation_pdf(_booking(), "ch_0123456789abcdef")
    for text in (b"(b-1 ", b"(guest-7 ", b"(hotel-3 ", b"(2030-05-01", b"(230.00 EUR", b"(ch_0123456789abcdef"):
        assert text in pdf
    assert b"@" not in pdf  # every placeholder was filled
    xref_at = int(re.search(rb"startxref\n(\d+)", pdf).group(1))
    assert pdf[xref_at:].startswith(b"xref")
    offsets = [int(o) for o in re.findall(rb"(\d{10}) 00000 n", pdf)]
    assert offsets and all(re.match(rb"\d+ 0 obj", pdf[o:]) for o in offsets)


def test_another_booking_gets_its_own_values_in_a_pdf_of_the_same_size():
    one, other = confirmation_pdf(_booking(), "ch_1"), confirmation_pdf(_booking(bookingId="b-" + "9" * 62), "ch_2")
    assert len(one) == len(other) and b"(b-" + b"9" * 62 in other and b"(b-1 " not in other


def test_a_value_that_does_not_fit_is_refused_not_written_over_the_layout():
    with pytest.raises(ValueError, match="Charge"):
        confirmation_pdf(_booking(), "ch_" + "x" * 60)


def test_the_email_parses_with_its_headers_body_and_pdf_attachment():
    booking = _booking()
    pdf = confirmation_pdf(booking, "ch_1")
    msg = email.message_from_bytes(confirmation_email(booking, "b-1.pdf", pdf), policy=email.policy.default)
    assert msg["Subject"] == "Your booking b-1 at hotel hotel-3 is confirmed"
    assert msg["To"] == "guest-7@guests.booking-queue-lab.test" and msg["Message-ID"] == "<b-1@booking-queue-lab.test>"
    assert "from 2030-05-01 to 2030-05-03 for 2 guest(s)" in msg.get_body(("plain",)).get_content()
    [attachment] = msg.iter_attachments()
    assert attachment.get_filename() == "b-1.pdf" and attachment.get_content() == pdf
    assert not msg.defects
