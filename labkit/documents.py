"""The guest's confirmation: a real PDF (fpdf2) and a real e-mail a learner can open.

Both are rendered from templates made once per process: fpdf2 lays the page out once with
fixed-width placeholder fields, and each booking's values are written over them, padded to
the same width, so every byte offset in the PDF's cross-reference table stays valid. Laying
out a page per booking cost ~10 ms — more than the broker's whole share of a booking. The
e-mail is a fixed MIME skeleton for the same reason; its values are ids the booking model
restricts to [A-Za-z0-9_.:-], dates and numbers, so nothing needs quoting or folding.
"""

from __future__ import annotations

import base64
from functools import cache

from fpdf import FPDF

from labkit.booking import Booking

# Field → width in characters: ids are at most 64 characters (booking.ShortId).
_FIELDS = {
    "Booking": 64, "Guest": 64, "Hotel": 64, "Check-in": 10, "Check-out": 10, "Guests": 2,
    "Amount": 24, "Charge": 40,
}
_BOUNDARY = "labkit-confirmation"
_EMAIL = f"""\
From: bookings@booking-queue-lab.test
To: {{user}}@guests.booking-queue-lab.test
Subject: Your booking {{booking}} at hotel {{hotel}} is confirmed
Message-ID: <{{booking}}@booking-queue-lab.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{_BOUNDARY}"

--{_BOUNDARY}
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 7bit

Hello {{user}},

your stay at hotel {{hotel}} from {{check_in}} to {{check_out}} for {{guests}} guest(s) is confirmed.

--{_BOUNDARY}
Content-Type: application/pdf
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="{{pdf_name}}"

{{pdf}}
--{_BOUNDARY}--
""".replace("\n", "\r\n")


def confirmation_pdf(booking: Booking, charge_id: str) -> bytes:
    values = {
        "Booking": booking.bookingId,
        "Guest": booking.userId,
        "Hotel": booking.hotelId,
        "Check-in": booking.checkIn.isoformat(),
        "Check-out": booking.checkOut.isoformat(),
        "Guests": str(booking.guests),
        "Amount": f"{booking.amount_cents / 100:.2f} EUR",
        "Charge": charge_id,
    }
    pdf = _pdf_template()
    for label, value in values.items():
        width = _FIELDS[label]
        if len(value) > width or not value.isascii() or any(c in value for c in "()\\"):
            raise ValueError(f"{label} {value!r} does not fit the confirmation's template")
        pdf = pdf.replace(_placeholder(label), value.ljust(width).encode())
    return pdf


def confirmation_email(booking: Booking, pdf_name: str, pdf_bytes: bytes) -> bytes:
    return _EMAIL.format(
        user=booking.userId, booking=booking.bookingId, hotel=booking.hotelId,
        check_in=booking.checkIn, check_out=booking.checkOut, guests=booking.guests,
        pdf_name=pdf_name, pdf=base64.encodebytes(pdf_bytes).decode().replace("\n", "\r\n").rstrip(),
    ).encode()


@cache
def _pdf_template() -> bytes:
    pdf = FPDF(format=(148, 210))  # A5 in mm
    pdf.set_compression(False)  # placeholders must stay findable in the page's content
    pdf.set_title("Booking confirmation")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, "Booking confirmed", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=11)
    for label in _FIELDS:
        pdf.cell(30, 8, label)
        pdf.cell(0, 8, _placeholder(label).decode(), new_x="LMARGIN", new_y="NEXT")
    rendered = bytes(pdf.output())
    assert all(rendered.count(_placeholder(label)) == 1 for label in _FIELDS)
    return rendered


def _placeholder(label: str) -> bytes:
    """Exactly the field's width, so a value padded to it keeps every offset."""
    return f"@{list(_FIELDS).index(label)}".ljust(_FIELDS[label], "#").encode()
