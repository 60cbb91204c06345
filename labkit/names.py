"""Names on the wire (DESIGN.md contract): outside tools and every lane read these."""

from __future__ import annotations

# BullMQ
QUEUE = "bookings"
BULLMQ_JOB_NAME = "booking"
BULLMQ_DLQ = "bookings-dlq"

# Redis Streams
STREAM = "bookings"
STREAM_DLQ = "bookings:dlq"

# Shared by Streams and Kafka consumers
GROUP = "booking-workers"

# Kafka
TOPIC = "bookings"
TOPIC_DLQ = "bookings.dlq"
RETRY_TOPICS = tuple(f"bookings.retry.{i}" for i in (1, 2, 3))
KAFKA_PARTITIONS = 6
