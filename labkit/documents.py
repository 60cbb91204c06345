"""The confirmation PDF (fpdf2): a real file a learner can open."""

from __future__ import annotations

from fpdf import FPDF

from labkit.booking import Booking


def confirmation_pdf(booking: Booking, charge_id: str) -> bytes:
    pdf = FPDF(format=(148, 210))  # A5 in mm
    pdf.set_title(f"Booking {booking.bookingId}")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, "Booking confirmed", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=11)
    for label, value in (
        ("Booking", booking.bookingId),
        ("Guest", booking.userId),
        ("Hotel", booking.hotelId),
        ("Check-in", booking.checkIn.isoformat()),
        ("Check-out", booking.checkOut.isoformat()),
        ("Guests", str(booking.guests)),
        ("Amount", f"{booking.amount_cents / 100:.2f} EUR"),
        ("Charge", charge_id),
    ):
        pdf.cell(30, 8, label)
        pdf.cell(0, 8, value, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
