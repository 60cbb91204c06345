"""Booking Queue Lab: one hotel-booking workload on BullMQ, Redis Streams and Apache Kafka.

    from labkit import Lab, Settings, Workload

    async with Lab() as lab:
        bookings = Workload(seed=7).bookings(10)
        await lab.publish(bookings)
"""

from labkit.lab import Lab
from labkit.settings import LANES, Settings
from labkit.status import State
from labkit.workload import Workload

__all__ = [  # noqa: RUF022 - grouped by theme, as dramatiq does
    # the lab and its settings
    "Lab",
    "Settings",
    "LANES",
    # the workload and what becomes of it
    "Workload",
    "State",
]
