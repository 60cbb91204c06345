"""The guest's confirmation: a real PDF (fpdf2) and a real e-mail a learner can open."""

from __future__ import annotations

from email.message import EmailMessage

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


def confirmation_email(booking: Booking, pdf_name: str, pdf_bytes: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bookings@booking-queue-lab.test"
    msg["To"] = f"{booking.userId}@guests.booking-queue-lab.test"
    msg["Subject"] = f"Your booking {booking.bookingId} at hotel {booking.hotelId} is confirmed"
    msg["Message-ID"] = f"<{booking.bookingId}@booking-queue-lab.test>"
    msg.set_content(
        f"Hello {booking.userId},\n\nyour stay at hotel {booking.hotelId} from {booking.checkIn} "
        f"to {booking.checkOut} for {booking.guests} guest(s) is confirmed.\n"
    )
    msg.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename=pdf_name)
    return bytes(msg)
