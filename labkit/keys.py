"""Redis keys of the lab's own state (status, effects, metrics, faults), in one place.

Every key starts with `lab:` so the lab never touches keys it did not create; BullMQ keeps
its own `bull:` prefix.
"""

PREFIX = "lab"
FAULTS_KEY = f"{PREFIX}:faults"
SAVED_FAULTS_KEY = f"{PREFIX}:faults-saved"  # the learner's faults while a lesson sets its own
EVENTS_STREAM = f"{PREFIX}:events"
EVENTS_MAXLEN = 20_000
# How long a finished booking's status, history and effects records are kept (one day).
DEFAULT_RETENTION_S = 86_400


def status(lane: str, booking_id: str) -> str:
    return f"{PREFIX}:{lane}:booking:{booking_id}"


def history(lane: str, booking_id: str) -> str:
    return f"{PREFIX}:{lane}:history:{booking_id}"


def index(lane: str) -> str:
    """Sorted set of the lane's bookings by publish time: recent bookings, counts."""
    return f"{PREFIX}:{lane}:bookings"


def state_counts(lane: str) -> str:
    return f"{PREFIX}:{lane}:states"


def ledger(lane: str) -> str:
    return f"{PREFIX}:{lane}:ledger"


def charges(lane: str) -> str:
    """Hash bookingId → number of charges actually made (a duplicate shows as > 1)."""
    return f"{PREFIX}:{lane}:charges"


def inventory(lane: str) -> str:
    """Hash hotelId → rooms per night (the hotel's capacity, the same every night)."""
    return f"{PREFIX}:{lane}:rooms"


def nights_taken(lane: str, hotel_id: str) -> str:
    """Hash night (YYYY-MM-DD) → rooms taken that night; a night nobody holds has no field."""
    return f"{PREFIX}:{lane}:nights:{hotel_id}"


def reservations(lane: str, hotel_id: str) -> str:
    """Hash bookingId → the nights it holds (comma-separated), so a release gives them back."""
    return f"{PREFIX}:{lane}:reserved:{hotel_id}"


def counters(lane: str) -> str:
    return f"{PREFIX}:{lane}:counters"


def latency(lane: str) -> str:
    return f"{PREFIX}:{lane}:latency"


def workers(lane: str) -> str:
    return f"{PREFIX}:{lane}:workers"


def worker_restarts(lane: str) -> str:
    """Counter: worker processes of the lane that a pool started again after they died."""
    return f"{PREFIX}:{lane}:worker-restarts"


def kafka_deliveries(topic: str, partition: int, offset: int) -> str:
    """Counter: deliveries of one Kafka record not yet committed (Kafka keeps no count)."""
    return f"{PREFIX}:kafka:deliveries:{topic}:{partition}:{offset}"


def redrive_lock(lane: str) -> str:
    """Lock: one dead-letter redrive per lane at a time."""
    return f"{PREFIX}:{lane}:redrive-lock"


# Set of Kafka DLQ letters ("partition:offset") redriven past the redrive group's committed
# offset: a selective redrive takes letters out of order, and offsets only move over a prefix.
KAFKA_REDRIVEN = f"{PREFIX}:kafka:dlq-redriven"


def bullmq_swept(job_id: str) -> str:
    """Marker: the BullMQ sweeper dead-lettered this failed job (expires with the retention)."""
    return f"{PREFIX}:bullmq:swept:{job_id}"


def idempotency(key: str) -> str:
    """The API's record of one Idempotency-Key."""
    return f"{PREFIX}:api:idem:{key}"


# Sorted set of the Streams lane's parked retries: entry id, scored by due time (epoch s).
STREAMS_RETRY_DUE = f"{PREFIX}:streams:retry-due"
